package identity

import (
	"context"
	"net"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc/peer"
)

// RateLimit bounds how often one caller may do something: Burst times at once, then
// PerSecond on average.
type RateLimit struct {
	PerSecond float64
	Burst     int
}

// Default limits, per caller (see callerKey).
var (
	// DefaultCertificateRateLimit: a ztunnel starting on a full node asks at once for one
	// certificate per service account with a pod there (a node runs at most 110 pods by
	// default), then for renewals at half life.
	DefaultCertificateRateLimit = RateLimit{PerSecond: 10, Burst: 200}
	// DefaultXDSStreamRateLimit: a proxy opens one stream, then one after each break or
	// rejected response, with backoff.
	DefaultXDSStreamRateLimit = RateLimit{PerSecond: 1, Burst: 20}
)

func (l RateLimit) orDefault(def RateLimit) RateLimit {
	if l.PerSecond <= 0 || l.Burst <= 0 {
		return def
	}
	return l
}

// limiter keeps one token bucket per caller.
type limiter struct {
	limit RateLimit
	now   func() time.Time

	mu      sync.Mutex
	buckets map[string]*rate.Limiter
	pruned  time.Time
}

func newLimiter(limit RateLimit, now func() time.Time) *limiter {
	return &limiter{limit: limit, now: now, buckets: map[string]*rate.Limiter{}}
}

// allow takes a token from key's bucket; false when it is empty.
func (l *limiter) allow(key string) bool {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pruneLocked(now)
	b, ok := l.buckets[key]
	if !ok {
		b = rate.NewLimiter(rate.Limit(l.limit.PerSecond), l.limit.Burst)
		l.buckets[key] = b
	}
	return b.AllowN(now, 1)
}

// pruneLocked forgets the buckets that have filled up again: a new bucket is the same. It
// runs at most once per refill time, so the map holds the callers of about the last two
// refill times and a caller pays for a sweep rarely.
func (l *limiter) pruneLocked(now time.Time) {
	refill := time.Duration(float64(l.limit.Burst) / l.limit.PerSecond * float64(time.Second))
	if now.Sub(l.pruned) < refill {
		return
	}
	l.pruned = now
	for key, b := range l.buckets {
		if b.TokensAt(now) >= float64(l.limit.Burst) {
			delete(l.buckets, key)
		}
	}
}

// peerHost is the IP address a call comes from ("unknown" when gRPC does not say).
func peerHost(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return "unknown"
	}
	host, _, err := net.SplitHostPort(p.Addr.String())
	if err != nil {
		return p.Addr.String()
	}
	return host
}

package identity

import (
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	type step struct {
		at    time.Duration // since start
		key   string
		allow bool
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"a burst, then refused", []step{{0, "a", true}, {0, "a", true}, {0, "a", true}, {0, "a", false}}},
		{"refills at the rate", []step{{0, "a", true}, {0, "a", true}, {0, "a", true}, {0, "a", false},
			{time.Second, "a", false}, {2 * time.Second, "a", true}, {2 * time.Second, "a", false}}},
		{"callers are limited apart", []step{{0, "a", true}, {0, "a", true}, {0, "a", true}, {0, "a", false}, {0, "b", true}}},
		{"after a quiet minute a caller has its whole burst again", []step{{0, "a", true}, {0, "a", true}, {0, "a", true}, {0, "a", false},
			{time.Minute, "b", true}, {time.Minute, "a", true}, {time.Minute, "a", true}, {time.Minute, "a", true}, {time.Minute, "a", false}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := start
			l := newLimiter(RateLimit{PerSecond: 0.5, Burst: 3}, func() time.Time { return now })
			for i, s := range tc.steps {
				now = start.Add(s.at)
				if got := l.allow(s.key); got != s.allow {
					t.Fatalf("step %d (%s at %v): allow = %v, want %v", i, s.key, s.at, got, s.allow)
				}
			}
		})
	}
}

// TestLimiterForgetsIdleCallers: the buckets of callers that went quiet are dropped, so
// callers from ever new addresses do not grow the map without bound.
func TestLimiterForgetsIdleCallers(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := newLimiter(RateLimit{PerSecond: 1, Burst: 2}, func() time.Time { return now })
	for i := range 1000 {
		now = now.Add(10 * time.Millisecond)
		l.allow(string(rune('a' + i%26)))
		l.allow(time.Duration(i).String()) // a new caller every time
	}
	if n := len(l.buckets); n > 2*2*100+26 { // two refill times (2s) of new callers, plus the 26 regulars
		t.Fatalf("%d buckets after 10s of 100 new callers a second, want those of the last two refill times only", n)
	}
}

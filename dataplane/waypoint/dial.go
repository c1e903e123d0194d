package waypoint

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"

	"github.com/ambientmesh/ambient-operator/dataplane/hbone"
	"github.com/ambientmesh/ambient-operator/dataplane/waypoint/upstream"
	"github.com/ambientmesh/ambient-operator/internal/spiffe"
)

// dialer opens upstream connections: an HBONE stream to the endpoint's pod (its ztunnel's
// 15008, which must present the endpoint's identity) with Forwarded: for=<client IP>, or
// plain TCP to an endpoint outside the mesh. HBONE streams share the pool's mutual TLS
// connections, as ztunnel's do.
type dialer struct {
	self  spiffe.ID
	pool  *hbone.Pool
	plain net.Dialer
}

func (d *dialer) dial(ctx context.Context, addr netip.AddrPort, h *upstream.Host, clientIP netip.Addr) (net.Conn, error) {
	if h == nil || h.Tunnel != upstream.TunnelHBONE {
		return d.plain.DialContext(ctx, "tcp", addr.String())
	}
	header := http.Header{}
	if clientIP.IsValid() {
		header.Set("Forwarded", "for="+forwardedFor(clientIP))
	}
	return d.pool.Dial(ctx, hbone.DialRequest{Source: d.self, Peer: h.PeerID, Target: addr, Header: header})
}

// forwardedFor formats a node for Forwarded (RFC 7239 §6: IPv6 quoted and bracketed).
func forwardedFor(ip netip.Addr) string {
	if ip.Is6() && !ip.Is4In6() {
		return `"[` + ip.String() + `]"`
	}
	return ip.Unmap().String()
}

// transportKey selects the HTTP connection pool: upstream HTTP connections are reused
// only for the same client (the Forwarded header of their HBONE stream names it, and the
// destination's ztunnel applies its policy to that address), the same peer identity and
// the same protocol. Within a pool, connections are kept by endpoint address.
type transportKey struct {
	clientIP netip.Addr
	tunnel   upstream.Tunnel
	peer     spiffe.ID
	h2       bool
}

// pooledTransport is one pool's clients: rt (http.Transport, or x/net/http2's for h2c)
// carries any request; h1, for HTTP/1.1 over HBONE, carries the common ones with less
// work (see h1Client).
type pooledTransport struct {
	rt       http.RoundTripper
	h1       *h1Client
	close    func()
	lastUsed time.Time
}

// transports holds the HTTP connection pools by key and drops the ones unused for a while
// (a waypoint serves many clients; each has its own pools).
type transports struct {
	dialer *dialer
	idle   time.Duration
	// transportOnly sends every request through http.Transport (benchmarks compare).
	transportOnly atomic.Bool
	mu            sync.Mutex
	m             map[transportKey]*pooledTransport
}

func (t *transports) get(k transportKey) *pooledTransport {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.m[k]
	if p == nil {
		p = t.newTransport(k)
		t.m[k] = p
	}
	p.lastUsed = time.Now()
	return p
}

// sweep closes pools idle for longer than t.idle, and the h1 connections idle that long
// in the others (http.Transport closes its own).
func (t *transports) sweep(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, p := range t.m {
		switch {
		case now.Sub(p.lastUsed) > t.idle:
			p.close()
			delete(t.m, k)
		case p.h1 != nil:
			p.h1.closeIdle(now.Add(-t.idle))
		}
	}
}

func (t *transports) closeAll() {
	t.sweep(time.Now().Add(365 * 24 * time.Hour))
}

func (t *transports) newTransport(k transportKey) *pooledTransport {
	host := &upstream.Host{Tunnel: k.tunnel, PeerID: k.peer}
	dial := func(ctx context.Context, ap netip.AddrPort) (net.Conn, error) {
		slot, err := connectionSlot(ctx)
		if err != nil {
			return nil, err
		}
		c, err := t.dialer.dial(ctx, ap, host, k.clientIP)
		if err != nil {
			if slot != nil {
				slot.Release()
			}
			return nil, &connectError{err: err}
		}
		if slot == nil {
			return c, nil
		}
		return &countedConn{Conn: c, slot: slot}, nil
	}
	dialAddr := func(ctx context.Context, addr string) (net.Conn, error) {
		ap, err := netip.ParseAddrPort(addr)
		if err != nil {
			return nil, err
		}
		return dial(ctx, ap)
	}
	if k.h2 {
		return newH2CTransport(dialAddr)
	}
	const maxIdlePerHost = 64
	tr := &http.Transport{
		DialContext:         func(ctx context.Context, _, addr string) (net.Conn, error) { return dialAddr(ctx, addr) },
		MaxIdleConnsPerHost: maxIdlePerHost,
		IdleConnTimeout:     t.idle,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	p := &pooledTransport{rt: tr, close: tr.CloseIdleConnections}
	if k.tunnel == upstream.TunnelHBONE {
		p.h1 = newH1Client(dial, maxIdlePerHost, t.idle)
		p.close = func() {
			tr.CloseIdleConnections()
			p.h1.close()
		}
	}
	return p
}

// newH2CTransport is the pool's client for h2c (prior knowledge) upstreams. It stays
// x/net's http2.Transport: http.Transport, its replacement, opens a connection for each
// request that comes while the first one to the host is being dialed, where this dials
// once and shares it. Each upstream connection is an HBONE stream of its own and counts
// against the cluster's max_connections.
//
//nolint:staticcheck // SA1019: http.Transport does not share one h2c dial among concurrent requests (see above).
func newH2CTransport(dial func(ctx context.Context, addr string) (net.Conn, error)) *pooledTransport {
	tr := &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, _, addr string, _ *tls.Config) (net.Conn, error) {
			return dial(ctx, addr)
		},
		ReadIdleTimeout: 30 * time.Second,
	}
	return &pooledTransport{rt: tr, close: tr.CloseIdleConnections}
}

// connectError marks a failure to open the upstream connection (Envoy's "UF"): the
// request never reached the endpoint, so it is always safe to retry.
type connectError struct{ err error }

func (e *connectError) Error() string { return "upstream connect error: " + e.err.Error() }
func (e *connectError) Unwrap() error { return e.err }

// connectionSlot waits for room under the request's cluster's max_connections before
// an upstream connection is opened for it (see upstream.Cluster.WaitConnection).
// Mirrored requests are not counted: nil.
func connectionSlot(ctx context.Context) (*upstream.ConnSlot, error) {
	x := exchangeFrom(ctx)
	if x == nil || x.cluster == nil {
		return nil, nil
	}
	return x.cluster.WaitConnection(ctx)
}

// countedConn is an upstream connection that holds a slot of its cluster's
// max_connections until it closes.
type countedConn struct {
	net.Conn
	slot *upstream.ConnSlot
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.slot.Release()
	return err
}

// CloseWrite keeps half-close working through the wrapper.
func (c *countedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

package waypoint

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/netip"
	"sync"
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
// the same protocol. Within a pool, http.Transport keys connections by endpoint address.
type transportKey struct {
	clientIP netip.Addr
	tunnel   upstream.Tunnel
	peer     spiffe.ID
	h2       bool
}

type pooledTransport struct {
	rt       http.RoundTripper
	idle     func()
	lastUsed time.Time
}

// transports holds the HTTP connection pools by key and drops the ones unused for a while
// (a waypoint serves many clients; each has its own pools).
type transports struct {
	dialer *dialer
	idle   time.Duration
	// countConn admits one upstream connection of the request's cluster (max_connections);
	// the returned done is called when the connection closes.
	mu sync.Mutex
	m  map[transportKey]*pooledTransport
}

func (t *transports) get(k transportKey) http.RoundTripper {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	p := t.m[k]
	if p == nil {
		p = t.newTransport(k)
		t.m[k] = p
	}
	p.lastUsed = now
	return p.rt
}

// sweep closes pools idle for longer than t.idle.
func (t *transports) sweep(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, p := range t.m {
		if now.Sub(p.lastUsed) > t.idle {
			p.idle()
			delete(t.m, k)
		}
	}
}

func (t *transports) closeAll() {
	t.sweep(time.Now().Add(365 * 24 * time.Hour))
}

func (t *transports) newTransport(k transportKey) *pooledTransport {
	host := &upstream.Host{Tunnel: k.tunnel, PeerID: k.peer}
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		ap, err := netip.ParseAddrPort(addr)
		if err != nil {
			return nil, err
		}
		c, err := t.dialer.dial(ctx, ap, host, k.clientIP)
		if err != nil {
			return nil, &connectError{err: err}
		}
		return trackConn(ctx, c), nil
	}
	if k.h2 {
		tr := &http2.Transport{
			AllowHTTP: true,
			DialTLSContext: func(ctx context.Context, _, addr string, _ *tls.Config) (net.Conn, error) {
				return dial(ctx, addr)
			},
			ReadIdleTimeout: 30 * time.Second,
		}
		return &pooledTransport{rt: tr, idle: tr.CloseIdleConnections}
	}
	tr := &http.Transport{
		DialContext:         func(ctx context.Context, _, addr string) (net.Conn, error) { return dial(ctx, addr) },
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     t.idle,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	return &pooledTransport{rt: tr, idle: tr.CloseIdleConnections}
}

// connectError marks a failure to open the upstream connection (Envoy's "UF"): the
// request never reached the endpoint, so it is always safe to retry.
type connectError struct{ err error }

func (e *connectError) Error() string { return "upstream connect error: " + e.err.Error() }
func (e *connectError) Unwrap() error { return e.err }

// connDone is put in a request's context by the router so that the connection opened
// for it releases the cluster's max_connections slot when it closes.
type connAdmitKey struct{}

func trackConn(ctx context.Context, c net.Conn) net.Conn {
	admit, _ := ctx.Value(connAdmitKey{}).(func() (func(), error))
	if admit == nil {
		return c
	}
	done, err := admit()
	if err != nil {
		// Over max_connections: the request still proceeds on this connection (Envoy
		// counts the overflow and goes on too); the counter records it.
		return c
	}
	return &countedConn{Conn: c, done: done}
}

type countedConn struct {
	net.Conn
	once sync.Once
	done func()
}

func (c *countedConn) Close() error {
	c.once.Do(c.done)
	return c.Conn.Close()
}

// CloseWrite keeps half-close working through the wrapper.
func (c *countedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

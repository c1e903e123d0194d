package waypoint

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/ambientmesh/ambient-operator/dataplane/hbone"
	"github.com/ambientmesh/ambient-operator/dataplane/waypoint/rbac"
	"github.com/ambientmesh/ambient-operator/dataplane/waypoint/telemetry"
	"github.com/ambientmesh/ambient-operator/dataplane/waypoint/upstream"
	"github.com/ambientmesh/ambient-operator/internal/spiffe"
)

// downstream is what every request of one inner connection shares: who sent it (the
// verified HBONE peer and the client's address) and where it was going (the CONNECT
// target, which chose the listener).
type downstream struct {
	peer     spiffe.ID
	clientIP netip.Addr // the client workload's address (its ztunnel dials from the pod's IP)
	direct   netip.Addr // the HBONE connection's source
	target   netip.AddrPort
	listener *listener
	// principal and clientAddress are peer and clientIP as text, formatted once for
	// every request's RBAC attributes and access log line.
	principal, clientAddress string
}

type downstreamKey struct{}

func downstreamFrom(ctx context.Context) *downstream {
	d, _ := ctx.Value(downstreamKey{}).(*downstream)
	return d
}

// ServeHBONE handles one CONNECT: the target picks the listener; HTTP listeners serve
// HTTP/1.1 or h2c (told apart by net/http) on the stream, TCP listeners relay it after L4 RBAC.
func (w *Waypoint) ServeHBONE(ctx context.Context, req *hbone.Request) error {
	snap := w.store.snapshot()
	l := snap.listenerFor(req.Target)
	if l == nil {
		return hbone.Reject(http.StatusServiceUnavailable, "no listener for %s", req.Target)
	}
	d := &downstream{peer: req.Peer, target: req.Target, listener: l}
	if ap, ok := addrPortOf(req.RemoteAddr); ok {
		d.direct = ap.Addr().Unmap()
		d.clientIP = d.direct
	}
	d.principal, d.clientAddress = req.Peer.String(), d.clientIP.String()
	if l.tcp != nil {
		return w.serveTCP(ctx, req, d, l.tcp)
	}
	st, err := req.Accept()
	if err != nil {
		return err
	}
	w.serveHTTPConn(ctx, st, d)
	return nil
}

// serveHTTPConn serves HTTP (HTTP/1.1 or h2c) on one inner connection until it ends.
// The connection goes to the server only once its first byte is in: the server's
// ReadHeaderTimeout bounds a request being sent, not a connection waiting for its first.
func (w *Waypoint) serveHTTPConn(ctx context.Context, c net.Conn, d *downstream) {
	br := bufio.NewReaderSize(c, 4096)
	pc := &peekedConn{Conn: c, r: br, done: make(chan struct{}), d: d}
	if _, err := br.Peek(1); err != nil {
		c.Close()
		return
	}
	if !w.httpConns.offer(pc) {
		pc.Close()
		return
	}
	select {
	case <-pc.done:
	case <-ctx.Done():
		pc.Close()
	}
}

// peekedConn is an inner connection whose first byte was peeked at; done is closed when
// it is closed, which ends the HBONE stream.
type peekedConn struct {
	net.Conn
	r    *bufio.Reader
	d    *downstream
	once sync.Once
	done chan struct{}
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// Close ends the connection as closing a TCP socket would: the client reads everything
// written so far, then EOF (END_STREAM). Resetting the HBONE stream instead could
// overtake the last response (net/http closes right after writing the answer to a
// "Connection: close" request, or while draining); the stream itself ends when
// ServeHBONE returns.
func (c *peekedConn) Close() error {
	var err error
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		err = cw.CloseWrite()
	} else {
		err = c.Conn.Close()
	}
	c.once.Do(func() { close(c.done) })
	return err
}

// httpListener hands the waypoint's HTTP connections to one http.Server: each inner
// connection is "accepted" once, and the server's ConnContext finds its downstream.
type httpListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newHTTPListener() *httpListener {
	return &httpListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *httpListener) offer(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.closed:
		return false
	}
}

func (l *httpListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *httpListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *httpListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4zero, Port: 15008} }

// serveTCP relays a TCP listener's stream to an endpoint of its cluster, after the
// network RBAC filters allowed the connection.
func (w *Waypoint) serveTCP(ctx context.Context, req *hbone.Request, d *downstream, chain *tcpChain) error {
	start := time.Now()
	attrs := &rbac.Attributes{Principal: d.principal, RemoteIP: d.clientIP, DirectRemoteIP: d.direct,
		DestinationIP: d.target.Addr(), DestinationPort: d.target.Port()}
	dec := rbac.EvaluateChain(attrs, chain.rbac...)
	if !dec.Allowed {
		w.metrics.RBACDenied(d.listener.name)
		w.accessLog.Log(&telemetry.Entry{Protocol: "tcp", ResponseCode: http.StatusForbidden, SourceAddress: d.clientAddress,
			SourcePrincipal: d.principal, DestinationService: d.listener.name, RBACPolicy: dec.Policy, Duration: time.Since(start)})
		return hbone.Reject(http.StatusForbidden, "RBAC: access denied")
	}
	if len(chain.rbac) > 0 {
		w.metrics.RBACAllowed(d.listener.name)
	}
	c := w.clusters.Cluster(chain.cluster)
	if c == nil {
		return hbone.Reject(http.StatusServiceUnavailable, "cluster %s not found", chain.cluster)
	}
	done, err := c.StartConnection()
	if err != nil {
		return hbone.Reject(http.StatusServiceUnavailable, "%v", err)
	}
	defer done()
	host, err := c.Pick()
	if err != nil {
		return hbone.Reject(http.StatusServiceUnavailable, "%v", err)
	}
	host.Begin()
	dctx, cancel := context.WithTimeout(ctx, c.ConnectTimeout())
	up, err := w.dialer.dial(dctx, host.Addr, host, d.clientIP)
	cancel()
	if err != nil {
		host.End(upstream.Outcome{ConnectFailure: true})
		return hbone.Reject(http.StatusServiceUnavailable, "connect %s: %v", host.Addr, err)
	}
	st, err := req.Accept()
	if err != nil {
		host.End(upstream.Outcome{Reset: true})
		up.Close()
		return err
	}
	labels := w.labels(d, host, "tcp")
	w.metrics.TCPOpened(labels)
	var stats hbone.JoinStats
	err = hbone.Join(st, up, &stats)
	host.End(upstream.Outcome{Reset: err != nil && !errors.Is(err, net.ErrClosed)})
	w.metrics.TCPClosed(labels, stats.BToA.Load(), stats.AToB.Load())
	w.accessLog.Log(&telemetry.Entry{Protocol: "tcp", SourceAddress: d.clientAddress, SourcePrincipal: d.principal,
		DestinationService: d.listener.name, UpstreamCluster: chain.cluster, UpstreamHost: host.Addr.String(),
		BytesReceived: stats.AToB.Load(), BytesSent: stats.BToA.Load(), Duration: time.Since(start)})
	return nil
}

func addrPortOf(a net.Addr) (netip.AddrPort, bool) {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort(), true
	}
	ap, err := netip.ParseAddrPort(a.String())
	return ap, err == nil
}

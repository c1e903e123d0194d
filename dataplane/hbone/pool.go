package hbone

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/ambientmesh/ambient-operator/internal/spiffe"
	"github.com/ambientmesh/ambient-operator/internal/workers"
)

// DialFunc opens the TCP connection to an HBONE endpoint. The ztunnel passes
// one that dials from inside a pod's network namespace with SO_MARK 0x539.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// PoolConfig configures a Pool. Certs and Roots are required.
type PoolConfig struct {
	Certs CertSource
	Roots RootsSource
	// Dial opens TCP connections unless a DialRequest brings its own.
	// Default: a net.Dialer with a 10s timeout.
	Dial DialFunc
	// IdleTimeout closes a connection that has had no stream for this long.
	// Default 5 minutes; negative disables.
	IdleTimeout time.Duration
	// ConnSettings: handshake timeout, keepalives, frame size and the receive
	// windows (of the download direction), the same as the Server's.
	ConnSettings
}

// DialRequest describes one tunneled stream.
type DialRequest struct {
	// Source is the local identity: its certificate is presented.
	Source spiffe.ID
	// Peer is the identity the HBONE endpoint must prove (the destination
	// workload's, or its waypoint's).
	Peer spiffe.ID
	// Target is the original destination, sent as :authority.
	Target netip.AddrPort
	// Via is the HBONE endpoint to connect to, normally Target's IP and
	// port 15008, or a waypoint's. Defaults to Target.Addr():15008.
	Via netip.AddrPort
	// Header holds extra request headers (Forwarded, baggage, traceparent).
	Header http.Header
	// Dial, if set, opens this stream's TCP connection instead of the pool's
	// DialFunc. Connections are shared by requests with the same pool key
	// (Source, Peer, Via, SourceAddr): set SourceAddr to keep connections
	// made by different dialers (network namespaces) apart.
	Dial DialFunc
	// SourceAddr is part of the pool key; the ztunnel sets it to the pod IP
	// whose namespace Dial dials from.
	SourceAddr netip.Addr
	// EarlyData are the stream's first bytes, when the caller already has
	// them (the ztunnel passes what the app sent before the tunnel was up).
	// They follow the CONNECT HEADERS at once as request DATA instead of
	// waiting a round trip for the 200: HTTP/2 allows request data before
	// the response, and the server hands them to its upstream only once it
	// accepted the stream. A refused stream discards them; a dial retried on
	// another connection sends them again. Dial does not modify them.
	EarlyData []byte
	// EarlyFrom, if set, is where the stream's next bytes come from (the
	// ztunnel passes the app's connection). While Dial waits for the
	// answer it forwards what arrives there, up to MaxEarlyForward bytes, so
	// an app that speaks first does not wait a round trip; before returning
	// it stops reading (interrupting the read with a past deadline, then
	// clearing the deadline), so the caller copies the rest. Forwarded bytes
	// are sent again if the dial is retried; Conn.EarlyBytes counts them.
	EarlyFrom net.Conn
}

// MaxEarlyForward bounds what Dial forwards from DialRequest.EarlyFrom before
// the answer: what it must keep to send again if the stream is retried.
const MaxEarlyForward = 64 << 10

// HBONEPort is the port on which every mesh workload accepts HBONE.
const HBONEPort = 15008

type poolKey struct {
	source, peer spiffe.ID
	via          netip.AddrPort
	sourceAddr   netip.Addr
}

// poolConn is one pooled HTTP/2 connection.
type poolConn struct {
	key       poolKey
	sess      *session
	dead      atomic.Bool // the session ended
	localAddr net.Addr
	tlsState  tls.ConnectionState
	created   time.Time
}

// dialCall is a connection being established for a key; concurrent requests
// for the key wait for it instead of dialing their own.
type dialCall struct{ done chan struct{} }

// Pool dials HBONE streams over shared HTTP/2 connections, keyed by
// (source identity, peer identity, HBONE endpoint, source address). A
// connection takes new streams while the server's MaxConcurrentStreams allows;
// when all are full another one is opened. It is safe for concurrent use.
type Pool struct {
	cfg PoolConfig

	mu      sync.Mutex
	conns   map[poolKey][]*poolConn
	dialing map[poolKey]*dialCall
	closed  bool
}

// NewPool returns a Pool.
func NewPool(cfg PoolConfig) (*Pool, error) {
	if cfg.Certs == nil || cfg.Roots == nil {
		return nil, errors.New("hbone: PoolConfig: Certs and Roots are required")
	}
	if cfg.Dial == nil {
		d := &net.Dialer{Timeout: 10 * time.Second}
		cfg.Dial = d.DialContext
	}
	cfg.IdleTimeout = cmp.Or(cfg.IdleTimeout, 5*time.Minute)
	cfg.ConnSettings = cfg.ConnSettings.withDefaults()
	return &Pool{cfg: cfg, conns: map[poolKey][]*poolConn{}, dialing: map[poolKey]*dialCall{}}, nil
}

// Dial opens a tunneled stream to d.Target through d.Via and returns once the
// server answered 200 (its upstream connection is up). A refusal is a
// *StatusError; a peer with the wrong identity an *IdentityMismatchError in
// the chain. ctx bounds only the dial, not the stream's life. A stream the
// server did not process (REFUSED_STREAM, or GOAWAY) is sent once more.
func (p *Pool) Dial(ctx context.Context, d DialRequest) (*Conn, error) {
	if err := p.normalize(&d); err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		pc, err := p.reserve(ctx, &d)
		if err != nil {
			return nil, err
		}
		c, forwarded, err := p.openStream(ctx, pc, &d)
		if attempt == 0 && refusedUnprocessed(err) {
			// The bytes forwarded from EarlyFrom are early data now.
			d.EarlyData = append(d.EarlyData[:len(d.EarlyData):len(d.EarlyData)], forwarded...)
			continue
		}
		return c, err
	}
}

// refusedUnprocessed says the server did not process the stream (RFC 9113
// §8.7): it is safe to send it again.
func refusedUnprocessed(err error) bool {
	var se http2.StreamError
	return errors.Is(err, errSessionGoingAway) || errors.As(err, &se) && se.Code == http2.ErrCodeRefusedStream
}

func (p *Pool) normalize(d *DialRequest) error {
	if d.Source.IsZero() || d.Peer.IsZero() {
		return errors.New("hbone: DialRequest: Source and Peer identities are required")
	}
	if !d.Target.IsValid() || d.Target.Port() == 0 {
		return fmt.Errorf("hbone: DialRequest: invalid Target %q", d.Target)
	}
	if !d.Via.IsValid() {
		d.Via = netip.AddrPortFrom(d.Target.Addr(), HBONEPort)
	}
	return nil
}

// reserve returns a connection with a stream reserved for this request,
// reusing one with room or establishing a new one. Until a new connection
// has the server's SETTINGS (and so its stream limit), only the request that
// created it uses it; the others wait.
func (p *Pool) reserve(ctx context.Context, d *DialRequest) (*poolConn, error) {
	key := poolKey{source: d.Source, peer: d.Peer, via: d.Via, sourceAddr: d.SourceAddr}
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, errors.New("hbone: pool is closed")
		}
		var wait chan struct{}
		for _, pc := range p.liveLocked(key) {
			if !isClosed(pc.sess.settled) {
				wait = pc.sess.settled
				continue
			}
			if pc.sess.reserve() {
				p.mu.Unlock()
				return pc, nil
			}
		}
		if call := p.dialing[key]; call != nil {
			wait = call.done
		}
		if wait != nil {
			p.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, fmt.Errorf("hbone: dial %s via %s: %w", d.Target, d.Via, context.Cause(ctx))
			}
		}
		call := &dialCall{done: make(chan struct{})}
		p.dialing[key] = call
		p.mu.Unlock()

		pc, err := p.connect(ctx, key, d)

		p.mu.Lock()
		delete(p.dialing, key)
		if err == nil {
			if p.closed {
				pc.sess.close(errors.New("hbone: pool is closed"))
				err = errors.New("hbone: pool is closed")
			} else {
				pc.sess.reserve() // a fresh connection always has room for one
				p.pruneLocked()
				p.conns[key] = append(p.conns[key], pc)
			}
		}
		p.mu.Unlock()
		close(call.done)
		if err != nil {
			return nil, err
		}
		return pc, nil
	}
}

// liveLocked drops the connections whose session has ended.
func (p *Pool) liveLocked(key poolKey) []*poolConn {
	conns := p.conns[key]
	live := conns[:0]
	for _, pc := range conns {
		if !pc.dead.Load() {
			live = append(live, pc)
		}
	}
	clear(conns[len(live):])
	if len(live) == 0 {
		delete(p.conns, key)
		return nil
	}
	p.conns[key] = live
	return live
}

func (p *Pool) pruneLocked() {
	for key := range p.conns {
		p.liveLocked(key)
	}
}

// connect establishes TCP + TLS + HTTP/2 to d.Via.
func (p *Pool) connect(ctx context.Context, key poolKey, d *DialRequest) (*poolConn, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.HandshakeTimeout)
	defer cancel()
	dial := d.Dial
	if dial == nil {
		dial = p.cfg.Dial
	}
	raw, err := dial(ctx, "tcp", d.Via.String())
	if err != nil {
		return nil, fmt.Errorf("hbone: connect to %s: %w", d.Via, err)
	}
	cr := newCoalescingConn(raw)
	tc := tls.Client(cr, ClientTLSConfig(d.Source, d.Peer, p.cfg.Certs, p.cfg.Roots))
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("hbone: TLS handshake with %s (want %s): %w", d.Via, d.Peer, err)
	}
	pc := &poolConn{key: key, localAddr: raw.LocalAddr(), tlsState: tc.ConnectionState(), created: time.Now()}
	pc.sess = newSession(tc, cr, sessionConfig{
		maxFrame: p.cfg.MaxReadFrameSize, streamWin: p.cfg.StreamWindow, connWin: p.cfg.ConnWindow,
		idleTimeout:  max(p.cfg.IdleTimeout, 0),
		pingInterval: p.cfg.PingInterval, pingTimeout: p.cfg.PingTimeout,
		onClose: func(error) { pc.dead.Store(true) },
	})
	if err := pc.sess.start(); err != nil {
		pc.sess.close(err)
		return nil, fmt.Errorf("hbone: HTTP/2 with %s: %w", d.Via, err)
	}
	return pc, nil
}

// openStream sends the CONNECT on pc (which holds a reservation for it) and
// waits for the answer, forwarding from d.EarlyFrom meanwhile; forwarded is
// what it forwarded.
func (p *Pool) openStream(ctx context.Context, pc *poolConn, d *DialRequest) (c *Conn, forwarded []byte, err error) {
	fields := []hpack.HeaderField{
		{Name: ":method", Value: http.MethodConnect},
		{Name: ":authority", Value: d.Target.String()},
	}
	for name, values := range d.Header {
		for _, v := range values {
			fields = append(fields, hpack.HeaderField{Name: strings.ToLower(name), Value: v})
		}
	}
	st, err := pc.sess.openStream(fields, d.EarlyData)
	if err != nil {
		return nil, nil, fmt.Errorf("hbone: CONNECT %s via %s: %w", d.Target, d.Via, err)
	}
	c = &Conn{st: st, target: d.Target, via: d.Via, peer: d.Peer, pc: pc}
	var fw *forwarder
	if d.EarlyFrom != nil {
		fw = startForwarder(d.EarlyFrom, st)
	}
	select {
	case <-st.answered:
	case <-ctx.Done():
	}
	var fwErr error
	if fw != nil {
		forwarded, fwErr = fw.stop()
	}
	c.early = len(d.EarlyData) + len(forwarded)
	pc.sess.mu.Lock()
	status, serr := st.status, st.err
	pc.sess.mu.Unlock()
	switch {
	case ctx.Err() != nil && status == 0:
		st.Close()
		return nil, forwarded, fmt.Errorf("hbone: dial %s via %s: %w", d.Target, d.Via, context.Cause(ctx))
	case status == 0:
		st.Close()
		return nil, forwarded, fmt.Errorf("hbone: CONNECT %s via %s: %w", d.Target, d.Via, serr)
	case status != http.StatusOK:
		reason, _ := io.ReadAll(io.LimitReader(c, maxReasonLen))
		st.Close()
		return nil, forwarded, fmt.Errorf("hbone: CONNECT %s via %s: %w", d.Target, d.Via,
			&StatusError{Code: status, Reason: string(reason)})
	case fwErr != nil:
		st.Close()
		return nil, forwarded, fmt.Errorf("hbone: reading the stream's first bytes: %w", fwErr)
	}
	return c, forwarded, nil
}

// forwarder copies from a source to a stream that waits for its answer.
type forwarder struct {
	src       net.Conn
	done      chan struct{}
	forwarded []byte
	err       error // a read error other than the stop deadline
}

func startForwarder(src net.Conn, st *h2stream) *forwarder {
	f := &forwarder{src: src, done: make(chan struct{})}
	workers.Go(func() {
		defer close(f.done)
		bp := smallBufs.Get().(*[]byte)
		defer smallBufs.Put(bp)
		buf := *bp
		for len(f.forwarded) < MaxEarlyForward {
			n, err := src.Read(buf[:min(len(buf), MaxEarlyForward-len(f.forwarded))])
			if n > 0 {
				f.forwarded = append(f.forwarded, buf[:n]...)
				if _, werr := st.Write(buf[:n]); werr != nil {
					return // the stream failed: the answer says why
				}
			}
			if err != nil {
				if err != io.EOF && !errors.Is(err, os.ErrDeadlineExceeded) {
					f.err = err
				}
				return // at EOF the caller's own read sees EOF again
			}
		}
	})
	return f
}

// stop interrupts the forwarder's read, waits for it and clears the deadline.
func (f *forwarder) stop() ([]byte, error) {
	_ = f.src.SetReadDeadline(time.Unix(1, 0))
	<-f.done
	_ = f.src.SetReadDeadline(time.Time{})
	return f.forwarded, f.err
}

// PoolStats is a snapshot of a Pool.
type PoolStats struct {
	Conns   []ConnStats
	Streams int // total active streams
}

// ConnStats describes one pooled connection.
type ConnStats struct {
	Source, Peer spiffe.ID
	Via          netip.AddrPort
	SourceAddr   netip.Addr
	LocalAddr    string
	Streams      int    // active streams
	MaxStreams   uint32 // the server's limit (0 until known)
	Created      time.Time
}

// Stats returns the live connections and their stream counts.
func (p *Pool) Stats() PoolStats {
	p.mu.Lock()
	p.pruneLocked()
	var all []*poolConn
	for _, conns := range p.conns {
		all = append(all, conns...)
	}
	p.mu.Unlock()
	var s PoolStats
	for _, pc := range all {
		active, limit := pc.sess.streamCounts()
		s.Conns = append(s.Conns, ConnStats{
			Source: pc.key.source, Peer: pc.key.peer, Via: pc.key.via, SourceAddr: pc.key.sourceAddr,
			LocalAddr: pc.localAddr.String(), Streams: active, MaxStreams: limit, Created: pc.created,
		})
		s.Streams += active
	}
	return s
}

// Close closes every pooled connection (resetting their streams) and makes
// later Dials fail.
func (p *Pool) Close() error {
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.conns = map[poolKey][]*poolConn{}
	p.mu.Unlock()
	for _, list := range conns {
		for _, pc := range list {
			pc.sess.close(errors.New("hbone: pool closed"))
		}
	}
	return nil
}

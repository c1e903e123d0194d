package hbone

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"

	"github.com/ambientmesh/ambient-operator/internal/spiffe"
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
	// PingInterval sends an HTTP/2 PING when nothing was received for this
	// long, and PingTimeout closes the connection if the PING is not answered.
	// Defaults 30s and 15s; a negative PingInterval disables keepalives.
	PingInterval time.Duration
	PingTimeout  time.Duration
	// HandshakeTimeout bounds TCP connect + TLS handshake (default 10s) on
	// top of the caller's context.
	HandshakeTimeout time.Duration
	// MaxReadFrameSize is the largest DATA frame the pool accepts from
	// servers (default 1 MiB: fewer frames per byte on bulk transfers).
	MaxReadFrameSize uint32
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
}

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
	cc        *http2.ClientConn
	conn      *batchedTLSConn
	dead      atomic.Bool // the transport closed the connection
	localAddr net.Addr
	tlsState  tls.ConnectionState
	created   time.Time
	// settled is closed once the server's SETTINGS (and so its stream
	// limit) are known; before that only the creating request uses cc.
	settled   chan struct{}
	settleErr error // set before settled is closed
}

func (pc *poolConn) isSettled() bool { return isClosed(pc.settled) }

// dialCall is a connection being established for a key; concurrent requests
// for the key wait for it instead of dialing their own.
type dialCall struct{ done chan struct{} }

// Pool dials HBONE streams over shared HTTP/2 connections, keyed by
// (source identity, peer identity, HBONE endpoint, source address). A
// connection takes new streams while the server's MaxConcurrentStreams allows;
// when all are full another one is opened. It is safe for concurrent use.
type Pool struct {
	cfg PoolConfig
	t   *http2.Transport

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
	cfg.IdleTimeout = orDefault(cfg.IdleTimeout, 5*time.Minute)
	cfg.PingInterval = orDefault(cfg.PingInterval, 30*time.Second)
	cfg.PingTimeout = orDefault(cfg.PingTimeout, 15*time.Second)
	cfg.HandshakeTimeout = orDefault(cfg.HandshakeTimeout, 10*time.Second)
	if cfg.MaxReadFrameSize == 0 {
		cfg.MaxReadFrameSize = 1 << 20
	}
	t := &http2.Transport{
		DisableCompression: true,
		MaxReadFrameSize:   cfg.MaxReadFrameSize,
		PingTimeout:        cfg.PingTimeout,
	}
	if cfg.IdleTimeout > 0 {
		t.IdleConnTimeout = cfg.IdleTimeout
	}
	if cfg.PingInterval > 0 {
		t.ReadIdleTimeout = cfg.PingInterval
	}
	return &Pool{cfg: cfg, t: t, conns: map[poolKey][]*poolConn{}, dialing: map[poolKey]*dialCall{}}, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// Dial opens a tunneled stream to d.Target through d.Via and returns once the
// server answered 200 (its upstream connection is up). A refusal is a
// *StatusError; a peer with the wrong identity an *IdentityMismatchError in
// the chain. ctx bounds only the dial, not the stream's life.
func (p *Pool) Dial(ctx context.Context, d DialRequest) (*Conn, error) {
	if err := p.normalize(&d); err != nil {
		return nil, err
	}
	pc, err := p.reserve(ctx, &d)
	if err != nil {
		return nil, err
	}
	// x/net/http2 sizes a stream's upload frames from the server's SETTINGS
	// when the stream starts: on a brand-new connection wait for them, or a
	// bulk upload would be cut into 16 KiB frames for its whole life.
	select {
	case <-pc.settled:
	case <-ctx.Done():
		pc.cc.RoundTrip(new(http.Request)) // releases the reservation (documented x/net idiom)
		return nil, fmt.Errorf("hbone: dial %s via %s: %w", d.Target, d.Via, context.Cause(ctx))
	}
	if pc.settleErr != nil {
		// With TLS 1.3 the server judges our certificate after our side of
		// the handshake is done: its verdict (an alert) surfaces here.
		pc.cc.RoundTrip(new(http.Request))
		return nil, fmt.Errorf("hbone: connection to %s (%s) failed: %w", d.Via, d.Peer, pc.settleErr)
	}
	return p.openStream(ctx, pc, &d)
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
// reusing one with room or establishing a new one.
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
			if !pc.isSettled() {
				wait = pc.settled
				continue
			}
			if pc.cc.ReserveNewRequest() {
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
				pc.cc.Close()
				err = errors.New("hbone: pool is closed")
			} else {
				pc.cc.ReserveNewRequest() // a fresh connection always has room for one
				p.pruneLocked()
				p.conns[key] = append(p.conns[key], pc)
			}
		}
		p.mu.Unlock()
		close(call.done)
		if err != nil {
			return nil, err
		}
		go p.settle(pc)
		return pc, nil
	}
}

// liveLocked drops the connections the transport has closed (after an
// error, idle expiry or a finished shutdown). It must not call
// ClientConn.State, which can block behind a stalled write.
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

// settle waits until the server's SETTINGS are known. The server sends them
// before it answers anything, so the answer to a PING proves they arrived.
func (p *Pool) settle(pc *poolConn) {
	defer close(pc.settled)
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.HandshakeTimeout)
	defer cancel()
	if err := pc.cc.Ping(ctx); err != nil {
		pc.settleErr = err
		// If the server refused us, its alert is the useful error, not the
		// broken pipe our PING may have hit: give the read side a moment.
		select {
		case <-pc.conn.readFailed:
			if !errors.Is(pc.conn.readErr, net.ErrClosed) && !errors.Is(pc.conn.readErr, io.EOF) {
				pc.settleErr = pc.conn.readErr
			}
		case <-time.After(time.Second):
		}
		pc.cc.SetDoNotReuse()
		pc.cc.Close()
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
	pc := &poolConn{key: key, localAddr: raw.LocalAddr(), tlsState: tc.ConnectionState(), created: time.Now(), settled: make(chan struct{})}
	// The transport closes the connection when it dies (error, idle
	// expiry, GOAWAY completed): that is when the pool forgets it.
	pc.conn = newBatchedTLSConn(tc, cr, func() { pc.dead.Store(true) })
	cc, err := p.t.NewClientConn(pc.conn)
	if err != nil {
		tc.Close()
		return nil, fmt.Errorf("hbone: HTTP/2 with %s: %w", d.Via, err)
	}
	pc.cc = cc
	return pc, nil
}

// openStream sends the CONNECT on pc (which holds a reservation for it).
func (p *Pool) openStream(ctx context.Context, pc *poolConn, d *DialRequest) (*Conn, error) {
	// The stream outlives ctx: it gets its own context, tied to ctx only
	// until the response arrives.
	streamCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, cancel)
	pr, pw := io.Pipe()
	body := &uploadBody{pr: pr, early: d.EarlyData}
	authority := d.Target.String()
	req := (&http.Request{
		Method:        http.MethodConnect,
		URL:           &url.URL{Host: authority},
		Host:          authority,
		Header:        d.Header.Clone(),
		Body:          body,
		ContentLength: -1,
	}).WithContext(streamCtx)
	if req.Header == nil {
		req.Header = http.Header{}
	}
	resp, err := pc.cc.RoundTrip(req)
	if !stop() {
		// ctx ended while waiting for the answer.
		if err == nil {
			resp.Body.Close()
		}
		pw.CloseWithError(ErrStreamClosed)
		return nil, fmt.Errorf("hbone: CONNECT %s via %s: %w", d.Target, d.Via, context.Cause(ctx))
	}
	if err != nil {
		cancel()
		pw.CloseWithError(ErrStreamClosed)
		return nil, fmt.Errorf("hbone: CONNECT %s via %s: %w", d.Target, d.Via, err)
	}
	if resp.StatusCode != http.StatusOK {
		reason, _ := io.ReadAll(io.LimitReader(resp.Body, maxReasonLen))
		resp.Body.Close()
		cancel()
		pw.CloseWithError(ErrStreamClosed)
		return nil, fmt.Errorf("hbone: CONNECT %s via %s: %w", d.Target, d.Via,
			&StatusError{Code: resp.StatusCode, Reason: string(reason)})
	}
	return newConn(pc, d, resp, pw, body, cancel), nil
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
		{
			st := pc.cc.State()
			s.Conns = append(s.Conns, ConnStats{
				Source: pc.key.source, Peer: pc.key.peer, Via: pc.key.via, SourceAddr: pc.key.sourceAddr,
				LocalAddr: pc.localAddr.String(), Streams: st.StreamsActive, MaxStreams: st.MaxConcurrentStreams,
				Created: pc.created,
			})
			s.Streams += st.StreamsActive
		}
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
			pc.cc.Close()
		}
	}
	return nil
}

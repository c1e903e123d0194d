package hbone

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/net/http2"

	"github.com/ambientmesh/ambient-operator/internal/spiffe"
)

// Handler decides what to do with one CONNECT request. Typical flow:
// authorize req.Peer (return Reject(403, ...) to deny), dial the upstream
// (return Reject(503, ...) or any error on failure: the status is
// StatusCode(err)), then req.Accept() — which answers 200 — and Join the
// stream with the upstream connection. Returning nil after Accept ends the
// stream cleanly; returning an error after Accept resets it. ctx is done when
// the stream is over (client reset, connection lost, server closed).
type Handler interface {
	ServeHBONE(ctx context.Context, req *Request) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, req *Request) error

// ServeHBONE calls f.
func (f HandlerFunc) ServeHBONE(ctx context.Context, req *Request) error { return f(ctx, req) }

// Request is an authenticated, validated CONNECT.
type Request struct {
	Peer       spiffe.ID      // the client's verified identity
	Identity   spiffe.ID      // the local identity that answered the handshake
	Target     netip.AddrPort // the :authority: where the client wants to go
	Header     http.Header    // request headers (Forwarded, baggage, traceparent, ...)
	RemoteAddr net.Addr       // TCP address of the HBONE client
	LocalAddr  net.Addr       // TCP address the client connected to
	// TLS is the connection's TLS state (the client's certificate chain is
	// in PeerCertificates). Shared by all streams of the connection: read only.
	TLS    *tls.ConnectionState
	stream *Stream
}

// Accept answers 200 and returns the stream. Call it once the upstream is
// connected, at most once.
func (r *Request) Accept() (*Stream, error) { return r.stream.accept() }

// ServerConfig configures a Server. Identity, Certs, Roots and Handler are required.
type ServerConfig struct {
	// Identity is the local identity whose certificate the server presents
	// (one Server per pod: the ztunnel opens 15008 in each pod's netns).
	Identity spiffe.ID
	Certs    CertSource
	Roots    RootsSource
	Handler  Handler
	// MaxConcurrentStreams per connection (default 100), which also bounds
	// the Handlers running for one connection: a stream reset by the client
	// holds its slot until its Handler returns. Clients open more connections
	// when it is reached.
	MaxConcurrentStreams uint32
	// MaxConnections bounds the connections served at once, handshakes
	// included (default 4096); the server closes more at once.
	MaxConnections int
	// MaxPendingHandshakes bounds the TLS handshakes in progress (default
	// 128); the server closes more at once.
	MaxPendingHandshakes int
	// WriteTimeout ends a connection on which a write has not completed for
	// this long (default 30s; it may fire after half of it): the client
	// stopped reading. Negative disables.
	WriteTimeout time.Duration
	// IdleTimeout sends GOAWAY on connections without streams for this long
	// (default 10 minutes, twice the Pool's own idle timeout; negative:
	// never).
	IdleTimeout time.Duration
	// ConnSettings: handshake timeout, keepalives, frame size and receive
	// windows, the same as the Pool's.
	ConnSettings
	Logger logr.Logger
}

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("hbone: server closed")

// Server terminates HBONE: mTLS + HTTP/2, CONNECT requests to Handler.
type Server struct {
	cfg    ServerConfig
	tls    *tls.Config
	log    logr.Logger
	ctx    context.Context
	cancel context.CancelFunc

	mu          sync.Mutex
	listeners   map[net.Listener]struct{}
	conns       map[net.Conn]*session // nil session: still in the TLS handshake
	handshaking int                   // conns in the TLS handshake
	shutdown    bool
	idle        chan struct{} // closed when conns becomes empty during shutdown
}

// NewServer validates cfg and returns a Server.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Identity.IsZero() || cfg.Certs == nil || cfg.Roots == nil || cfg.Handler == nil {
		return nil, errors.New("hbone: ServerConfig: Identity, Certs, Roots and Handler are required")
	}
	if cfg.MaxConcurrentStreams == 0 {
		cfg.MaxConcurrentStreams = 100
	}
	if cfg.MaxConnections <= 0 {
		cfg.MaxConnections = 4096
	}
	if cfg.MaxPendingHandshakes <= 0 {
		cfg.MaxPendingHandshakes = 128
	}
	cfg.WriteTimeout = cmp.Or(cfg.WriteTimeout, 30*time.Second)
	cfg.IdleTimeout = cmp.Or(cfg.IdleTimeout, 10*time.Minute)
	cfg.ConnSettings = cfg.ConnSettings.withDefaults()
	if cfg.Logger.GetSink() == nil {
		cfg.Logger = logr.Discard()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		cfg: cfg, tls: ServerTLSConfig(cfg.Identity, cfg.Certs, cfg.Roots), log: cfg.Logger, ctx: ctx, cancel: cancel,
		listeners: map[net.Listener]struct{}{}, conns: map[net.Conn]*session{},
	}, nil
}

// Serve accepts connections on l until Shutdown or Close, and returns
// ErrServerClosed then (or the accept error).
func (s *Server) Serve(l net.Listener) error {
	if !s.track(l, true) {
		l.Close()
		return ErrServerClosed
	}
	defer s.track(l, false)
	for {
		c, err := l.Accept()
		if err != nil {
			if s.isShutdown() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			return err
		}
		go s.ServeConn(c)
	}
}

// ServeConn serves one accepted TCP connection: TLS handshake, then HTTP/2
// until the connection ends. It closes c, at once if the server is at
// MaxConnections or MaxPendingHandshakes.
func (s *Server) ServeConn(c net.Conn) {
	if err := s.admit(c); err != nil {
		if err != ErrServerClosed {
			s.log.V(1).Info("HBONE connection refused", "remote", c.RemoteAddr().String(), "reason", err.Error())
		}
		c.Close()
		return
	}
	defer s.forgetConn(c)
	cr := newCoalescingConn(c)
	cr.writeTimeout = s.cfg.WriteTimeout
	tc := tls.Server(cr, s.tls)
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.HandshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	s.handshakeEnded()
	if err != nil {
		s.log.V(1).Info("HBONE handshake failed", "remote", c.RemoteAddr().String(), "error", err.Error())
		c.Close()
		return
	}
	cs := tc.ConnectionState()
	peer, err := PeerIdentity(&cs)
	if err != nil { // VerifyConnection already checked it; never expected
		c.Close()
		return
	}
	info := &connInfo{peer: peer, remote: c.RemoteAddr(), local: c.LocalAddr(), tls: &cs}
	ended := make(chan struct{})
	sess := newSession(tc, cr, sessionConfig{
		server: true, maxFrame: s.cfg.MaxReadFrameSize, streamWin: s.cfg.StreamWindow, connWin: s.cfg.ConnWindow,
		maxStreams: s.cfg.MaxConcurrentStreams, idleTimeout: s.cfg.IdleTimeout,
		pingInterval: s.cfg.PingInterval, pingTimeout: s.cfg.PingTimeout,
		onRequest: func(st *h2stream, hf *http2.MetaHeadersFrame) { s.serveStream(info, st, hf) },
		onClose: func(err error) {
			var abuse *abuseError
			if errors.As(err, &abuse) {
				s.log.Info("HBONE connection closed for abuse", "remote", info.remote.String(), "peer", info.peer.String(), "limit", abuse.limit)
			} else {
				s.log.V(1).Info("HBONE connection ended", "remote", info.remote.String(), "reason", err.Error())
			}
			close(ended)
		},
	})
	if !s.established(c, sess) {
		// Shutdown began during the handshake: do not start serving.
		tc.Close()
		return
	}
	if err := sess.start(); err != nil {
		s.log.V(1).Info("HBONE connection refused", "remote", info.remote.String(), "error", err.Error())
		sess.close(err)
		return
	}
	<-ended
}

// connInfo is what every request of one connection shares.
type connInfo struct {
	peer          spiffe.ID
	remote, local net.Addr
	tls           *tls.ConnectionState
}

// Shutdown stops accepting, asks clients to go away (GOAWAY: no new
// streams) and waits until open streams finish or ctx is done, then closes
// what is left.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutdown = true
	for l := range s.listeners {
		l.Close()
	}
	s.idle = make(chan struct{})
	if len(s.conns) == 0 {
		close(s.idle)
	}
	idle := s.idle
	var sessions []*session
	for _, sess := range s.conns {
		if sess != nil {
			sessions = append(sessions, sess)
		}
	}
	s.mu.Unlock()
	for _, sess := range sessions {
		sess.goAway()
	}
	select {
	case <-idle:
		s.cancel()
		return nil
	case <-ctx.Done():
		s.Close()
		return ctx.Err()
	}
}

// Close closes listeners and connections at once (streams are reset).
func (s *Server) Close() error {
	s.mu.Lock()
	s.shutdown = true
	for l := range s.listeners {
		l.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.cancel()
	return nil
}

func (s *Server) isShutdown() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.shutdown
}

func (s *Server) track(l net.Listener, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.shutdown {
			return false
		}
		s.listeners[l] = struct{}{}
	} else {
		delete(s.listeners, l)
	}
	return true
}

var (
	errTooManyConns      = errors.New("hbone: server at MaxConnections")
	errTooManyHandshakes = errors.New("hbone: server at MaxPendingHandshakes")
)

// admit registers c for its TLS handshake, unless the server is shutting
// down or at one of its limits.
func (s *Server) admit(c net.Conn) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.shutdown:
		return ErrServerClosed
	case len(s.conns) >= s.cfg.MaxConnections:
		return errTooManyConns
	case s.handshaking >= s.cfg.MaxPendingHandshakes:
		return errTooManyHandshakes
	}
	s.conns[c] = nil
	s.handshaking++
	return nil
}

func (s *Server) handshakeEnded() {
	s.mu.Lock()
	s.handshaking--
	s.mu.Unlock()
}

// established registers c's session; it refuses after Shutdown.
func (s *Server) established(c net.Conn, sess *session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown {
		return false
	}
	s.conns[c] = sess
	return true
}

func (s *Server) forgetConn(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
	if s.shutdown && len(s.conns) == 0 && s.idle != nil && !isClosed(s.idle) {
		close(s.idle)
	}
}

// serveStream validates one request and runs the Handler for it.
func (s *Server) serveStream(info *connInfo, st *h2stream, hf *http2.MetaHeadersFrame) {
	req, code, err := s.parseRequest(info, hf)
	if err != nil {
		refuse(st, code, err.Error())
		return
	}
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	sess := st.s
	sess.mu.Lock()
	st.cancel = cancel
	if st.err != nil || st.closed {
		cancel()
	}
	sess.mu.Unlock()
	stream := newStream(st, req)
	req.stream = stream
	stream.finish(s.runHandler(ctx, req))
}

func (s *Server) runHandler(ctx context.Context, req *Request) (err error) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error(fmt.Errorf("panic: %v", p), "HBONE handler panicked", "target", req.Target.String())
			err = fmt.Errorf("hbone: handler panicked: %v", p)
		}
	}()
	return s.cfg.Handler.ServeHBONE(ctx, req)
}

// parseRequest checks method and authority; the session already reset
// malformed requests (validateRequestHeaders).
func (s *Server) parseRequest(info *connInfo, hf *http2.MetaHeadersFrame) (*Request, int, error) {
	if hf.Truncated {
		return nil, http.StatusRequestHeaderFieldsTooLarge, fmt.Errorf("hbone: request headers larger than %d bytes", maxHeaderListSize)
	}
	if m := hf.PseudoValue("method"); m != http.MethodConnect {
		return nil, http.StatusMethodNotAllowed, fmt.Errorf("hbone: method %s not allowed, only CONNECT", m)
	}
	if hf.PseudoValue("protocol") != "" {
		return nil, http.StatusBadRequest, errors.New("hbone: extended CONNECT (:protocol) is not supported")
	}
	target, err := ParseAuthority(hf.PseudoValue("authority"))
	if err != nil {
		return nil, http.StatusBadRequest, err
	}
	header := make(http.Header, len(hf.RegularFields()))
	for _, f := range hf.RegularFields() {
		header.Add(f.Name, f.Value)
	}
	req := &Request{Peer: info.peer, Identity: s.cfg.Identity, Target: target, Header: header,
		RemoteAddr: info.remote, LocalAddr: info.local, TLS: info.tls}
	return req, 0, nil
}

package hbone

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/ambientmesh/ambient-operator/internal/spiffe"
	"github.com/ambientmesh/ambient-operator/internal/testca"
)

var (
	clientID = spiffe.MustNew("cluster.local", "shop", "frontend")
	serverID = spiffe.MustNew("cluster.local", "shop", "cart")
	otherID  = spiffe.MustNew("cluster.local", "shop", "payments")
)

// env is an HBONE server on loopback, a client pool and an echo upstream.
type env struct {
	ca       *testca.CA
	certs    *CertStore
	bundle   *Bundle
	srv      *Server
	via      netip.AddrPort
	pool     *Pool
	upstream netip.AddrPort // a TCP echo server
}

type envOpts struct {
	server  func(*ServerConfig)
	pool    func(*PoolConfig)
	handler Handler
}

func newEnv(t testing.TB, o envOpts) *env {
	t.Helper()
	e := &env{ca: testca.New(t), certs: NewCertStore()}
	e.bundle = NewBundle(e.ca.Pool())
	e.certs.Put(clientID, e.ca.Issue(t, clientID))
	e.certs.Put(serverID, e.ca.Issue(t, serverID))
	e.upstream = startEcho(t)
	h := o.handler
	if h == nil {
		h = forwardHandler(nil)
	}
	scfg := ServerConfig{Identity: serverID, Certs: e.certs, Roots: e.bundle, Handler: h}
	if o.server != nil {
		o.server(&scfg)
	}
	srv, err := NewServer(scfg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }() // returns when Close closes the listener
	t.Cleanup(func() { srv.Close() })
	e.srv = srv
	e.via = l.Addr().(*net.TCPAddr).AddrPort()
	pcfg := PoolConfig{Certs: e.certs, Roots: e.bundle}
	if o.pool != nil {
		o.pool(&pcfg)
	}
	pool, err := NewPool(pcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close() })
	e.pool = pool
	return e
}

func (e *env) dialReq() DialRequest {
	return DialRequest{Source: clientID, Peer: serverID, Target: e.upstream, Via: e.via}
}

func (e *env) dial(t testing.TB) *Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := e.pool.Dial(ctx, e.dialReq())
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	return c
}

// forwardHandler dials req.Target over TCP and joins; seen (optional)
// receives every request.
func forwardHandler(seen chan<- *Request) Handler {
	return HandlerFunc(func(ctx context.Context, req *Request) error {
		if seen != nil {
			seen <- req
		}
		var d net.Dialer
		up, err := d.DialContext(ctx, "tcp", req.Target.String())
		if err != nil {
			return Reject(503, "connect %s: %v", req.Target, err)
		}
		st, err := req.Accept()
		if err != nil {
			up.Close()
			return err
		}
		return Join(st, up, nil)
	})
}

// startEcho runs a TCP server that echoes until EOF, then closes its write side.
func startEcho(t testing.TB) netip.AddrPort {
	t.Helper()
	return startUpstream(t, func(c *net.TCPConn) {
		_, _ = io.Copy(c, c) // the client checks what comes back
		_ = c.CloseWrite()
	})
}

// startUpstream runs fn for each connection accepted on a new loopback listener.
func startUpstream(t testing.TB, fn func(c *net.TCPConn)) netip.AddrPort {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				fn(c.(*net.TCPConn))
			}()
		}
	}()
	return l.Addr().(*net.TCPAddr).AddrPort()
}

// goingAway reports whether s is shutting down and every session of it has sent GOAWAY
// (it takes no new stream).
func goingAway(s *Server) bool {
	s.mu.Lock()
	shutdown := s.shutdown
	var sessions []*session
	for _, sess := range s.conns {
		if sess != nil {
			sessions = append(sessions, sess)
		}
	}
	s.mu.Unlock()
	for _, sess := range sessions {
		sess.mu.Lock()
		away := sess.goingAway
		sess.mu.Unlock()
		if !away {
			return false
		}
	}
	return shutdown
}

// queued is how many received bytes wait unread in st.
func queued(st *h2stream) int {
	st.s.mu.Lock()
	defer st.s.mu.Unlock()
	return st.recv.len()
}

// reading reports whether a Read of st is under way (it holds the readers' lock).
func reading(st *h2stream) bool {
	if st.rmu.TryLock() {
		st.rmu.Unlock()
		return false
	}
	return true
}

package hbone

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ambientmesh/ambient-operator/internal/testwait"
)

// rawClient opens an mTLS HTTP/2 connection to the env's server with net/http's
// transport, to send requests the Pool would never send.
func (e *env) rawClient(t testing.TB) *http.ClientConn {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: ClientTLSConfig(clientID, serverID, e.certs, e.bundle), Protocols: new(http.Protocols)}
	tr.Protocols.SetHTTP2(true)
	cc, err := tr.NewClientConn(context.Background(), "https", e.via.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func roundTrip(t *testing.T, cc *http.ClientConn, method, authority string) (*http.Response, string) {
	t.Helper()
	req := &http.Request{Method: method, Host: authority, URL: &url.URL{Scheme: "https", Host: authority, Path: "/"}, Header: http.Header{}}
	if method == http.MethodConnect {
		req.URL = &url.URL{Host: authority}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cc.RoundTrip(req.WithContext(ctx))
	if err != nil {
		t.Fatalf("%s %s: %v", method, authority, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body)
}

func TestNonConnectIs405(t *testing.T) {
	called := make(chan *Request, 1)
	e := newEnv(t, envOpts{handler: forwardHandler(called)})
	cc := e.rawClient(t)
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodOptions} {
		resp, body := roundTrip(t, cc, m, e.upstream.String())
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("%s: status %d, want 405", m, resp.StatusCode)
		}
		if got := resp.Header.Get("Allow"); got != "CONNECT" {
			t.Errorf("%s: Allow = %q, want CONNECT", m, got)
		}
		if !strings.Contains(body, "only CONNECT") {
			t.Errorf("%s: body %q does not explain", m, body)
		}
	}
	if len(called) != 0 {
		t.Fatal("handler ran for a non-CONNECT request")
	}
}

func TestBadAuthorityIs400(t *testing.T) {
	called := make(chan *Request, 1)
	e := newEnv(t, envOpts{handler: forwardHandler(called)})
	cc := e.rawClient(t)
	for _, a := range []string{"example.com:80", "10.0.0.1", "10.0.0.1:0", "10.0.0.1:65536", "10.0.0.1:http", "[fe80::1%eth0]:80", "[::ffff:10.0.0.1]:80"} {
		resp, body := roundTrip(t, cc, http.MethodConnect, a)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("CONNECT %s: status %d, want 400", a, resp.StatusCode)
		}
		if !strings.Contains(body, ":authority") {
			t.Errorf("CONNECT %s: body %q does not name the field", a, body)
		}
	}
	if len(called) != 0 {
		t.Fatal("handler ran for a bad authority")
	}
}

func TestUpstreamRefusedIs503(t *testing.T) {
	e := newEnv(t, envOpts{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().(*net.TCPAddr).AddrPort()
	l.Close() // nothing listens there now
	d := e.dialReq()
	d.Target = closed
	err = e.dialErr(t, d)
	var se *StatusError
	if !errors.As(err, &se) || se.Code != http.StatusServiceUnavailable {
		t.Fatalf("error = %v, want a 503 StatusError", err)
	}
	if !strings.Contains(se.Reason, "connection refused") {
		t.Errorf("reason %q does not say why", se.Reason)
	}
	// The refused stream must not poison the pooled connection.
	echoCheck(t, e.dial(t), "after a refusal")
}

func TestHandlerDenialIs403(t *testing.T) {
	deny := HandlerFunc(func(ctx context.Context, req *Request) error {
		return Reject(http.StatusForbidden, "%s may not reach %s", req.Peer, req.Target)
	})
	e := newEnv(t, envOpts{handler: deny})
	err := e.dialErr(t, e.dialReq())
	var se *StatusError
	if !errors.As(err, &se) || se.Code != http.StatusForbidden {
		t.Fatalf("error = %v, want a 403 StatusError", err)
	}
	if !strings.Contains(se.Reason, clientID.String()) {
		t.Errorf("reason %q lost the handler's text", se.Reason)
	}
}

func TestHandlerThatNeitherAcceptsNorRejectsIs500(t *testing.T) {
	e := newEnv(t, envOpts{handler: HandlerFunc(func(context.Context, *Request) error { return nil })})
	var se *StatusError
	if err := e.dialErr(t, e.dialReq()); !errors.As(err, &se) || se.Code != http.StatusInternalServerError {
		t.Fatalf("error = %v, want 500", err)
	}
}

func TestClientHalfClose(t *testing.T) {
	// The upstream reads until EOF, then answers: only possible if the
	// client's CloseWrite reaches it as a TCP half-close.
	e := newEnv(t, envOpts{})
	d := e.dialReq()
	d.Target = startUpstream(t, func(c *net.TCPConn) {
		got, err := io.ReadAll(c)
		if err != nil {
			return
		}
		_, _ = io.WriteString(c, "got "+string(got)) // the client checks the reply
		_ = c.CloseWrite()
	})
	c, err := e.pool.Dial(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "request"); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("x")); err == nil {
		t.Error("Write after CloseWrite succeeded")
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	reply, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("ReadAll: %v", err)
	}
	if string(reply) != "got request" {
		t.Fatalf("reply = %q, want %q", reply, "got request")
	}
}

func TestUpstreamHalfCloseGivesClientEOF(t *testing.T) {
	// The upstream answers and closes its write side while the client's
	// side is still open (HTTP/1.0-style "read until close").
	e := newEnv(t, envOpts{})
	d := e.dialReq()
	d.Target = startUpstream(t, func(c *net.TCPConn) {
		_, _ = io.WriteString(c, "banner and bye") // the client checks the reply
		_ = c.CloseWrite()
		_, _ = io.Copy(io.Discard, c)
	})
	c, err := e.pool.Dial(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	reply, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("ReadAll: %v", err)
	}
	if string(reply) != "banner and bye" {
		t.Fatalf("reply = %q", reply)
	}
}

func TestLargeTransferBothWays(t *testing.T) {
	e := newEnv(t, envOpts{})
	c := e.dial(t)
	defer c.Close()
	const size = 8 << 20
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	go func() {
		_, _ = c.Write(payload) // the echo check below sees a failure
		_ = c.CloseWrite()
	}()
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != size || string(got) != string(payload) {
		t.Fatalf("echoed %d bytes (want %d) or content differs", len(got), size)
	}
}

// streamRecorder is a handler that forwards and hands each accepted stream
// to the test.
func streamRecorder(streams chan<- *Stream) Handler {
	return HandlerFunc(func(ctx context.Context, req *Request) error {
		up, err := net.Dial("tcp", req.Target.String())
		if err != nil {
			return err
		}
		st, err := req.Accept()
		if err != nil {
			up.Close()
			return err
		}
		streams <- st
		return Join(st, up, nil)
	})
}

func TestServerStreamCloseResetsClient(t *testing.T) {
	streams := make(chan *Stream, 1)
	e := newEnv(t, envOpts{handler: streamRecorder(streams)})
	c := e.dial(t)
	defer c.Close()
	echoCheck(t, c, "before")
	st := <-streams
	if st.Peer() != clientID || st.LocalAddr().String() != e.upstream.String() {
		t.Errorf("stream peer %s local %s", st.Peer(), st.LocalAddr())
	}
	st.Close() // e.g. a policy now denies this connection
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.ReadAll(c)
	if err == nil {
		t.Fatal("client read a clean EOF, want a reset")
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("client did not notice the reset")
	}
	t.Logf("client read error after server reset: %v", err)
	// Other streams on the same connection are unaffected.
	echoCheck(t, e.dial(t), "after")
}

func TestClientCloseClosesUpstream(t *testing.T) {
	upClosed := make(chan struct{})
	e := newEnv(t, envOpts{})
	d := e.dialReq()
	d.Target = startUpstream(t, func(c *net.TCPConn) {
		_, _ = io.Copy(io.Discard, c) // until the stream's close reaches it, as EOF or a reset
		close(upClosed)
	})
	c, err := e.pool.Dial(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, "data"); err != nil {
		t.Fatal(err)
	}
	c.Close()
	select {
	case <-upClosed:
	case <-time.After(5 * time.Second):
		t.Fatal("upstream connection still open after the client closed the stream")
	}
}

func TestGracefulShutdown(t *testing.T) {
	e := newEnv(t, envOpts{})
	c := e.dial(t)
	defer c.Close()
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- e.srv.Shutdown(ctx)
	}()
	testwait.For(t, "the server to send GOAWAY", 5*time.Second, func() bool { return goingAway(e.srv) })
	// The open stream keeps working while the server drains...
	echoCheck(t, c, "draining")
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v with a stream open", err)
	default:
	}
	// ...new streams are refused...
	d := e.dialReq()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c2, err := e.pool.Dial(ctx, d)
	if err == nil {
		c2.Close()
		t.Fatal("new stream accepted during shutdown")
	}
	t.Logf("dial during shutdown: %v", err)
	// ...and Shutdown returns once the last stream ends.
	c.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return after the last stream closed")
	}
}

func TestPoolLearnsServerStreamLimit(t *testing.T) {
	// The pool reads the server's SETTINGS_MAX_CONCURRENT_STREAMS; the
	// reuse tests in pool_test.go rely on it.
	e := newEnv(t, envOpts{server: func(c *ServerConfig) { c.MaxConcurrentStreams = 3 }})
	c := e.dial(t) // make sure settings are exchanged
	c.Close()
	stats := e.pool.Stats()
	if len(stats.Conns) != 1 || stats.Conns[0].MaxStreams != 3 {
		t.Fatalf("pool sees %+v, want one connection with MaxStreams 3", stats.Conns)
	}
}

func TestLazyCertificate(t *testing.T) {
	// The server identity has no certificate yet: the handshake waits for
	// it (ztunnel's lazy start) instead of failing.
	e := newEnv(t, envOpts{})
	e.certs.Delete(serverID)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		testwait.For(t, "the handshake to wait for the server's certificate", 10*time.Second, func() bool {
			e.certs.mu.Lock()
			defer e.certs.mu.Unlock()
			_, waiting := e.certs.waiters[serverID]
			return waiting
		})
		e.certs.Put(serverID, e.ca.Issue(t, serverID))
	}()
	c := e.dial(t)
	defer c.Close()
	echoCheck(t, c, "late cert")
	wg.Wait()
}

// Flow control across many streams: with small windows, concurrent streams carry far
// more than the connection window in both directions, streams closed with data still
// unread give their share of the connection window back, and the connection then still
// carries a large transfer (a leak of window credit would stall it).
func TestConnectionWindowIsReturned(t *testing.T) {
	e := newEnv(t, envOpts{
		server: func(c *ServerConfig) { c.StreamWindow = 64 << 10; c.ConnWindow = 256 << 10 },
		pool:   func(c *PoolConfig) { c.StreamWindow = 64 << 10; c.ConnWindow = 256 << 10 },
	})
	transfer := func(size int) error {
		c, err := e.pool.Dial(context.Background(), e.dialReq())
		if err != nil {
			return err
		}
		defer c.Close()
		payload := make([]byte, size)
		for i := range payload {
			payload[i] = byte(i * 13)
		}
		go func() {
			_, _ = c.Write(payload) // the echo check below sees a failure
			_ = c.CloseWrite()
		}()
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second)) // a leaked window stalls until then
		got, err := io.ReadAll(c)
		if err != nil {
			return err
		}
		if !bytes.Equal(got, payload) {
			return fmt.Errorf("echoed %d bytes (want %d) or content differs", len(got), size)
		}
		return nil
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() { defer wg.Done(); errs <- transfer(3 << 20) }()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent transfer: %v", err)
		}
	}
	// Streams closed with unread data on both sides.
	for range 8 {
		c := e.dial(t)
		if _, err := c.Write(make([]byte, 60<<10)); err != nil {
			t.Fatal(err)
		}
		testwait.For(t, "the echo to arrive (it stays unread)", 5*time.Second, func() bool { return queued(c.st) > 0 })
		c.Close()
	}
	if err := transfer(4 << 20); err != nil {
		t.Fatalf("after closing streams with unread data: %v", err)
	}
	if n := len(e.pool.Stats().Conns); n != 1 {
		t.Fatalf("%d connections, want the one pooled connection reused throughout", n)
	}
}

// Half-close from the server side: after Stream.CloseWrite the client reads EOF, and what
// it uploads afterwards still reaches the handler (TCP half-close crosses the tunnel both
// ways).
func TestServerHalfCloseKeepsUploadReadable(t *testing.T) {
	got := make(chan string, 1)
	e := newEnv(t, envOpts{handler: HandlerFunc(func(ctx context.Context, req *Request) error {
		st, err := req.Accept()
		if err != nil {
			return err
		}
		if err := st.CloseWrite(); err != nil {
			return err
		}
		_ = st.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, err := io.ReadAll(st)
		if err != nil {
			got <- "error: " + err.Error()
			return err
		}
		got <- string(b)
		return nil
	})})
	c := e.dial(t)
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := io.ReadAll(c); err != nil || len(b) != 0 {
		t.Fatalf("after the server's CloseWrite: read %q %v, want EOF", b, err)
	}
	if _, err := c.Write([]byte("still uploading")); err != nil {
		t.Fatalf("upload after the server's CloseWrite: %v", err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		if s != "still uploading" {
			t.Fatalf("the handler read %q", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the handler never finished reading the upload")
	}
}

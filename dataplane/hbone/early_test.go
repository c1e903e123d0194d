package hbone

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ambientmesh/ambient-operator/internal/tcptest"
)

// The early bytes leave with the CONNECT, before the 200: a handler that reads them before
// it accepts gets them (if the client waited for the 200 this would time out), and the
// upstream then sees them first, followed by what the client writes later.
func TestEarlyDataArrivesBeforeTheAnswer(t *testing.T) {
	e := newEnv(t, envOpts{handler: readBeforeAccepting("early")})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d := e.dialReq()
	d.EarlyData = []byte("early")
	c, err := e.pool.Dial(ctx, d)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(" late")); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "early late" {
		t.Fatalf("echo: %q %v, want %q", got, err, "early late")
	}
	if string(d.EarlyData) != "early" {
		t.Fatalf("Dial modified EarlyData: %q", d.EarlyData)
	}
}

// readBeforeAccepting is a handler that reads want from the stream before it answers
// (refusing with 400 if that does not come within 5 s), then forwards: it proves bytes
// arrived ahead of the 200.
func readBeforeAccepting(want string) Handler {
	return HandlerFunc(func(ctx context.Context, req *Request) error {
		got := make([]byte, len(want))
		_ = req.stream.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(req.stream, got); err != nil || string(got) != want {
			return Reject(400, "want %q before accepting, got %q %v", want, got, err)
		}
		_ = req.stream.SetReadDeadline(time.Time{})
		up, err := net.Dial("tcp", req.Target.String())
		if err != nil {
			return Reject(503, "%v", err)
		}
		if _, err := up.Write(got); err != nil {
			return Reject(503, "%v", err)
		}
		st, err := req.Accept()
		if err != nil {
			up.Close()
			return err
		}
		return Join(st, up, nil)
	})
}

// With the normal handler flow (dial, Accept, Join) the early bytes reach the upstream.
func TestEarlyDataReachesUpstream(t *testing.T) {
	e := newEnv(t, envOpts{})
	for i := range 20 { // many streams on the pooled connection
		d := e.dialReq()
		d.EarlyData = []byte("ping")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := e.pool.Dial(ctx, d)
		cancel()
		if err != nil {
			t.Fatalf("stream %d: Dial: %v", i, err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		got := make([]byte, 4)
		if _, err := io.ReadFull(c, got); err != nil || string(got) != "ping" {
			t.Fatalf("stream %d: echo %q %v", i, got, err)
		}
		c.Close()
	}
}

// A refusal is reported as without early bytes (403 and 503 with the handler's reason),
// and the pooled connection carries the next stream correctly.
func TestEarlyDataOfRefusedStream(t *testing.T) {
	for _, code := range []int{403, 503} {
		var refuse atomic.Bool
		refuse.Store(true)
		e := newEnv(t, envOpts{handler: HandlerFunc(func(ctx context.Context, req *Request) error {
			if refuse.Load() {
				return Reject(code, "refused by test")
			}
			return forwardHandler(nil).ServeHBONE(ctx, req)
		})})
		d := e.dialReq()
		d.EarlyData = []byte("secret")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := e.pool.Dial(ctx, d)
		cancel()
		var se *StatusError
		if !errors.As(err, &se) || se.Code != code || !strings.Contains(se.Reason, "refused by test") {
			if c != nil {
				c.Close()
			}
			t.Fatalf("want a %d refusal with the reason, got %v", code, err)
		}
		refuse.Store(false)
		d.EarlyData = []byte("next")
		ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
		c, err = e.pool.Dial(ctx, d)
		cancel()
		if err != nil {
			t.Fatalf("after a %d: %v", code, err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		got := make([]byte, 4)
		if _, err := io.ReadFull(c, got); err != nil || string(got) != "next" {
			t.Fatalf("after a %d: echo %q %v", code, got, err)
		}
		c.Close()
		if n := len(e.pool.Stats().Conns); n != 1 {
			t.Fatalf("pool has %d connections, want the 1 reused", n)
		}
	}
}

// What the app sends while Dial waits for the answer is forwarded at once: the handler
// reads it before it accepts (it would time out otherwise). After Dial the source is
// readable again (its deadline cleared) and nothing is lost or sent twice.
func TestEarlyFromForwardsBeforeTheAnswer(t *testing.T) {
	connectArrived := make(chan struct{})
	handler := readBeforeAccepting("hello")
	e := newEnv(t, envOpts{handler: HandlerFunc(func(ctx context.Context, req *Request) error {
		close(connectArrived)
		return handler.ServeHBONE(ctx, req)
	})})
	app, proxy := tcptest.Pair(t)
	go func() {
		select { // the app writes once Dial sent the CONNECT
		case <-connectArrived:
			_, _ = app.Write([]byte("hello"))
		case <-time.After(5 * time.Second): // Dial failed; it says why
		}
	}()
	d := e.dialReq()
	d.EarlyFrom = proxy
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := e.pool.Dial(ctx, d)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer c.Close()
	if c.EarlyBytes() != 5 {
		t.Errorf("EarlyBytes = %d, want 5", c.EarlyBytes())
	}
	// The rest of the app's bytes go through the ordinary copy.
	if _, err := app.Write([]byte(" world")); err != nil {
		t.Fatal(err)
	}
	_ = app.(*net.TCPConn).CloseWrite()
	go func() { _ = Join(proxy, c, nil) }()
	_ = app.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(app)
	if err != nil || string(got) != "hello world" {
		t.Fatalf("echo through the tunnel: %q %v, want %q", got, err, "hello world")
	}
}

// A refused stream reports the refusal, and the source keeps working: the forwarded
// bytes are gone with the refused stream, the deadline used to stop forwarding is cleared.
func TestEarlyFromOfRefusedStream(t *testing.T) {
	e := newEnv(t, envOpts{handler: HandlerFunc(func(ctx context.Context, req *Request) error {
		buf := make([]byte, 3)
		_, _ = io.ReadFull(req.stream, buf)
		return Reject(403, "denied after reading %q", buf)
	})})
	app, proxy := tcptest.Pair(t)
	if _, err := app.Write([]byte("abc")); err != nil {
		t.Fatal(err)
	}
	d := e.dialReq()
	d.EarlyFrom = proxy
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := e.pool.Dial(ctx, d)
	var se *StatusError
	if !errors.As(err, &se) || se.Code != 403 || !strings.Contains(se.Reason, `"abc"`) {
		t.Fatalf("want a 403 after the server read the forwarded bytes, got %v", err)
	}
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 4)
		_, err := io.ReadFull(proxy, buf)
		done <- err
	}()
	// A read still under the stop deadline (in the past) would fail at once, even with
	// the bytes below already queued.
	if _, err := app.Write([]byte("more")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("reading the source after the refusal: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the source is not readable after Dial")
	}
}

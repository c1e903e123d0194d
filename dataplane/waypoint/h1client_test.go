package waypoint

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"net/textproto"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ambientmesh/ambient-operator/internal/testwait"

	"github.com/ambientmesh/ambient-operator/dataplane/hbone"
	"github.com/ambientmesh/ambient-operator/internal/spiffe"
	"github.com/ambientmesh/ambient-operator/internal/testca"
)

// hboneEndpoint is an upstream behind a real HBONE server on loopback, as the waypoint
// reaches endpoints: each dial opens a new stream, which serve handles (n counts the
// streams from 1).
type hboneEndpoint struct {
	dials atomic.Int32
	serve func(n int, c net.Conn, br *bufio.Reader)
}

func (e *hboneEndpoint) client(t *testing.T) *h1Client {
	ca := testca.New(t)
	certs, roots := hbone.NewCertStore(), hbone.NewBundle(ca.Pool())
	self := spiffe.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "waypoint"}
	peer := spiffe.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "backend"}
	certs.Put(self, ca.Issue(t, self))
	certs.Put(peer, ca.Issue(t, peer))
	srv, err := hbone.NewServer(hbone.ServerConfig{Identity: peer, Certs: certs, Roots: roots,
		Handler: hbone.HandlerFunc(func(_ context.Context, req *hbone.Request) error {
			st, err := req.Accept()
			if err != nil {
				return err
			}
			e.serve(int(e.dials.Load()), st, bufio.NewReader(st))
			return nil
		})})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	pool, err := hbone.NewPool(hbone.PoolConfig{Certs: certs, Roots: roots})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close() })
	via := l.Addr().(*net.TCPAddr).AddrPort()
	h := newH1Client(func(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
		e.dials.Add(1)
		return pool.Dial(ctx, hbone.DialRequest{Source: self, Peer: peer, Target: addr, Via: via})
	}, 4, time.Minute)
	t.Cleanup(h.close)
	return h
}

// closeWrite ends what the endpoint sends on c (END_STREAM), then waits until the
// client is done with the stream.
func closeWrite(c net.Conn) {
	_ = c.(interface{ CloseWrite() error }).CloseWrite()
	_, _ = io.Copy(io.Discard, c)
}

// readRequest reads one request and its body from br; false when the client went away.
func readRequest(br *bufio.Reader) bool {
	req, err := http.ReadRequest(br)
	if err != nil {
		return false
	}
	_, err = io.Copy(io.Discard, req.Body)
	return err == nil
}

func newRequest(t *testing.T, ctx context.Context, method string) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, "http://10.0.0.1:8080/items", nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// within fails the test when f has not returned after ten seconds (it hangs).
func within(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not return", what)
	}
}

// fetch sends a request with body (nil: none) and returns the answer's status and body.
func fetch(h *h1Client, req *http.Request, body []byte) (int, string, error) {
	if body != nil {
		req.ContentLength = int64(len(body))
	}
	resp, err := h.send(req, body, nil)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func TestH1ClientReusesConnectionsByHTTPRules(t *testing.T) {
	for _, tc := range []struct {
		name     string
		answer   string
		closes   bool // the endpoint closes the connection after answering
		reqClose bool // the request says Connection: close
		want     string
		wantDial int32
	}{
		{name: "content-length", answer: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", want: "ok", wantDial: 1},
		{name: "chunked", answer: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", want: "ok", wantDial: 1},
		{name: "no body", answer: "HTTP/1.1 204 No Content\r\n\r\n", wantDial: 1},
		{name: "connection close", answer: "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", want: "ok", wantDial: 3},
		{name: "request says close", answer: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", reqClose: true, want: "ok", wantDial: 3},
		{name: "ends when closed", answer: "HTTP/1.1 200 OK\r\n\r\nok", closes: true, want: "ok", wantDial: 3},
		{name: "HTTP/1.0", answer: "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", want: "ok", wantDial: 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := &hboneEndpoint{serve: func(_ int, c net.Conn, br *bufio.Reader) {
				for readRequest(br) {
					if _, err := io.WriteString(c, tc.answer); err != nil {
						return
					}
					if tc.closes {
						closeWrite(c)
						return
					}
				}
			}}
			h := e.client(t)
			for i := range 3 {
				req := newRequest(t, context.Background(), http.MethodPost)
				req.Close = tc.reqClose
				status, body, err := fetch(h, req, []byte("hello"))
				if err != nil || status/100 != 2 || body != tc.want {
					t.Fatalf("request %d: got %d %q, %v; want 2xx %q", i, status, body, err, tc.want)
				}
			}
			if got := e.dials.Load(); got != tc.wantDial {
				t.Errorf("3 requests opened %d connections, want %d", got, tc.wantDial)
			}
		})
	}
}

func TestH1ClientClosesAnAbandonedAnswerWithoutReadingIt(t *testing.T) {
	e := &hboneEndpoint{serve: func(_ int, c net.Conn, br *bufio.Reader) {
		if readRequest(br) {
			// A long answer that never ends: closing it must not wait for the rest.
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\nx")
			_, _ = io.Copy(io.Discard, c)
		}
	}}
	h := e.client(t)
	resp, err := h.send(newRequest(t, context.Background(), http.MethodGet), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := resp.Body.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	within(t, "closing the answer", func() { resp.Body.Close() })
	resp, err = h.send(newRequest(t, context.Background(), http.MethodGet), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := e.dials.Load(); got != 2 {
		t.Errorf("opened %d connections, want 2: an answer closed halfway must not leave its connection for reuse", got)
	}
}

func TestH1ClientEndsTheExchangeWhenTheContextEnds(t *testing.T) {
	received := make(chan struct{})
	e := &hboneEndpoint{serve: func(_ int, c net.Conn, br *bufio.Reader) {
		if readRequest(br) {
			close(received)
			_, _ = io.Copy(io.Discard, c) // never answers
		}
	}}
	h := e.client(t)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-received
		cancel()
	}()
	var err error
	within(t, "the request", func() { _, err = h.send(newRequest(t, ctx, http.MethodGet), nil, nil) })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("send = %v, want context.Canceled", err)
	}
}

func TestH1ClientSkipsIdleConnectionsTheEndpointClosed(t *testing.T) {
	closed := make(chan struct{})
	e := &hboneEndpoint{serve: func(n int, c net.Conn, br *bufio.Reader) {
		for readRequest(br) {
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			if n == 1 {
				// The first connection ends once idle (a keep-alive timeout); the client
				// could still write to it, but no answer would come.
				_ = c.(interface{ CloseWrite() error }).CloseWrite()
				close(closed)
				_, _ = io.Copy(io.Discard, c)
				return
			}
		}
	}}
	h := e.client(t)
	for i := range 2 {
		if i == 1 {
			<-closed
			waitClosedIdle(t, h)
		}
		// A POST is not sent again after a failure: it must not go to the closed connection.
		if status, body, err := fetch(h, newRequest(t, context.Background(), http.MethodPost), []byte("hello")); err != nil || body != "ok" {
			t.Fatalf("POST %d: got %d %q, %v; want 200 ok", i, status, body, err)
		}
	}
	if got := e.dials.Load(); got != 2 {
		t.Errorf("opened %d connections, want 2", got)
	}
}

// waitClosedIdle polls until the end of h's idle connection has reached it, as it
// would have long before the next request on a real endpoint.
func waitClosedIdle(t *testing.T, h *h1Client) {
	t.Helper()
	h.mu.Lock()
	var idle []*h1Conn
	for _, conns := range h.idle {
		idle = append(idle, conns...)
	}
	h.mu.Unlock()
	if len(idle) != 1 {
		t.Fatalf("%d idle connections, want 1", len(idle))
	}
	testwait.For(t, "the endpoint's end of the connection", 5*time.Second, func() bool { return !idle[0].stillOpen() })
}

func TestH1ClientSendsAgainOnlyWhatIsSafeToSendAgain(t *testing.T) {
	for _, tc := range []struct {
		method string
		header http.Header
		again  bool
	}{
		{method: http.MethodGet, again: true},
		{method: http.MethodHead, again: true},
		{method: http.MethodPost, again: false},
		{method: http.MethodPost, header: http.Header{"Idempotency-Key": {"42"}}, again: true},
	} {
		t.Run(tc.method+" "+strings.Join(tc.header["Idempotency-Key"], ""), func(t *testing.T) {
			e := &hboneEndpoint{serve: func(n int, c net.Conn, br *bufio.Reader) {
				for i := 0; readRequest(br); i++ {
					if n == 1 && i == 1 {
						closeWrite(c) // the first connection ends as the second request arrives
						return
					}
					_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
				}
			}}
			h := e.client(t)
			if _, _, err := fetch(h, newRequest(t, context.Background(), tc.method), nil); err != nil {
				t.Fatal(err)
			}
			req := newRequest(t, context.Background(), tc.method)
			for k, v := range tc.header {
				req.Header[k] = v
			}
			_, _, err := fetch(h, req, nil)
			if got := err == nil; got != tc.again {
				t.Errorf("second request on the closing connection: error %v; want it sent again on a new connection: %v", err, tc.again)
			}
		})
	}
}

func TestH1ClientPassesOnInformationalAnswers(t *testing.T) {
	e := &hboneEndpoint{serve: func(_ int, c net.Conn, br *bufio.Reader) {
		if readRequest(br) {
			_, _ = io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"+
				"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	}}
	h := e.client(t)
	var hints []string
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		Got1xxResponse: func(code int, header textproto.MIMEHeader) error {
			hints = append(hints, http.StatusText(code)+": "+header.Get("Link"))
			return nil
		},
	})
	status, body, err := fetch(h, newRequest(t, ctx, http.MethodGet), nil)
	if err != nil || status != http.StatusOK || body != "ok" {
		t.Fatalf("got %d %q, %v; want 200 ok", status, body, err)
	}
	if len(hints) != 1 || hints[0] != "Early Hints: </style.css>; rel=preload" {
		t.Errorf("informational answers passed on: %q, want the 103 with its Link", hints)
	}
}

func TestSendsDirect(t *testing.T) {
	body := []byte("hello")
	for _, tc := range []struct {
		name   string
		method string
		header http.Header
		body   []byte // in memory
		stream bool   // a body not in memory
		want   bool
	}{
		{name: "GET", method: http.MethodGet, want: true},
		{name: "POST in memory", method: http.MethodPost, body: body, want: true},
		{name: "POST streamed", method: http.MethodPost, stream: true, want: false},
		{name: "expects 100-continue", method: http.MethodPost, body: body, header: http.Header{"Expect": {"100-Continue"}}, want: false},
		{name: "upgrade", method: http.MethodGet, header: http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}}, want: false},
		{name: "CONNECT", method: http.MethodConnect, want: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, "http://10.0.0.1:8080/", nil)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.header {
				req.Header[k] = v
			}
			if tc.stream {
				req.Body = io.NopCloser(strings.NewReader("streamed"))
			}
			if got := sendsDirect(req, tc.body); got != tc.want {
				t.Errorf("sendsDirect = %v, want %v", got, tc.want)
			}
		})
	}
}

// FuzzH1ClientAnswer has an endpoint answer arbitrary bytes (as a broken or hostile
// upstream could): nothing may panic or hang, and the connection goes back to the pool
// only after an answer read to its end.
//
//	go test ./dataplane/waypoint -run '^$' -fuzz FuzzH1ClientAnswer -fuzztime 20s
func FuzzH1ClientAnswer(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-Checksum: 1\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n"))
	f.Add([]byte("HTTP/1.0 200 OK\r\n\r\nuntil close"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"))
	f.Fuzz(func(t *testing.T, answer []byte) {
		// net.Pipe connections: fast, and like HBONE streams they report the peer's end
		// before an expired deadline.
		h := newH1Client(func(context.Context, netip.AddrPort) (net.Conn, error) {
			client, server := net.Pipe()
			go func() {
				defer server.Close() // the answer ends with the connection
				if readRequest(bufio.NewReader(server)) {
					_, _ = server.Write(answer)
				}
			}()
			return client, nil
		}, 4, time.Minute)
		defer h.close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := h.send(newRequest(t, ctx, http.MethodGet), nil, nil)
		complete := err == nil
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			complete = err == nil
			resp.Body.Close()
		}
		if ctx.Err() != nil {
			t.Fatalf("the exchange hung: %v", err)
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		if idle := len(h.idle[netip.MustParseAddrPort("10.0.0.1:8080")]); idle > 0 && !complete {
			t.Errorf("the connection went back to the pool after an incomplete answer (%v)", err)
		}
	})
}

package waypoint

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"net/textproto"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// h1Client sends HTTP/1.1 requests to HBONE endpoints on the caller's goroutine: it
// writes the request with (*http.Request).Write, reads the answer with
// http.ReadResponse, and keeps idle connections per endpoint address. http.Transport
// runs a reader and a writer goroutine per connection, so each of its requests is
// handed from goroutine to goroutine several times; for the waypoint's common request
// (a small body already in memory, one answer) those hand-offs, and the Transport's
// bookkeeping around them, were the largest share of its CPU.
//
// It takes only the requests it carries exactly as the Transport would (see
// sendsDirect); the others go to the Transport of the same pool. Its connection reuse
// follows the Transport's rules: a connection is reused only after a complete answer
// with a known end, and neither side said "Connection: close"; an error or an answer
// abandoned halfway closes it; an idle connection the endpoint has closed is not used
// again; a request that failed on a reused connection before any answer came is sent
// once more on a new connection when the Transport would do so.
type h1Client struct {
	dial func(ctx context.Context, addr netip.AddrPort) (net.Conn, error)
	// maxIdle bounds the idle connections kept per address; idleTimeout closes those
	// idle for longer (as http.Transport's MaxIdleConnsPerHost and IdleConnTimeout).
	maxIdle     int
	idleTimeout time.Duration

	mu     sync.Mutex
	idle   map[netip.AddrPort][]*h1Conn
	closed bool
}

// maxResponseHeaderBytes bounds the response headers read from an endpoint, as
// http.Transport's default MaxResponseHeaderBytes does.
const maxResponseHeaderBytes = 10 << 20

func newH1Client(dial func(context.Context, netip.AddrPort) (net.Conn, error), maxIdle int, idleTimeout time.Duration) *h1Client {
	return &h1Client{dial: dial, maxIdle: maxIdle, idleTimeout: idleTimeout, idle: map[netip.AddrPort][]*h1Conn{}}
}

// sendsDirect says whether the h1Client can carry the HTTP/1.1 request out; body is its
// whole body when that is in memory (nil: no body, or one not in memory). Requests that
// need more than one write followed by one read go to http.Transport: bodies streamed
// or of unknown length (body nil while out has one), and those oneExchange refuses.
func sendsDirect(out *http.Request, body []byte) bool {
	hasBody := out.Body != nil && out.Body != http.NoBody
	return (body != nil || !hasBody) && oneExchange(out)
}

// oneExchange says whether the request is one write and one read on its connection:
// not "Expect: 100-continue" (the body waits for the endpoint), an upgrade or CONNECT
// (the connection becomes a tunnel).
func oneExchange(r *http.Request) bool {
	return r.Method != http.MethodConnect &&
		r.Header.Get("Upgrade") == "" &&
		!strings.EqualFold(r.Header.Get("Expect"), "100-continue")
}

// interimSink receives the informational (1xx) answers that come before the final one.
type interimSink interface {
	interim(code int, header http.Header) error
}

// send sends req, whose whole body is body (nil: none), to the endpoint req.URL.Host
// and returns its answer (see sendTo).
func (h *h1Client) send(req *http.Request, body []byte, interim interimSink) (*http.Response, error) {
	addr, err := netip.ParseAddrPort(req.URL.Host)
	if err != nil {
		return nil, fmt.Errorf("endpoint address %q: %w", req.URL.Host, err)
	}
	return h.sendTo(req.Context(), addr, req, body, interim)
}

// sendTo sends req, whose whole body is body (nil: none; req.Body is not read), to the
// endpoint addr (req.URL is not used for it) and returns its answer. The answer's body
// must be read to its end or closed. Cancelling ctx ends the exchange at any point, as
// a request's context does with http.Transport. Informational answers go to interim,
// or when it is nil to ctx's httptrace.ClientTrace, if any.
func (h *h1Client) sendTo(ctx context.Context, addr netip.AddrPort, req *http.Request, body []byte, interim interimSink) (*http.Response, error) {
	for first := true; ; first = false {
		c, reused, err := h.conn(ctx, addr, !first)
		if err != nil {
			return nil, err
		}
		resp, err := h.exchange(ctx, c, addr, req, body, interim)
		if err == nil {
			return resp, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !first || !reused || !sendAgain(req, err) {
			return nil, err
		}
	}
}

// conn returns an idle connection to addr that is still open, or a new one (always
// when fresh).
func (h *h1Client) conn(ctx context.Context, addr netip.AddrPort, fresh bool) (c *h1Conn, reused bool, err error) {
	now := time.Now()
	for !fresh {
		h.mu.Lock()
		idle := h.idle[addr]
		if len(idle) == 0 {
			h.mu.Unlock()
			break
		}
		c = idle[len(idle)-1] // the most recently used, as http.Transport does
		idle[len(idle)-1] = nil
		h.idle[addr] = idle[:len(idle)-1]
		h.mu.Unlock()
		if c.claim() && now.Sub(c.idleSince) < h.idleTimeout && c.stillOpen() {
			return c, true, nil
		}
		c.conn.Close()
	}
	conn, err := h.dial(ctx, addr)
	if err != nil {
		return nil, false, err
	}
	c = &h1Conn{conn: conn}
	c.br = bufio.NewReader(c)
	c.bw = bufio.NewWriter(c)
	c.bodyReader = io.NopCloser(&c.body) // a body net/http knows to be in memory
	return c, false, nil
}

// exchange writes req with body on c and reads its answer. On an error c is closed.
func (h *h1Client) exchange(ctx context.Context, c *h1Conn, addr netip.AddrPort, req *http.Request, body []byte, interim interimSink) (*http.Response, error) {
	// A blocked write or read returns once the context ends: the connection closes.
	stop := context.AfterFunc(ctx, func() { c.conn.Close() })
	fail := func(err error) (*http.Response, error) {
		stop()
		c.conn.Close()
		return nil, err
	}
	c.written = 0
	if err := c.write(req, body); err != nil {
		return fail(err)
	}
	if err := c.bw.Flush(); err != nil {
		return fail(err)
	}
	c.readLimit = maxResponseHeaderBytes
	if _, err := c.br.Peek(1); err != nil {
		return fail(&nothingReadError{err: err})
	}
	var resp *http.Response
	for {
		var err error
		resp, err = http.ReadResponse(c.br, req)
		if err != nil {
			return fail(err)
		}
		if resp.StatusCode < 100 || resp.StatusCode > 199 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
		// An informational answer: passed on as http.Transport does (the proxy
		// forwards it to the client), and the final answer follows.
		passed, err := passInterim(ctx, interim, resp)
		if err != nil {
			return fail(err)
		}
		if passed {
			c.readLimit = maxResponseHeaderBytes
		}
	}
	c.readLimit = math.MaxInt64
	// A 101 answer to a request that asked for no upgrade leaves the connection in an
	// unknown state: the reverse proxy refuses it, and the connection is not reused.
	reusable := !resp.Close && !req.Close && resp.StatusCode != http.StatusSwitchingProtocols
	b := &h1Body{ReadCloser: resp.Body, client: h, addr: addr, conn: c, stop: stop, reusable: reusable}
	if resp.Body == http.NoBody {
		b.release(true)
		return resp, nil
	}
	resp.Body = b
	return resp, nil
}

// passInterim hands an informational answer to interim, or to the context's trace;
// passed is false when neither takes it.
func passInterim(ctx context.Context, interim interimSink, resp *http.Response) (passed bool, err error) {
	if interim != nil {
		return true, interim.interim(resp.StatusCode, resp.Header)
	}
	if trace := httptrace.ContextClientTrace(ctx); trace != nil && trace.Got1xxResponse != nil {
		return true, trace.Got1xxResponse(resp.StatusCode, textproto.MIMEHeader(resp.Header))
	}
	return false, nil
}

// sendAgain says whether req, which failed with err on a reused connection, may be sent
// again on a new one, by http.Transport's rules: when nothing of it was written, or
// when the endpoint closed the connection before answering and the request is
// idempotent (GET, HEAD, OPTIONS, TRACE, or an Idempotency-Key header).
func sendAgain(req *http.Request, err error) bool {
	var nothingRead *nothingReadError
	switch {
	case errors.As(err, new(*nothingWrittenError)):
		return true
	case !errors.As(err, &nothingRead):
		return false
	}
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, key := req.Header["Idempotency-Key"]
	_, xkey := req.Header["X-Idempotency-Key"]
	return key || xkey
}

// put keeps c for the next request to addr, or closes it when enough are idle.
func (h *h1Client) put(addr netip.AddrPort, c *h1Conn) {
	c.idleSince = time.Now()
	// Idle before the connection is in the list, where another request may take it.
	if cc, ok := c.conn.(*countedConn); ok {
		cc.slot.Idle(cc)
	}
	h.mu.Lock()
	if h.closed || len(h.idle[addr]) >= h.maxIdle {
		h.mu.Unlock()
		c.conn.Close()
		return
	}
	h.idle[addr] = append(h.idle[addr], c)
	h.mu.Unlock()
}

// claim takes an idle connection back from its cluster's accounting: false when the
// cluster closed it to make room for another request (see upstream.ConnSlot).
func (c *h1Conn) claim() bool {
	cc, ok := c.conn.(*countedConn)
	return !ok || cc.slot.Claim()
}

// closeIdle closes the connections idle since before t.
func (h *h1Client) closeIdle(t time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for addr, idle := range h.idle {
		kept := idle[:0]
		for _, c := range idle {
			if c.idleSince.Before(t) {
				c.conn.Close()
			} else {
				kept = append(kept, c)
			}
		}
		clear(idle[len(kept):])
		if len(kept) == 0 {
			delete(h.idle, addr)
		} else {
			h.idle[addr] = kept
		}
	}
}

// close closes the idle connections, and those that become idle later.
func (h *h1Client) close() {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	h.closeIdle(time.Now().Add(time.Hour))
}

// h1Conn is one upstream connection with its buffers. It sits under them to bound the
// response headers and to count what the request wrote.
type h1Conn struct {
	conn      net.Conn
	br        *bufio.Reader
	bw        *bufio.Writer
	readLimit int64 // bytes the response headers may still take
	written   int64 // bytes of the current request written to conn
	idleSince time.Time
	// body reads the request body being written; bodyReader is it as a Request.Body,
	// made once per connection rather than per request.
	body       bytes.Reader
	bodyReader io.ReadCloser
}

func (c *h1Conn) Read(p []byte) (int, error) {
	if c.readLimit <= 0 {
		return 0, errors.New("upstream response headers exceed 10 MiB")
	}
	if int64(len(p)) > c.readLimit {
		p = p[:c.readLimit]
	}
	n, err := c.conn.Read(p)
	c.readLimit -= int64(n)
	return n, err
}

func (c *h1Conn) Write(p []byte) (int, error) {
	n, err := c.conn.Write(p)
	c.written += int64(n)
	if err != nil && c.written == 0 {
		err = &nothingWrittenError{err: err}
	}
	return n, err
}

// write writes req with body (req.Body is set for the write only, to the connection's
// reusable reader, and restored).
func (c *h1Conn) write(req *http.Request, body []byte) error {
	saved := req.Body
	req.Body = nil
	if body != nil {
		c.body.Reset(body)
		req.Body = c.bodyReader
	}
	err := req.Write(c.bw)
	req.Body = saved
	c.body.Reset(nil) // keeps no reference to body
	return err
}

// longAgo is a deadline that has passed.
var longAgo = time.Unix(1, 0)

// stillOpen says whether an idle connection can take a request: the endpoint has not
// closed it and sent nothing since the last answer. HBONE streams answer a read whose
// deadline has passed from what they received, without waiting, so this costs no
// system call.
func (c *h1Conn) stillOpen() bool {
	if c.br.Buffered() > 0 {
		return false
	}
	if c.conn.SetReadDeadline(longAgo) != nil {
		return false // closed
	}
	_, err := c.br.Peek(1)
	return errors.Is(err, os.ErrDeadlineExceeded) && c.conn.SetReadDeadline(time.Time{}) == nil
}

// h1Body is an answer's body: at its end the connection goes back to the pool when it
// can be reused; closed before its end, or failed, the connection closes.
type h1Body struct {
	io.ReadCloser
	client   *h1Client
	addr     netip.AddrPort
	conn     *h1Conn
	stop     func() bool // stops closing the connection when the context ends
	reusable bool
	released atomic.Bool
}

func (b *h1Body) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.release(err == io.EOF)
	}
	return n, err
}

// Close closes the connection first when the body was not read to its end: closing
// a body of http.ReadResponse reads what is left, which could wait for a long stream.
func (b *h1Body) Close() error {
	b.release(false)
	return b.ReadCloser.Close()
}

// release hands the connection back after a complete answer (complete), or closes it.
func (b *h1Body) release(complete bool) {
	if b.released.Swap(true) {
		return
	}
	// stop fails when the context ended and the connection is closing.
	if b.stop() && complete && b.reusable {
		b.client.put(b.addr, b.conn)
		return
	}
	b.conn.conn.Close()
}

// nothingWrittenError: the request failed before any of it reached the connection.
type nothingWrittenError struct{ err error }

func (e *nothingWrittenError) Error() string { return e.err.Error() }
func (e *nothingWrittenError) Unwrap() error { return e.err }

// nothingReadError: the connection failed or closed before any byte of the answer.
type nothingReadError struct{ err error }

func (e *nothingReadError) Error() string {
	return "upstream closed the connection before answering: " + e.err.Error()
}
func (e *nothingReadError) Unwrap() error { return e.err }

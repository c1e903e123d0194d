package hbone

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/ambientmesh/ambient-operator/internal/spiffe"
)

// Stream is the server end of one tunneled stream, a net.Conn whose remote
// is the HBONE client and whose local address is the requested target.
//
// Close resets the stream (RST_STREAM): the ztunnel uses it when a policy
// change denies an open connection. CloseWrite ends the response stream (the
// client reads EOF) while the client's upload goes on being readable, so TCP
// half-close crosses the tunnel both ways. Deadlines behave as in net.Conn,
// except that a Write blocked on the TCP connection itself (not on flow
// control) waits for it.
type Stream struct {
	st     *h2stream
	req    *Request
	target net.Addr

	mu       sync.Mutex
	answered bool // 200 or a refusal was sent
}

func newStream(st *h2stream, req *Request) *Stream {
	return &Stream{st: st, req: req, target: net.TCPAddrFromAddrPort(req.Target)}
}

// accept answers 200.
func (s *Stream) accept() (*Stream, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.answered {
		return nil, errors.New("hbone: Accept called twice, or after the stream was answered")
	}
	sess := s.st.s
	sess.mu.Lock()
	err := s.st.writableLocked()
	if err == nil {
		s.st.responded = true
	}
	sess.mu.Unlock()
	if err != nil {
		return nil, ErrStreamClosed
	}
	s.answered = true
	err = sess.write(func() error {
		return sess.writeHeadersLocked(s.st.id, false, []hpack.HeaderField{{Name: ":status", Value: "200"}})
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// finish runs when the handler returned: it answers a refusal, or ends the
// stream (cleanly after a nil error, with a reset after an error).
func (s *Stream) finish(handlerErr error) {
	s.mu.Lock()
	answered := s.answered
	s.answered = true
	s.mu.Unlock()
	if !answered {
		if handlerErr == nil {
			handlerErr = Reject(http.StatusInternalServerError, "handler neither accepted nor refused the stream")
		}
		refuse(s.st, StatusCode(handlerErr), refusalReason(handlerErr))
		return
	}
	if handlerErr != nil {
		s.st.reset(http2.ErrCodeCancel, nil)
		return
	}
	_ = s.st.CloseWrite()
	s.st.stopUpload()
}

// stopUpload ends a stream whose response is complete: RST_STREAM(NO_ERROR)
// tells a client still uploading that nothing more is read (RFC 9113 §8.1).
func (st *h2stream) stopUpload() {
	sess := st.s
	sess.mu.Lock()
	uploading := !st.remoteEnd && st.err == nil && !st.closed
	sess.mu.Unlock()
	if uploading {
		st.reset(http2.ErrCodeNo, nil)
		return
	}
	sess.forget(st)
}

// refusalReason is what a refusal's body says: a *StatusError's own reason
// (the client adds the status again), any other error whole.
func refusalReason(err error) string {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Reason
	}
	return err.Error()
}

// refuse answers code with reason as a short text body, and ends the stream.
func refuse(st *h2stream, code int, reason string) {
	if len(reason) > maxReasonLen {
		reason = reason[:maxReasonLen]
	}
	fields := []hpack.HeaderField{
		{Name: ":status", Value: strconv.Itoa(code)},
		{Name: "content-type", Value: "text/plain; charset=utf-8"},
	}
	if code == http.StatusMethodNotAllowed {
		fields = append(fields, hpack.HeaderField{Name: "allow", Value: http.MethodConnect})
	}
	sess := st.s
	sess.mu.Lock()
	st.localEnd = true
	st.responded = true
	sess.mu.Unlock()
	_ = sess.write(func() error {
		if err := sess.writeHeadersLocked(st.id, false, fields); err != nil {
			return err
		}
		return sess.fr.WriteData(st.id, true, []byte(reason))
	})
	st.stopUpload()
}

// Read reads what the client sent.
func (s *Stream) Read(p []byte) (int, error) {
	n, err := s.st.Read(p)
	return n, s.mapErr(err)
}

func (s *Stream) writeTo(dst io.Writer, count *atomic.Int64) error {
	return s.mapErr(s.st.writeTo(dst, count))
}

// Write sends p to the client.
func (s *Stream) Write(p []byte) (int, error) {
	s.mu.Lock()
	answered := s.answered
	s.mu.Unlock()
	if !answered {
		return 0, errors.New("hbone: Write before Accept")
	}
	n, err := s.st.Write(p)
	return n, s.mapErr(err)
}

func (s *Stream) mapErr(err error) error {
	if err == nil || err == io.EOF || errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, net.ErrClosed) {
		return err
	}
	return fmt.Errorf("hbone: stream from %s: %w", s.req.Peer, err)
}

// CloseWrite ends the response stream: the client reads EOF after the data
// written so far; its upload stays readable.
func (s *Stream) CloseWrite() error { return s.mapErr(s.st.CloseWrite()) }

// Close resets the stream unless it already ended, unblocking Read and Write.
func (s *Stream) Close() error { return s.st.Close() }

// Peer is the client's verified identity.
func (s *Stream) Peer() spiffe.ID { return s.req.Peer }

// LocalAddr is the target the client asked for.
func (s *Stream) LocalAddr() net.Addr { return s.target }

// RemoteAddr is the HBONE client's TCP address.
func (s *Stream) RemoteAddr() net.Addr { return s.req.RemoteAddr }

// SetDeadline sets both deadlines.
func (s *Stream) SetDeadline(t time.Time) error {
	s.st.setReadDeadline(t)
	return s.SetWriteDeadline(t)
}

// SetReadDeadline makes a blocked or later Read return os.ErrDeadlineExceeded
// after t; no data is lost.
func (s *Stream) SetReadDeadline(t time.Time) error { s.st.setReadDeadline(t); return nil }

// SetWriteDeadline makes later Writes fail after t, and resets the stream if
// a Write is waiting for flow control when t passes.
func (s *Stream) SetWriteDeadline(t time.Time) error { s.st.setWriteDeadline(t); return nil }

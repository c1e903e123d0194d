package hbone

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/ambientmesh/ambient-operator/internal/spiffe"
)

// Stream is the server end of one tunneled stream, a net.Conn whose remote
// is the HBONE client and whose local address is the requested target.
//
// Close resets the stream (RST_STREAM): the ztunnel uses it when a policy
// change denies an open connection. CloseWrite ends the response stream
// (the client reads EOF). x/net/http2 cannot keep reading a stream after
// its response has ended, so after CloseWrite the client's further upload is
// discarded and Read returns io.EOF. Read deadlines behave as in net.Conn; a
// write deadline that passes during a blocked Write resets the stream.
type Stream struct {
	w      http.ResponseWriter
	rc     *http.ResponseController
	req    *Request
	rd     *deadlineReader
	wdl    *deadline
	target net.Addr

	wmu      sync.Mutex // serializes Write (and waits for it in Close/finish)
	mu       sync.Mutex // guards the fields below and every use of rc
	state    streamState
	ended    chan struct{} // closed by CloseWrite/Close: the handler must return now
	accepted bool          // 200 was sent (or is being flushed)
	answered chan struct{} // closed once the 200 is flushed
	done     bool          // serveHTTP returned: w and rc are dead
}

type streamState int

const (
	streamNew streamState = iota
	streamAccepted
	streamWriteClosed
	streamClosed
)

func newStream(w http.ResponseWriter, r *http.Request, req *Request) *Stream {
	st := &Stream{
		w:      w,
		rc:     http.NewResponseController(w),
		req:    req,
		rd:     newDeadlineReader(r.Body),
		target: net.TCPAddrFromAddrPort(req.Target),
		ended:  make(chan struct{}),
	}
	st.wdl = newDeadline(st.onWriteDeadline)
	return st
}

// accept answers 200. The answer is flushed on another goroutine while the
// caller goes on: x/net/http2 returns from a flush only once the frame is
// written, and the client's first bytes (sent with its CONNECT) should not
// wait for that on their way to the upstream. wmu is held until the 200 is
// out, so Write, CloseWrite and Close come after it.
func (s *Stream) accept() (*Stream, error) {
	s.wmu.Lock()
	s.mu.Lock()
	var err error
	switch {
	case s.done:
		err = ErrStreamClosed
	case s.accepted:
		err = errors.New("hbone: Accept called twice")
	case s.state != streamNew:
		err = ErrStreamClosed
	}
	if err != nil {
		s.mu.Unlock()
		s.wmu.Unlock()
		return nil, err
	}
	s.w.WriteHeader(http.StatusOK) // recorded only: x/net writes it at the flush
	s.state = streamAccepted
	s.accepted = true
	s.answered = make(chan struct{})
	s.mu.Unlock()
	go func() {
		_ = s.rc.Flush() // a failure fails the stream's later reads and writes too
		s.wmu.Unlock()   // before answered: finish reads a held wmu as a Write in progress
		close(s.answered)
	}()
	return s, nil
}

// finish runs when the handler returned (or the stream ended early): it
// answers a refusal or ends/resets the stream, then marks w unusable.
func (s *Stream) finish(handlerErr error) {
	s.mu.Lock()
	answered := s.answered
	s.mu.Unlock()
	if answered != nil {
		<-answered // the 200's flush uses w
	}
	s.mu.Lock()
	if !s.accepted {
		if handlerErr == nil {
			handlerErr = Reject(http.StatusInternalServerError, "handler neither accepted nor refused the stream")
		}
		writeRefusal(s.w, StatusCode(handlerErr), handlerErr.Error())
		s.done = true
		s.mu.Unlock()
		return
	}
	if handlerErr != nil && s.state == streamAccepted {
		s.resetLocked()
	}
	s.mu.Unlock()
	if !s.wmu.TryLock() {
		// A Write still runs on some goroutine: unblock it before w dies.
		s.mu.Lock()
		s.resetLocked()
		s.mu.Unlock()
		s.wmu.Lock()
	}
	s.mu.Lock()
	s.done = true
	s.mu.Unlock()
	s.wmu.Unlock()
}

// resetLocked sends RST_STREAM and fails blocked reads and writes. Setting
// deadlines in the past is the one x/net/http2 API that resets a stream from
// outside the handler's return.
func (s *Stream) resetLocked() {
	past := time.Unix(1, 0)
	s.rc.SetWriteDeadline(past)
	s.rc.SetReadDeadline(past)
}

// Read reads what the client sent.
func (s *Stream) Read(p []byte) (int, error) {
	n, err := s.rd.Read(p)
	return n, s.mapReadErr(err)
}

func (s *Stream) readDirect(p []byte) (int, error) {
	n, err := s.rd.readDirect(p)
	return n, s.mapReadErr(err)
}

func (s *Stream) mapReadErr(err error) error {
	if err == nil || err == io.EOF {
		return err
	}
	s.mu.Lock()
	state := s.state
	s.mu.Unlock()
	switch {
	case state == streamWriteClosed:
		return io.EOF // our own CloseWrite ended the stream; see the type doc
	case state == streamClosed:
		return ErrStreamClosed
	case errors.Is(err, os.ErrDeadlineExceeded):
		return err
	}
	return fmt.Errorf("hbone: stream from %s: %w", s.req.Peer, err)
}

// Write sends p to the client and flushes it.
func (s *Stream) Write(p []byte) (int, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.writable(); err != nil {
		return 0, err
	}
	n, err := s.w.Write(p)
	if err == nil {
		err = s.rc.Flush()
	}
	if err != nil {
		if e := s.writable(); e != nil {
			return n, e
		}
		return n, fmt.Errorf("hbone: stream to %s: %w", s.req.Peer, err)
	}
	return n, nil
}

func (s *Stream) writable() error {
	if isClosed(s.wdl.wait()) {
		return os.ErrDeadlineExceeded
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.state == streamNew:
		return errors.New("hbone: Write before Accept")
	case s.state == streamWriteClosed:
		return fmt.Errorf("hbone: write after CloseWrite: %w", net.ErrClosed)
	case s.state == streamClosed || s.done:
		return ErrStreamClosed
	}
	return nil
}

func (s *Stream) onWriteDeadline() {
	if s.wmu.TryLock() {
		s.wmu.Unlock()
		return
	}
	s.mu.Lock()
	if !s.done && s.state == streamAccepted {
		s.resetLocked()
	}
	s.mu.Unlock()
}

// CloseWrite ends the response stream: the client reads EOF after the data
// written so far. See the type doc for what happens to the upload.
func (s *Stream) CloseWrite() error {
	s.wmu.Lock()
	s.mu.Lock()
	if s.state != streamAccepted || s.done {
		s.mu.Unlock()
		s.wmu.Unlock()
		return nil
	}
	s.state = streamWriteClosed
	s.mu.Unlock()
	// Release wmu before waking serveHTTP: finish treats a held wmu as a
	// Write in progress and would reset the stream.
	s.wmu.Unlock()
	s.signalEnded()
	return nil
}

func (s *Stream) signalEnded() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !isClosed(s.ended) {
		close(s.ended)
	}
}

// Close resets the stream unless it already ended, unblocking Read and Write.
func (s *Stream) Close() error {
	s.mu.Lock()
	if s.state == streamClosed || s.done {
		s.mu.Unlock()
		return nil
	}
	wasOpen := s.state == streamAccepted
	s.state = streamClosed
	if wasOpen {
		s.resetLocked()
	}
	s.mu.Unlock()
	// Wait for a Write in progress (now failing) before letting the
	// handler's return end the stream.
	s.wmu.Lock()
	s.wmu.Unlock()
	s.signalEnded()
	return nil
}

// Peer is the client's verified identity.
func (s *Stream) Peer() spiffe.ID { return s.req.Peer }

// LocalAddr is the target the client asked for.
func (s *Stream) LocalAddr() net.Addr { return s.target }

// RemoteAddr is the HBONE client's TCP address.
func (s *Stream) RemoteAddr() net.Addr { return s.req.RemoteAddr }

// SetDeadline sets both deadlines.
func (s *Stream) SetDeadline(t time.Time) error {
	s.SetReadDeadline(t)
	return s.SetWriteDeadline(t)
}

// SetReadDeadline makes a blocked or later Read return os.ErrDeadlineExceeded
// after t; no data is lost. Reads become deadline-aware from the first call
// on (a Read already blocked before it is not interrupted), which keeps
// deadline-free readers on the fast path.
func (s *Stream) SetReadDeadline(t time.Time) error { s.rd.setDeadline(t); return nil }

// SetWriteDeadline makes later Writes fail after t, and resets the stream if
// a Write is blocked when t passes.
func (s *Stream) SetWriteDeadline(t time.Time) error { s.wdl.set(t); return nil }

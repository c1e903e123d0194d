package hbone

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/http2"
)

// h2stream is one HTTP/2 stream of a session: the byte stream both Conn (client
// end) and Stream (server end) are built on. Received DATA waits in recv until
// read; writes wait for send window and write their DATA frames themselves.
type h2stream struct {
	s  *session
	id uint32

	rmu sync.Mutex // serializes readers
	wmu sync.Mutex // serializes writers (DATA order)
	rdl *deadline
	wdl *deadline

	readable chan struct{} // cap 1: recv, remoteEnd or err changed
	answered chan struct{} // client: closed at the response HEADERS (or failure)

	// Guarded by s.mu.
	recv       recvQueue
	parked     *directSink // writeTo waits with nothing queued: DATA may go straight to its destination
	recvWin    int32       // what the peer may still send
	pendingAck int32       // consumed, not yet returned in a WINDOW_UPDATE
	sendWin    int64
	remoteEnd  bool               // END_STREAM received
	localEnd   bool               // END_STREAM sent
	closed     bool               // Close called
	responded  bool               // server: the response HEADERS were sent
	err        error              // reset (by either side) or connection lost
	status     int                // client: the response status
	cancel     context.CancelFunc // server: ends the request's context
}

func newH2Stream(s *session, id uint32) *h2stream {
	st := &h2stream{
		s: s, id: id,
		readable: make(chan struct{}, 1),
		answered: make(chan struct{}),
		recvWin:  s.cfg.streamWin,
		sendWin:  int64(s.peerInitWin),
	}
	st.rdl = newDeadline()
	st.wdl = newDeadline()
	return st
}

func (st *h2stream) wakeReader() {
	select {
	case st.readable <- struct{}{}:
	default:
	}
}

// appendLocked takes a DATA frame's payload; n is its flow-controlled
// length. finished says both sides have now ended the stream; direct is how
// much of data went straight to the destination of a waiting writeTo (it
// releases s.mu meanwhile: only the reading goroutine calls this).
func (st *h2stream) appendLocked(data []byte, n int32, end bool) (finished bool, direct int, err error) {
	if st.remoteEnd {
		return false, 0, http2.StreamError{StreamID: st.id, Code: http2.ErrCodeStreamClosed}
	}
	if n > st.recvWin {
		return false, 0, http2.StreamError{StreamID: st.id, Code: http2.ErrCodeFlowControl}
	}
	st.recvWin -= n
	if st.closed || st.err != nil {
		return false, 0, errDiscarded // nobody reads any more: the caller returns the window
	}
	if sink := st.parked; sink != nil && st.recv.len() == 0 && len(data) > 0 {
		// The copy loop is idle: writing here saves waking it, which is
		// most of a small message's latency. Nothing else writes to the
		// destination meanwhile: the loop only writes what is queued.
		st.s.mu.Unlock()
		direct = sink.tryWrite(data)
		st.s.mu.Lock()
		data = data[direct:]
		if st.closed || st.err != nil {
			return false, direct, errDiscarded
		}
	}
	if len(data) > 0 {
		st.recv.push(data)
	}
	st.remoteEnd = end
	if len(data) > 0 || end {
		st.wakeReader()
	}
	return end && st.localEnd, direct, nil
}

// directSink is the destination of a writeTo, written without blocking by
// the session's reading goroutine while writeTo waits.
type directSink struct {
	rc    syscall.RawConn
	count *atomic.Int64
}

// tryWrite writes what the socket takes now, without waiting.
func (k *directSink) tryWrite(p []byte) int {
	n := 0
	_ = k.rc.Write(func(fd uintptr) bool {
		if w, err := syscall.Write(int(fd), p); err == nil && w > 0 {
			n = w
		}
		return true // never wait in the poller: the rest is queued
	})
	k.count.Add(int64(n))
	return n
}

var errDiscarded = errors.New("hbone: data for a closed stream discarded")

// headers takes the HEADERS of an open stream: the client's response, or
// trailers (which only end the stream).
func (st *h2stream) headers(f *http2.MetaHeadersFrame) {
	s := st.s
	s.mu.Lock()
	if !s.cfg.server && st.status == 0 {
		code, err := strconv.Atoi(f.PseudoValue("status"))
		if err != nil || code < 100 || code > 999 {
			s.mu.Unlock()
			s.resetByUs(st.id, http2.ErrCodeProtocol)
			return
		}
		if code < 200 {
			s.mu.Unlock()
			return // informational; the final answer follows
		}
		st.status = code
		st.answeredLocked() // (already closed if the stream was closed meanwhile)
	}
	finished := false
	if f.StreamEnded() && !st.remoteEnd {
		st.remoteEnd = true
		finished = st.localEnd
		st.wakeReader()
	}
	s.mu.Unlock()
	if finished {
		s.forget(st)
	}
}

// fail ends the stream with err (a reset by the peer, a protocol error, the
// connection lost). Data already received stays readable only when the peer
// had ended its side cleanly.
func (st *h2stream) fail(err error) {
	s := st.s
	s.mu.Lock()
	if st.err == nil {
		st.err = err
	}
	var se http2.StreamError
	keep := st.remoteEnd && errors.As(err, &se) && se.Code == http2.ErrCodeNo
	if unread := st.stopLocked(!keep); unread > 0 {
		s.consumed(nil, unread, true) // fail may run on the reading goroutine
	}
	s.forget(st)
}

// stopLocked wakes whoever waits on a stream that failed or closed (a reader,
// Dial waiting for the answer, writers waiting for window, the request's
// context), drops the data not read yet if drop is set, and unlocks s.mu. It
// returns how much it dropped: window to give back.
func (st *h2stream) stopLocked(drop bool) (unread int32) {
	if drop {
		unread = int32(st.recv.len())
		st.recv.drop()
	}
	st.answeredLocked()
	if st.cancel != nil {
		st.cancel()
	}
	st.s.windowsChangedLocked()
	st.s.mu.Unlock()
	st.wakeReader()
	return unread
}

func (st *h2stream) answeredLocked() {
	select {
	case <-st.answered:
	default:
		close(st.answered)
	}
}

// Read reads what the peer sent.
func (st *h2stream) Read(p []byte) (int, error) {
	st.rmu.Lock()
	defer st.rmu.Unlock()
	s := st.s
	for {
		s.mu.Lock()
		if st.closed {
			s.mu.Unlock()
			return 0, ErrStreamClosed
		}
		if st.recv.len() > 0 {
			n := st.recv.read(p)
			s.mu.Unlock()
			s.consumed(st, int32(n), false)
			return n, nil
		}
		if err := st.readEndLocked(); err != nil {
			s.mu.Unlock()
			return 0, err
		}
		s.mu.Unlock()
		if err := st.waitReadable(); err != nil {
			return 0, err
		}
	}
}

// readEndLocked is io.EOF after the peer's END_STREAM, the stream's error
// after a reset, nil while more may come.
func (st *h2stream) readEndLocked() error {
	switch {
	case st.remoteEnd:
		return io.EOF
	case st.err != nil:
		return st.err
	}
	return nil
}

func (st *h2stream) waitReadable() error {
	expired := st.rdl.wait()
	if isClosed(expired) {
		return os.ErrDeadlineExceeded
	}
	select {
	case <-st.readable:
		return nil
	case <-expired:
		return os.ErrDeadlineExceeded
	}
}

// writeTo copies what the peer sends to dst until END_STREAM (nil) or an
// error. The received chunks themselves are written (no copy), all that is
// queued at once.
func (st *h2stream) writeTo(dst io.Writer, count *atomic.Int64) error {
	st.rmu.Lock()
	defer st.rmu.Unlock()
	var sink *directSink
	if sc, ok := dst.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			sink = &directSink{rc: rc, count: count}
		}
	}
	s := st.s
	defer func() {
		s.mu.Lock()
		st.parked = nil
		s.mu.Unlock()
	}()
	for {
		s.mu.Lock()
		st.parked = nil
		if st.closed {
			s.mu.Unlock()
			return ErrStreamClosed
		}
		if st.recv.len() > 0 {
			queued := st.recv.take()
			s.mu.Unlock()
			size := queued.len()
			n, err := queued.writeTo(dst)
			count.Add(n)
			s.consumed(st, int32(size), false)
			if err != nil {
				return err
			}
			continue
		}
		err := st.readEndLocked()
		if err == nil {
			st.parked = sink
		}
		s.mu.Unlock()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := st.waitReadable(); err != nil {
			return err
		}
	}
}

// Write sends p as DATA frames, as the send windows allow. The frames for
// all the window available at once leave in one write(2).
func (st *h2stream) Write(p []byte) (int, error) {
	st.wmu.Lock()
	defer st.wmu.Unlock()
	written := 0
	for len(p) > 0 {
		n, frameSize, err := st.awaitSendWindow(len(p))
		if err != nil {
			return written, err
		}
		err = st.s.write(func() error {
			for chunk := p[:n]; len(chunk) > 0; {
				size := min(len(chunk), frameSize)
				if err := st.s.fr.WriteData(st.id, false, chunk[:size]); err != nil {
					return err
				}
				chunk = chunk[size:]
			}
			return nil
		})
		if err != nil {
			return written, fmt.Errorf("hbone: stream %d: %w", st.id, err)
		}
		written += n
		p = p[n:]
	}
	return written, nil
}

// awaitSendWindow reserves up to want bytes of send window, and says how
// large the frames carrying them may be.
func (st *h2stream) awaitSendWindow(want int) (n, frameSize int, err error) {
	s := st.s
	for {
		expired := st.wdl.wait()
		s.mu.Lock()
		if err := st.writableLocked(); err != nil {
			s.mu.Unlock()
			return 0, 0, err
		}
		if isClosed(expired) {
			s.mu.Unlock()
			return 0, 0, os.ErrDeadlineExceeded
		}
		if n := min(int64(want), st.sendWin, s.sendWin); n > 0 {
			st.sendWin -= n
			s.sendWin -= n
			frameSize := min(maxDataFrame, int(s.peerMaxFrame))
			s.mu.Unlock()
			return int(n), frameSize, nil
		}
		changed := s.winChanged
		s.mu.Unlock()
		select {
		case <-changed:
		case <-expired:
			// Blocked past the write deadline: as with crypto/tls, the
			// stream cannot be resumed, so it is reset.
			st.reset(http2.ErrCodeCancel, os.ErrDeadlineExceeded)
			return 0, 0, os.ErrDeadlineExceeded
		}
	}
}

func (st *h2stream) writableLocked() error {
	switch {
	case st.closed:
		return ErrStreamClosed
	case st.localEnd:
		return fmt.Errorf("hbone: write after CloseWrite: %w", net.ErrClosed)
	case st.err != nil:
		var se http2.StreamError
		if errors.As(st.err, &se) && st.remoteEnd {
			return fmt.Errorf("hbone: stream was closed by the peer: %w", net.ErrClosed)
		}
		return st.err
	}
	return nil
}

// CloseWrite sends END_STREAM: the peer reads EOF; reading goes on.
func (st *h2stream) CloseWrite() error {
	st.wmu.Lock()
	defer st.wmu.Unlock()
	s := st.s
	s.mu.Lock()
	if st.localEnd || st.closed || st.err != nil {
		s.mu.Unlock()
		return nil
	}
	st.localEnd = true
	finished := st.remoteEnd
	s.mu.Unlock()
	err := s.write(func() error { return s.fr.WriteData(st.id, true, nil) })
	if finished {
		s.forget(st)
	}
	return err
}

// Close resets the stream unless both sides already ended it, and fails
// blocked reads and writes.
func (st *h2stream) Close() error {
	st.reset(http2.ErrCodeCancel, nil)
	return nil
}

// reset closes the stream locally, sending RST_STREAM(code) if it is still
// open; cause, if set, is what later writes report.
func (st *h2stream) reset(code http2.ErrCode, cause error) {
	s := st.s
	s.mu.Lock()
	if st.closed {
		s.mu.Unlock()
		return
	}
	st.closed = true
	open := st.err == nil && !(st.localEnd && st.remoteEnd)
	if st.err == nil {
		st.err = ErrStreamClosed
		if cause != nil {
			st.err = cause
		}
	}
	unread := st.stopLocked(true)
	if open {
		// Written now, not queued: a stream opened right after this one
		// must find the slot free at the peer.
		_ = s.write(func() error { return s.fr.WriteRSTStream(st.id, code) })
	}
	if unread > 0 {
		s.consumed(nil, unread, false)
	}
	s.forget(st)
}

// setReadDeadline and setWriteDeadline follow net.Conn: a deadline set while
// a call is blocked applies to it.
func (st *h2stream) setReadDeadline(t time.Time) {
	if st.rdl.set(t) {
		st.wakeReader() // a blocked Read re-reads the deadline
	}
}

func (st *h2stream) setWriteDeadline(t time.Time) {
	if st.wdl.set(t) {
		st.s.mu.Lock()
		st.s.windowsChangedLocked() // a Write waiting for window re-reads the deadline
		st.s.mu.Unlock()
	}
}

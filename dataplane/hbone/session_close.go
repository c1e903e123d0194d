package hbone

import (
	"crypto/rand"
	"fmt"
	"io"
	"time"

	"golang.org/x/net/http2"
)

// How a session ends: our GOAWAY (on the Server's Shutdown, after an idle
// period, for a protocol error or abuse), the end of a session going away
// once its last stream is forgotten (the peer's GOAWAY is read in
// session_frames.go), keepalive PINGs that find a silent peer, and close,
// which fails every stream and closes the connection.

// protocolError ends the session with GOAWAY(code) and returns the error
// that ends it. Called by the reading goroutine, which stops reading.
func (s *session) protocolError(code http2.ErrCode, err error) error {
	return s.closeWithGoAway(code, fmt.Errorf("hbone: HTTP/2 protocol error from peer (%s): %w", code, err))
}

// closeWithGoAway queues GOAWAY(code) behind the control frames already
// waiting; the control writer ends the session with err once it is written.
// Called by the reading goroutine, which stops reading and returns err.
func (s *session) closeWithGoAway(code http2.ErrCode, err error) error {
	s.mu.Lock()
	if s.err == nil && s.closeAfterCtrl == nil {
		s.goingAway = true
		s.closeAfterCtrl = err
		last := s.maxPeerID
		debug := []byte(err.Error())
		s.ctrl = append(s.ctrl, func() error { return s.fr.WriteGoAway(last, code, debug) })
	}
	s.mu.Unlock()
	s.wakeControl()
	return err
}

// goAway sends GOAWAY: the peer opens no new stream here; open ones finish.
func (s *session) goAway() {
	s.mu.Lock()
	if s.goingAway && s.cfg.server {
		s.mu.Unlock()
		return
	}
	s.goingAway = true
	last := s.maxPeerID
	s.mu.Unlock()
	_ = s.write(func() error { return s.fr.WriteGoAway(last, http2.ErrCodeNo, nil) })
	s.closeIfDone()
}

// closeIfDone ends a session that is going away once its last stream ended.
func (s *session) closeIfDone() {
	s.mu.Lock()
	done := s.goingAway && len(s.streams) == 0 && s.reserved == 0
	s.mu.Unlock()
	if done {
		s.close(errSessionGoingAway)
	}
}

func (s *session) armIdleLocked() {
	if s.cfg.idleTimeout <= 0 || s.err != nil {
		return
	}
	if s.idle == nil {
		s.idle = time.AfterFunc(s.cfg.idleTimeout, s.onIdle)
		return
	}
	s.idle.Reset(s.cfg.idleTimeout)
}

func (s *session) onIdle() {
	s.mu.Lock()
	idle := len(s.streams) == 0 && s.reserved == 0
	s.mu.Unlock()
	if idle {
		s.goAway()
		s.close(errIdle)
	}
}

// keepalive PINGs the peer when nothing arrived for pingInterval, and ends
// the session if the answer does not come within pingTimeout.
func (s *session) keepalive() {
	t := time.NewTimer(s.cfg.pingInterval)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		silent := time.Since(time.Unix(0, s.lastRead.Load()))
		if silent < s.cfg.pingInterval {
			t.Reset(s.cfg.pingInterval - silent)
			continue
		}
		if err := s.ping(s.cfg.pingTimeout); err != nil {
			s.close(err)
			return
		}
		t.Reset(s.cfg.pingInterval)
	}
}

// ping sends a PING and waits up to timeout for its answer.
func (s *session) ping(timeout time.Duration) error {
	var data [8]byte
	_, _ = rand.Read(data[:])
	ack := make(chan struct{})
	s.mu.Lock()
	s.pings[data] = ack
	s.mu.Unlock()
	if err := s.write(func() error { return s.fr.WritePing(false, data) }); err != nil {
		return err
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-ack:
		return nil
	case <-s.done:
		return s.err
	case <-timer.C:
		return errPingTimeout
	}
}

// close ends the session: every stream fails with err, the connection closes.
func (s *session) close(err error) {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return
	}
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	s.err = err
	streams := s.streams
	s.streams = map[uint32]*h2stream{}
	s.waiting = nil
	if s.idle != nil {
		s.idle.Stop()
	}
	if !isClosed(s.settled) {
		close(s.settled)
	}
	close(s.done)
	s.windowsChangedLocked()
	s.mu.Unlock()
	for _, st := range streams {
		st.fail(fmt.Errorf("hbone: connection lost: %w", err))
	}
	if s.wmu.TryLock() {
		s.tc.Close() // with TLS close_notify
		s.wmu.Unlock()
	} else {
		// A writer holds the connection, perhaps blocked on a peer that
		// does not read, and would hold up close_notify: close under it.
		s.raw.Conn.Close()
	}
	if s.cfg.onClose != nil {
		s.cfg.onClose(err)
	}
}

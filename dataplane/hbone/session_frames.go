package hbone

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"golang.org/x/net/http2"

	"github.com/ambientmesh/ambient-operator/internal/workers"
)

// Frame dispatch: the one reading goroutine of a session reads every frame
// and acts on it; on a server it starts the request handlers. It never waits
// for the write mutex (its answers go through queueControl).

// readLoop reads frames until the connection fails, and ends the session;
// after a GOAWAY for a protocol error or abuse, once the control writer has
// sent it (or closeGrace passed: the peer may not read).
func (s *session) readLoop() {
	err := s.readFrames()
	s.mu.Lock()
	goingAway := s.closeAfterCtrl != nil
	s.mu.Unlock()
	if goingAway {
		grace := time.NewTimer(closeGrace)
		select {
		case <-s.done:
		case <-grace.C:
		}
		grace.Stop()
	}
	s.close(err)
}

func (s *session) readFrames() error {
	for {
		s.budget.left = frameHeaderLen + max(int(s.cfg.maxFrame), maxHeaderBlockWire)
		f, err := s.fr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				s.resetByUs(se.StreamID, se.Code)
				if err := s.countReset(); err != nil {
					return err
				}
				continue
			}
			var ce http2.ConnectionError
			if errors.As(err, &ce) {
				return s.protocolError(http2.ErrCode(ce), err)
			}
			if errors.Is(err, errHeaderBlockTooLong) {
				return s.closeWithGoAway(http2.ErrCodeEnhanceYourCalm, err)
			}
			return err
		}
		s.lastRead.Store(time.Now().UnixNano())
		if err := s.processFrame(f); err != nil {
			return err
		}
	}
}

func (s *session) processFrame(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.SettingsFrame:
		return s.processSettings(f)
	case *http2.MetaHeadersFrame:
		return s.processHeaders(f)
	case *http2.DataFrame:
		return s.processData(f)
	case *http2.WindowUpdateFrame:
		return s.processWindowUpdate(f)
	case *http2.RSTStreamFrame:
		s.mu.Lock()
		st := s.streams[f.StreamID]
		idle := st == nil && f.StreamID > s.highestStreamIDLocked()
		early := st != nil && !st.responded
		s.mu.Unlock()
		if idle {
			return s.protocolError(http2.ErrCodeProtocol, fmt.Errorf("RST_STREAM on idle stream %d", f.StreamID))
		}
		if st != nil {
			st.fail(http2.StreamError{StreamID: f.StreamID, Code: f.ErrCode})
		}
		if early {
			return s.countReset()
		}
	case *http2.PingFrame:
		if f.IsAck() {
			s.mu.Lock()
			if ch := s.pings[f.Data]; ch != nil {
				close(ch)
				delete(s.pings, f.Data)
			}
			s.mu.Unlock()
			return nil
		}
		data := f.Data
		s.queueControl(func() error { return s.fr.WritePing(true, data) })
	case *http2.GoAwayFrame:
		s.mu.Lock()
		s.goingAway = true
		var refused []*h2stream
		for id, st := range s.streams {
			if !s.cfg.server && id > f.LastStreamID {
				refused = append(refused, st)
			}
		}
		s.mu.Unlock()
		for _, st := range refused {
			st.fail(errSessionGoingAway)
		}
		s.closeIfDone()
	case *http2.PushPromiseFrame:
		return s.protocolError(http2.ErrCodeProtocol, errors.New("PUSH_PROMISE with push disabled"))
	}
	// PRIORITY and unknown frame types are ignored, as the spec asks.
	return nil
}

func (s *session) processHeaders(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	s.mu.Lock()
	st := s.streams[id]
	if st != nil {
		s.mu.Unlock()
		st.headers(f)
		return nil
	}
	if !s.cfg.server {
		opened := id%2 == 1 && id < s.nextID
		s.mu.Unlock()
		if opened {
			return nil // an answer for a stream we already closed
		}
		return s.protocolError(http2.ErrCodeProtocol, fmt.Errorf("HEADERS for stream %d we never opened", id))
	}
	if id%2 == 0 || id <= s.maxPeerID {
		s.mu.Unlock()
		if id%2 == 1 {
			return nil // trailers or late headers of a stream that has ended
		}
		return s.protocolError(http2.ErrCodeProtocol, fmt.Errorf("client opened stream %d out of order", id))
	}
	s.maxPeerID = id
	if s.goingAway || uint32(len(s.streams)) >= s.cfg.maxStreams {
		// Past our limit: a peer that knew it caused this reset.
		counted := !s.goingAway && s.settingsAcked
		s.mu.Unlock()
		s.resetByUs(id, http2.ErrCodeRefusedStream)
		if counted {
			return s.countReset()
		}
		return nil
	}
	// A truncated header list (over maxHeaderListSize) is answered 431.
	if !f.Truncated {
		if err := validateRequestHeaders(f.Fields); err != nil {
			s.mu.Unlock()
			s.resetByUs(id, http2.ErrCodeProtocol)
			return s.countReset()
		}
	}
	st = s.newStreamLocked(id)
	if f.StreamEnded() {
		st.remoteEnd = true
	}
	s.startHandlerLocked(pendingRequest{st, f})
	s.mu.Unlock()
	return nil
}

// pendingRequest is a stream waiting for one of the session's handlers.
type pendingRequest struct {
	st *h2stream
	hf *http2.MetaHeadersFrame
}

// startHandlerLocked runs the request handler for a new stream, or queues the
// stream until a handler returns: a handler counts against maxStreams until
// it returns, not until its stream ends, so a peer that resets its streams
// cannot pile up handlers (CVE-2023-44487).
func (s *session) startHandlerLocked(req pendingRequest) {
	if s.handlers >= int(s.cfg.maxStreams) {
		if len(s.waiting) >= int(s.cfg.maxStreams) {
			// Drop the streams reset while they waited: the live ones are
			// open streams, fewer than maxStreams.
			s.waiting = slices.DeleteFunc(s.waiting, func(r pendingRequest) bool { return r.st.err != nil })
		}
		s.waiting = append(s.waiting, req)
		return
	}
	s.handlers++
	workers.Go(func() { s.runHandlers(req) })
}

// runHandlers serves req, then the streams that waited for a handler.
func (s *session) runHandlers(req pendingRequest) {
	for {
		s.cfg.onRequest(req.st, req.hf)
		s.mu.Lock()
		for {
			if len(s.waiting) == 0 || s.err != nil {
				s.handlers--
				s.mu.Unlock()
				return
			}
			req = s.waiting[0]
			s.waiting[0] = pendingRequest{}
			s.waiting = s.waiting[1:]
			if req.st.err == nil {
				break
			}
		}
		s.mu.Unlock()
	}
}

func (s *session) processData(f *http2.DataFrame) error {
	if f.Length == 0 && !f.StreamEnded() {
		if s.emptyData++; s.emptyData > maxEmptyDataFrames {
			return s.closeWithGoAway(http2.ErrCodeEnhanceYourCalm, &abuseError{limit: "empty DATA frames"})
		}
	} else {
		s.emptyData = 0
	}
	n := int32(f.Length)
	s.mu.Lock()
	s.recvUsed += n // returned to the peer as the stream's reader consumes
	if s.recvUsed > s.cfg.connWin {
		s.mu.Unlock()
		return s.protocolError(http2.ErrCodeFlowControl, errors.New("connection flow-control window exceeded"))
	}
	st := s.streams[f.StreamID]
	if st == nil {
		// A stream that has ended (or never existed): drop the data but give
		// the connection window back.
		s.mu.Unlock()
		s.consumed(nil, n, true)
		s.mu.Lock()
		idle := f.StreamID > s.highestStreamIDLocked()
		s.mu.Unlock()
		if idle {
			return s.protocolError(http2.ErrCodeProtocol, fmt.Errorf("DATA on idle stream %d", f.StreamID))
		}
		s.resetByUs(f.StreamID, http2.ErrCodeStreamClosed)
		return nil
	}
	finished, direct, err := st.appendLocked(f.Data(), n, f.StreamEnded())
	s.mu.Unlock()
	var se http2.StreamError
	switch {
	case errors.As(err, &se):
		s.consumed(nil, n, true)
		s.resetByUs(f.StreamID, se.Code)
		return s.countReset()
	case err != nil: // a stream closed locally: nobody reads the data
		s.consumed(nil, n, true)
	default:
		// Padding counts against the window but is never read; what went
		// straight to the reader's destination is consumed already.
		if done := n - int32(len(f.Data())) + int32(direct); done > 0 {
			s.consumed(st, done, true)
		}
		if finished {
			s.forget(st)
		}
	}
	return nil
}

// highestStreamIDLocked is the highest stream ID opened so far: higher ones
// are idle.
func (s *session) highestStreamIDLocked() uint32 {
	if s.cfg.server {
		return s.maxPeerID
	}
	return s.nextID - 2
}

// countReset records, on a server, a stream the peer reset before its answer
// or made us reset by breaking the protocol; past the rapid-reset limit it
// ends the session with ENHANCE_YOUR_CALM. Called by the reading goroutine.
func (s *session) countReset() error {
	if s.resets == nil || !s.resets.add(time.Now()) {
		return nil
	}
	return s.closeWithGoAway(http2.ErrCodeEnhanceYourCalm, &abuseError{limit: "stream resets"})
}

package hbone

import (
	"errors"

	"golang.org/x/net/http2"
)

// SETTINGS and flow control. The peer's SETTINGS set its limits for our
// sends (initial stream window, frame size, concurrent streams); its
// WINDOW_UPDATEs grow our send windows, and writers waiting for window wait
// on winChanged. Our receive windows are returned to the peer as readers
// consume, in batches of a quarter window.

func (s *session) processSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		s.settingsAcked = true
		return nil
	}
	var tableSize *uint32
	s.mu.Lock()
	err := f.ForeachSetting(func(set http2.Setting) error {
		if err := set.Valid(); err != nil {
			return err
		}
		switch set.ID {
		case http2.SettingInitialWindowSize:
			delta := int64(set.Val) - int64(s.peerInitWin)
			for _, st := range s.streams {
				if st.sendWin+delta > maxWindow {
					return http2.ConnectionError(http2.ErrCodeFlowControl)
				}
			}
			s.peerInitWin = int32(set.Val)
			for _, st := range s.streams {
				st.sendWin += delta
			}
		case http2.SettingMaxFrameSize:
			s.peerMaxFrame = set.Val
		case http2.SettingMaxConcurrentStreams:
			s.peerMaxStreams = set.Val
		case http2.SettingHeaderTableSize:
			tableSize = &set.Val
		}
		return nil
	})
	s.windowsChangedLocked()
	if !isClosed(s.settled) {
		close(s.settled)
	}
	s.mu.Unlock()
	if err != nil {
		var ce http2.ConnectionError
		if errors.As(err, &ce) {
			return s.protocolError(http2.ErrCode(ce), err)
		}
		return s.protocolError(http2.ErrCodeProtocol, err)
	}
	// The control writer applies a new header table size under the write
	// lock, then acknowledges: the next header block announces the change.
	s.queueControl(func() error {
		if tableSize != nil {
			s.henc.SetMaxDynamicTableSizeLimit(*tableSize)
		}
		return s.fr.WriteSettingsAck()
	})
	return nil
}

func (s *session) processWindowUpdate(f *http2.WindowUpdateFrame) error {
	incr := int64(f.Increment)
	s.mu.Lock()
	if f.StreamID == 0 {
		if s.sendWin+incr > maxWindow {
			s.mu.Unlock()
			return s.protocolError(http2.ErrCodeFlowControl, errors.New("connection send window overflow"))
		}
		s.sendWin += incr
	} else if st := s.streams[f.StreamID]; st != nil {
		if st.sendWin+incr > maxWindow {
			s.mu.Unlock()
			s.resetByUs(f.StreamID, http2.ErrCodeFlowControl)
			return s.countReset()
		}
		st.sendWin += incr
	}
	s.windowsChangedLocked()
	s.mu.Unlock()
	return nil
}

// windowsChangedLocked wakes every writer waiting for send window.
func (s *session) windowsChangedLocked() {
	close(s.winChanged)
	s.winChanged = make(chan struct{})
}

// consumed returns n bytes of receive window to the peer once enough has
// accumulated (a quarter of the window), for the connection and, if st is
// not nil, for st. The reading goroutine passes fromReader: it must not wait
// for the write mutex, so its WINDOW_UPDATEs are queued.
func (s *session) consumed(st *h2stream, n int32, fromReader bool) {
	var connIncr, streamIncr uint32
	s.mu.Lock()
	s.pendingConnAck += n
	if s.pendingConnAck >= s.cfg.connWin/4 {
		connIncr = uint32(s.pendingConnAck)
		s.recvUsed -= s.pendingConnAck
		s.pendingConnAck = 0
	}
	if st != nil && !st.remoteEnd && st.err == nil {
		st.pendingAck += n
		if st.pendingAck >= s.cfg.streamWin/4 {
			streamIncr = uint32(st.pendingAck)
			st.recvWin += st.pendingAck
			st.pendingAck = 0
		}
	}
	s.mu.Unlock()
	if connIncr == 0 && streamIncr == 0 {
		return
	}
	update := func() error {
		if connIncr > 0 {
			if err := s.fr.WriteWindowUpdate(0, connIncr); err != nil {
				return err
			}
		}
		if streamIncr > 0 {
			return s.fr.WriteWindowUpdate(st.id, streamIncr)
		}
		return nil
	}
	if fromReader {
		s.queueControl(update)
		return
	}
	_ = s.write(update)
}

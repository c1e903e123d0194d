package hbone

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/ambientmesh/ambient-operator/internal/workers"
)

// A session is one HTTP/2 connection carrying HBONE streams, on either side.
// It uses x/net/http2's Framer and hpack for the wire format but schedules
// frames itself, because HBONE needs only a small part of HTTP/2 and the
// generic Server and Transport cost several goroutine hand-offs and copies
// per frame (measured in docs/benchmarks.md):
//
//   - writes: the goroutine with data writes its frames itself, under one
//     mutex, each group of frames in one write(2) (coalesce.go);
//   - reads: one goroutine reads frames and appends DATA to the stream's
//     buffer, from which the stream's reader takes it (WriteTo without a
//     further copy);
//   - the reading goroutine never waits for the write mutex: the frames it
//     must answer with (SETTINGS and PING acks, RST_STREAM, GOAWAY) go
//     through a bounded queue written by a helper goroutine, so two peers
//     blocked on full TCP buffers cannot deadlock each other;
//   - a server runs at most maxStreams request handlers at once: a stream
//     whose handler has not returned holds its slot even after a reset, and
//     streams beyond wait for a slot (limits.go has the other limits).
type session struct {
	cfg    sessionConfig
	tc     *tls.Conn
	raw    *coalescingConn
	fr     *http2.Framer
	budget *budgetReader // what the Framer reads from; renewed per frame

	// Owned by the reading goroutine.
	resets        *resetMeter // server: streams the peer reset early or made us reset
	emptyData     int         // consecutive DATA frames without payload or END_STREAM
	settingsAcked bool        // the peer acknowledged our SETTINGS (knows our limits)

	wmu  sync.Mutex // frame writes: fr's write side, henc and hbuf
	henc *hpack.Encoder
	hbuf bytes.Buffer
	werr error // the first write error: the connection is broken

	ctrlWake chan struct{} // cap 1: control frames are queued

	mu             sync.Mutex // everything below
	streams        map[uint32]*h2stream
	ctrl           []func() error   // control frames for the control writer
	closeAfterCtrl error            // the control writer ends the session with it once ctrl is written
	handlers       int              // server: request handlers running
	waiting        []pendingRequest // server: streams waiting for a handler, in order
	nextID         uint32           // client: the next stream ID to open
	maxPeerID      uint32           // server: the highest stream ID the peer opened
	reserved       int              // client: streams promised to callers, not yet open
	sendWin        int64            // the connection's send window
	winChanged     chan struct{}    // closed and replaced when send windows grow or streams fail
	recvUsed       int32            // connection receive window the peer has used up
	pendingConnAck int32            // of recvUsed, what readers consumed: returned in batches
	peerInitWin    int32
	peerMaxFrame   uint32
	peerMaxStreams uint32
	settled        chan struct{} // closed at the peer's first SETTINGS, or when the session dies
	goingAway      bool          // GOAWAY sent or received: no new streams
	err            error         // why the session ended; set once
	done           chan struct{} // closed when the session ended
	pings          map[[8]byte]chan struct{}
	idle           *time.Timer
	lastRead       atomic.Int64 // unix nanos of the last frame read, for keepalives
}

// pendingRequest is a stream waiting for one of the session's handlers.
type pendingRequest struct {
	st *h2stream
	hf *http2.MetaHeadersFrame
}

type sessionConfig struct {
	server     bool
	maxFrame   uint32 // the largest frame we accept (SETTINGS_MAX_FRAME_SIZE)
	streamWin  int32  // our receive window per stream
	connWin    int32  // our receive window per connection
	maxStreams uint32 // server: SETTINGS_MAX_CONCURRENT_STREAMS, also the number of handlers run at once
	// idleTimeout ends a session that had no stream for this long (0: never).
	idleTimeout time.Duration
	// pingInterval sends a PING when nothing arrived for this long; no answer
	// within pingTimeout ends the session (pingInterval ≤ 0: no keepalives).
	pingInterval, pingTimeout time.Duration
	// onRequest runs, on a goroutine of its own, for each stream a client opens.
	onRequest func(st *h2stream, hf *http2.MetaHeadersFrame)
	// onClose runs once the session ended.
	onClose func(err error)
}

const (
	maxHeaderListSize = 64 << 10
	// maxDataFrame bounds the DATA frames we write: the peer holds a whole
	// frame before passing it on, so huge frames only add latency.
	maxDataFrame = 64 << 10
	// initialWindow is HTTP/2's window before any SETTINGS or WINDOW_UPDATE.
	initialWindow = 65535
)

var (
	errSessionGoingAway = errors.New("hbone: connection is going away")
	errPingTimeout      = errors.New("hbone: keepalive PING not answered")
	errIdle             = errors.New("hbone: connection idle")
)

// newSession wraps an established TLS connection. Call run to serve it.
func newSession(tc *tls.Conn, raw *coalescingConn, cfg sessionConfig) *session {
	s := &session{
		cfg: cfg, tc: tc, raw: raw,
		ctrlWake:       make(chan struct{}, 1),
		streams:        map[uint32]*h2stream{},
		nextID:         1,
		sendWin:        initialWindow,
		winChanged:     make(chan struct{}),
		peerInitWin:    initialWindow,
		peerMaxFrame:   16 << 10,
		peerMaxStreams: 1<<31 - 1, // unlimited until the peer's SETTINGS say otherwise
		settled:        make(chan struct{}),
		done:           make(chan struct{}),
		pings:          map[[8]byte]chan struct{}{},
	}
	s.budget = &budgetReader{r: tc}
	s.fr = http2.NewFramer(tc, s.budget)
	if cfg.server {
		s.resets = newResetMeter(cfg.maxStreams)
	}
	s.fr.SetMaxReadFrameSize(cfg.maxFrame)
	s.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	s.fr.MaxHeaderListSize = maxHeaderListSize
	s.fr.SetReuseFrames() // DATA is copied out before the next read
	s.henc = hpack.NewEncoder(&s.hbuf)
	s.lastRead.Store(time.Now().UnixNano())
	return s
}

// start sends our preface and SETTINGS and starts the reading, control and
// keepalive goroutines. A server first reads the client's preface.
func (s *session) start() error {
	if s.cfg.server {
		_ = s.tc.SetReadDeadline(time.Now().Add(10 * time.Second))
		var preface [len(http2.ClientPreface)]byte
		if _, err := io.ReadFull(s.tc, preface[:]); err != nil || string(preface[:]) != http2.ClientPreface {
			if err == nil {
				err = errors.New("hbone: not an HTTP/2 client preface")
			}
			return err
		}
		_ = s.tc.SetReadDeadline(time.Time{})
	}
	settings := []http2.Setting{
		{ID: http2.SettingInitialWindowSize, Val: uint32(s.cfg.streamWin)},
		{ID: http2.SettingMaxFrameSize, Val: s.cfg.maxFrame},
		{ID: http2.SettingMaxHeaderListSize, Val: maxHeaderListSize},
	}
	if s.cfg.server {
		settings = append(settings, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: s.cfg.maxStreams})
	} else {
		settings = append(settings, http2.Setting{ID: http2.SettingEnablePush, Val: 0})
	}
	err := s.write(func() error {
		if !s.cfg.server {
			if _, err := io.WriteString(s.tc, http2.ClientPreface); err != nil {
				return err
			}
		}
		if err := s.fr.WriteSettings(settings...); err != nil {
			return err
		}
		return s.fr.WriteWindowUpdate(0, uint32(s.cfg.connWin-initialWindow))
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.armIdleLocked()
	s.mu.Unlock()
	go s.writeControl()
	if s.cfg.pingInterval > 0 {
		go s.keepalive()
	}
	go s.readLoop()
	return nil
}

// write runs fn, which writes frames, under the write mutex, and sends what
// it wrote in one write(2). A failed write breaks the session: the reading
// side then ends it, usually with the more telling error (a TLS alert).
func (s *session) write(fn func() error) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.writeLocked(fn)
}

func (s *session) writeLocked(fn func() error) error {
	if s.werr != nil {
		return s.werr
	}
	s.raw.beginBatch()
	err := fn()
	if ferr := s.raw.endBatch(); err == nil {
		err = ferr
	}
	if err != nil {
		s.werr = err
		time.AfterFunc(time.Second, func() { s.close(err) })
	}
	return err
}

// reserve promises the caller a new stream, if the peer's limit allows.
func (s *session) reserve() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil || s.goingAway || uint32(len(s.streams)+s.reserved) >= s.peerMaxStreams {
		return false
	}
	s.reserved++
	return true
}

// openStream opens a reserved stream: HEADERS, and as much of early as the
// windows allow right behind them in the same write(2); the rest follows
// as ordinary DATA.
func (s *session) openStream(fields []hpack.HeaderField, early []byte) (*h2stream, error) {
	s.wmu.Lock()
	s.mu.Lock()
	s.reserved--
	switch {
	case s.err != nil:
		err := s.err
		s.mu.Unlock()
		s.wmu.Unlock()
		return nil, err
	case s.goingAway:
		s.mu.Unlock()
		s.wmu.Unlock()
		return nil, errSessionGoingAway
	}
	// IDs are taken under the write mutex: streams must open in ID order.
	st := s.newStreamLocked(s.nextID)
	s.nextID += 2
	n := min(int64(len(early)), int64(maxDataFrame), int64(s.peerMaxFrame), st.sendWin, s.sendWin)
	st.sendWin -= n
	s.sendWin -= n
	s.mu.Unlock()
	err := s.writeLocked(func() error {
		if err := s.writeHeadersLocked(st.id, false, fields); err != nil || n == 0 {
			return err
		}
		return s.fr.WriteData(st.id, false, early[:n])
	})
	s.wmu.Unlock()
	if err == nil && n < int64(len(early)) {
		_, err = st.Write(early[n:])
	}
	if err != nil {
		err = s.failureCause(err)
		st.fail(err)
		return nil, err
	}
	return st, nil
}

// failureCause prefers, to a failed write's error, the reason the reading
// side sees shortly after: with TLS 1.3 a server that refuses our
// certificate says so in an alert, while our writes just hit a closed pipe.
func (s *session) failureCause(writeErr error) error {
	select {
	case <-s.done:
		if err := s.sessionErr(); !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.EOF) {
			return err
		}
	case <-time.After(time.Second):
	}
	return writeErr
}

// streamCounts are the open streams and the peer's limit (0 until known).
func (s *session) streamCounts() (active int, limit uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if isClosed(s.settled) && s.err == nil {
		limit = s.peerMaxStreams
	}
	return len(s.streams), limit
}

// queueControl has the control writer send a frame; the reading goroutine
// uses it so that it never waits for the write mutex. A peer that makes the
// queue exceed maxQueuedControl (it sends and does not read) loses the
// connection.
func (s *session) queueControl(fn func() error) {
	s.mu.Lock()
	if s.err != nil || s.closeAfterCtrl != nil {
		s.mu.Unlock()
		return
	}
	if len(s.ctrl) >= maxQueuedControl {
		s.mu.Unlock()
		s.close(&abuseError{limit: "queued control frames"})
		return
	}
	s.ctrl = append(s.ctrl, fn)
	s.mu.Unlock()
	s.wakeControl()
}

func (s *session) wakeControl() {
	select {
	case s.ctrlWake <- struct{}{}:
	default:
	}
}

func (s *session) writeControl() {
	for {
		select {
		case <-s.ctrlWake:
		case <-s.done:
			return
		}
		s.mu.Lock()
		queue := s.ctrl
		s.ctrl = nil
		closing := s.closeAfterCtrl
		s.mu.Unlock()
		_ = s.write(func() error {
			for _, fn := range queue {
				if err := fn(); err != nil {
					return err
				}
			}
			return nil
		})
		if closing != nil {
			s.close(closing)
			return
		}
	}
}

// writeHeadersLocked encodes fields as one header block, split into
// CONTINUATION frames when it exceeds the smallest frame size every peer
// accepts. Called inside write.
func (s *session) writeHeadersLocked(id uint32, endStream bool, fields []hpack.HeaderField) error {
	s.hbuf.Reset()
	for _, f := range fields {
		if err := s.henc.WriteField(f); err != nil {
			return err
		}
	}
	block := s.hbuf.Bytes()
	const chunk = 16 << 10
	for first := true; first || len(block) > 0; first = false {
		frag := block[:min(len(block), chunk)]
		block = block[len(frag):]
		var err error
		if first {
			err = s.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: frag, EndStream: endStream, EndHeaders: len(block) == 0})
		} else {
			err = s.fr.WriteContinuation(id, len(block) == 0, frag)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

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

// countReset records, on a server, a stream the peer reset before its answer
// or made us reset by breaking the protocol; past the rapid-reset limit it
// ends the session with ENHANCE_YOUR_CALM. Called by the reading goroutine.
func (s *session) countReset() error {
	if s.resets == nil || !s.resets.add(time.Now()) {
		return nil
	}
	return s.closeWithGoAway(http2.ErrCodeEnhanceYourCalm, &abuseError{limit: "stream resets"})
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

// resetByUs sends RST_STREAM (from any goroutine) and forgets the stream.
func (s *session) resetByUs(id uint32, code http2.ErrCode) {
	s.mu.Lock()
	st := s.streams[id]
	s.mu.Unlock()
	if st != nil {
		st.fail(http2.StreamError{StreamID: id, Code: code})
	}
	s.queueControl(func() error { return s.fr.WriteRSTStream(id, code) })
}

// newStreamLocked registers stream id.
func (s *session) newStreamLocked(id uint32) *h2stream {
	st := newH2Stream(s, id)
	s.streams[id] = st
	if s.idle != nil {
		s.idle.Stop()
	}
	return st
}

// forget drops a finished stream; the last one of a session going away ends it.
func (s *session) forget(st *h2stream) {
	s.mu.Lock()
	if s.streams[st.id] == st {
		delete(s.streams, st.id)
		if len(s.streams) == 0 {
			s.armIdleLocked()
		}
	}
	s.mu.Unlock()
	s.closeIfDone()
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

// closeIfDone ends a session that is going away once its last stream ended.
func (s *session) closeIfDone() {
	s.mu.Lock()
	done := s.goingAway && len(s.streams) == 0 && s.reserved == 0
	s.mu.Unlock()
	if done {
		s.close(errSessionGoingAway)
	}
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

// sessionErr is why the session ended (nil while it runs).
func (s *session) sessionErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

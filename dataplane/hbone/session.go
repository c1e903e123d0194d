package hbone

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
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
//
// The session's methods are split by concern over session.go and
// session_frames.go, session_flow.go and session_close.go (doc.go, "Inside a
// connection", lists them and the stream states).
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

// newStreamLocked registers stream id.
func (s *session) newStreamLocked(id uint32) *h2stream {
	st := newH2Stream(s, id)
	s.streams[id] = st
	if s.idle != nil {
		s.idle.Stop()
	}
	return st
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

// sessionErr is why the session ended (nil while it runs).
func (s *session) sessionErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

package hbone

import (
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// deadline is a resettable point in time with a channel that is closed once
// it has passed, like the deadlines of net.Pipe.
type deadline struct {
	mu      sync.Mutex
	timer   *time.Timer
	expired chan struct{}
	onFire  func() // optional, run (without mu) when the deadline passes
}

func newDeadline(onFire func()) *deadline {
	return &deadline{expired: make(chan struct{}), onFire: onFire}
}

// set arms the deadline at t; the zero time disarms it.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.expired // the timer fired: wait for its close to pair with the reset below
	}
	d.timer = nil
	if isClosed(d.expired) {
		d.expired = make(chan struct{})
	}
	if t.IsZero() {
		return
	}
	if dur := time.Until(t); dur > 0 {
		expired := d.expired
		d.timer = time.AfterFunc(dur, func() {
			close(expired)
			if d.onFire != nil {
				d.onFire()
			}
		})
		return
	}
	close(d.expired)
	if d.onFire != nil {
		go d.onFire() // not under mu: onFire may take other locks
	}
}

// wait returns a channel closed when the deadline has passed.
func (d *deadline) wait() chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.expired
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// deadlineReader gives an uninterruptible reader (an HTTP/2 body) the read
// deadline semantics of a net.Conn: a Read blocked past the deadline returns
// os.ErrDeadlineExceeded, and the data that arrives later is not lost but
// returned by the next Read. It does so by reading on a helper goroutine into
// its own buffer, which costs a copy and a goroutine hand-off per read; so
// that mode starts with the first SetReadDeadline call (any value, as
// net/http's server makes before its first read), and until then reads go
// straight to the source.
type deadlineReader struct {
	src     io.Reader
	dl      *deadline
	enabled atomic.Bool

	mu       sync.Mutex // serializes Read
	inflight chan readResult
	left     []byte
	leftBuf  *[]byte
	err      error
}

type readResult struct {
	buf *[]byte
	n   int
	err error
}

const pumpBufSize = 32 << 10

var pumpBufs = sync.Pool{New: func() any { b := make([]byte, pumpBufSize); return &b }}

func newDeadlineReader(src io.Reader) *deadlineReader {
	return &deadlineReader{src: src, dl: newDeadline(nil)}
}

// setDeadline arms the deadline and switches to deadline mode.
func (r *deadlineReader) setDeadline(t time.Time) {
	r.enabled.Store(true)
	r.dl.set(t)
}

func (r *deadlineReader) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.enabled.Load() {
		return r.src.Read(p)
	}
	if len(r.left) == 0 && r.err == nil {
		if err := r.fill(); err != nil {
			return 0, err
		}
	}
	if len(r.left) > 0 {
		n := copy(p, r.left)
		r.left = r.left[n:]
		if len(r.left) == 0 {
			pumpBufs.Put(r.leftBuf)
			r.leftBuf, r.left = nil, nil
		}
		return n, nil
	}
	return 0, r.err
}

// fill waits for the next chunk from the source, starting a read if none is
// outstanding. It returns os.ErrDeadlineExceeded if the deadline passes first.
func (r *deadlineReader) fill() error {
	expired := r.dl.wait()
	if isClosed(expired) {
		return os.ErrDeadlineExceeded
	}
	if r.inflight == nil {
		ch := make(chan readResult, 1)
		r.inflight = ch
		go func() {
			buf := pumpBufs.Get().(*[]byte)
			n, err := r.src.Read(*buf)
			ch <- readResult{buf: buf, n: n, err: err}
		}()
	}
	select {
	case res := <-r.inflight:
		r.inflight = nil
		if res.n > 0 {
			r.leftBuf, r.left = res.buf, (*res.buf)[:res.n]
		} else {
			pumpBufs.Put(res.buf)
		}
		r.err = res.err
		return nil
	case <-expired:
		return os.ErrDeadlineExceeded
	}
}

// readDirect reads straight from the source unless deadline mode left data
// or a read in flight. For Join, which owns the reading side.
func (r *deadlineReader) readDirect(p []byte) (int, error) {
	r.mu.Lock()
	pending := len(r.left) > 0 || r.err != nil || r.inflight != nil
	r.mu.Unlock()
	if pending {
		return r.Read(p)
	}
	return r.src.Read(p)
}

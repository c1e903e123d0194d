package hbone

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Syscalls, not crypto, dominate the cost of a naive tunnel: crypto/tls
// writes every 16 KiB record with its own write(2), and reads at most a
// record or two per read(2). On a machine whose cores are shared by the
// applications and both proxies, that CPU is throughput lost. So:
//
//   - writes: each session write (a group of frames, see session.write) is
//     one "batch"; the records crypto/tls produces for it are gathered and
//     sent with one write(2) (up to batchSize at a time);
//   - reads: while the peer streams (a read fills the caller's buffer), reads
//     go through a large buffer so one read(2) returns many records; an idle
//     connection holds no buffer.
//
// This halves the CPU per byte of a tunneled stream (see bench_test.go).

const (
	batchSize   = 512 << 10
	readBufSize = 256 << 10
	// streamingReadSize is a full TLS record: a read that returns at least
	// this much suggests more is queued.
	streamingReadSize = 16 << 10
)

var (
	batchBufs = sync.Pool{New: func() any { b := make([]byte, 0, batchSize); return &b }}
	readBufs  = sync.Pool{New: func() any { b := make([]byte, readBufSize); return &b }}
)

// coalescingConn sits under tls.Conn, on the TCP connection.
type coalescingConn struct {
	net.Conn
	// writeTimeout, if set, fails a write(2) blocked for that long (for at
	// least half of it: see renewWriteDeadlineLocked).
	writeTimeout time.Duration
	// tlsDeadline: crypto/tls set its own write deadline (to send its
	// closing alert), which then holds instead of writeTimeout.
	tlsDeadline atomic.Bool

	wmu           sync.Mutex
	batch         *[]byte   // non-nil while a batch is open
	deadlineSetAt time.Time // when the write deadline was last renewed

	rmu  sync.Mutex
	rbuf *[]byte // non-nil while streaming
	r, w int
	rerr error // error of the read that filled rbuf, returned once it is drained
	cold bool  // the last fill was small: release rbuf once drained
}

func newCoalescingConn(c net.Conn) *coalescingConn { return &coalescingConn{Conn: c} }

func (c *coalescingConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.batch == nil {
		c.renewWriteDeadlineLocked()
		return c.Conn.Write(p)
	}
	if len(*c.batch)+len(p) > cap(*c.batch) {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) >= cap(*c.batch) {
			c.renewWriteDeadlineLocked()
			return c.Conn.Write(p)
		}
	}
	*c.batch = append(*c.batch, p...)
	return len(p), nil
}

func (c *coalescingConn) beginBatch() {
	c.wmu.Lock()
	c.batch = batchBufs.Get().(*[]byte)
	c.wmu.Unlock()
}

func (c *coalescingConn) endBatch() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	err := c.flushLocked()
	batchBufs.Put(c.batch)
	c.batch = nil
	return err
}

func (c *coalescingConn) flushLocked() error {
	b := *c.batch
	*c.batch = b[:0]
	if len(b) == 0 {
		return nil
	}
	c.renewWriteDeadlineLocked()
	_, err := c.Conn.Write(b)
	return err
}

// renewWriteDeadlineLocked keeps the write deadline between writeTimeout/2
// and writeTimeout ahead: renewing it only when half of it has passed spares
// most writes a timer update.
func (c *coalescingConn) renewWriteDeadlineLocked() {
	if c.writeTimeout <= 0 || c.tlsDeadline.Load() {
		return
	}
	if now := time.Now(); now.Sub(c.deadlineSetAt) >= c.writeTimeout/2 {
		c.deadlineSetAt = now
		_ = c.Conn.SetWriteDeadline(now.Add(c.writeTimeout))
	}
}

// SetWriteDeadline is called by crypto/tls only, before its closing alert.
func (c *coalescingConn) SetWriteDeadline(t time.Time) error {
	c.tlsDeadline.Store(true)
	return c.Conn.SetWriteDeadline(t)
}

func (c *coalescingConn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.r == c.w && c.rerr != nil {
		return 0, c.rerr
	}
	if c.r == c.w {
		if c.rbuf == nil || len(p) >= readBufSize {
			n, err := c.Conn.Read(p)
			if n >= streamingReadSize && c.rbuf == nil {
				c.rbuf = readBufs.Get().(*[]byte) // a record or more at once: the peer is streaming
			}
			return n, err
		}
		n, err := c.Conn.Read(*c.rbuf)
		c.r, c.w, c.rerr = 0, n, err
		// A read far from filling the buffer means the stream slowed down:
		// give the buffer back once it is drained.
		c.cold = n < len(*c.rbuf)/8
		if n == 0 {
			readBufs.Put(c.rbuf)
			c.rbuf, c.r, c.w, c.rerr = nil, 0, 0, nil
			return 0, err
		}
	}
	n := copy(p, (*c.rbuf)[c.r:c.w])
	c.r += n
	if c.r == c.w && c.cold {
		readBufs.Put(c.rbuf)
		c.rbuf, c.r, c.w = nil, 0, 0
	}
	return n, nil
}

package hbone

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"

	"github.com/ambientmesh/ambient-operator/internal/workers"
)

// JoinStats counts the bytes Join has copied so far; it may be read while
// Join runs (for metrics on long-lived connections).
type JoinStats struct {
	AToB atomic.Int64
	BToA atomic.Int64
}

// Join copies a→b and b→a until both directions are finished, then closes
// both connections. When one side reaches EOF the other side's write half is
// closed (CloseWrite) and the opposite direction carries on, so TCP
// half-close crosses the tunnel. An error in either direction closes both
// connections at once (a tunneled stream is reset). stats may be nil.
//
// It returns the first error other than EOF or a close caused by Join itself.
func Join(a, b net.Conn, stats *JoinStats) error {
	if stats == nil {
		stats = &JoinStats{}
	}
	var (
		once     sync.Once
		firstErr error
	)
	fail := func(err error) {
		once.Do(func() {
			if !errors.Is(err, net.ErrClosed) {
				firstErr = err // not a close made by us or our caller
			}
			a.Close()
			b.Close()
		})
	}
	done := make(chan struct{})
	workers.Go(func() {
		defer close(done)
		copyHalf(a, b, &stats.BToA, fail)
	})
	// a→b runs at once on this goroutine: for an HBONE server that is the
	// client's early data, already waiting, on its way to the upstream.
	copyHalf(b, a, &stats.AToB, fail)
	<-done
	a.Close()
	b.Close()
	once.Do(func() {})
	return firstErr
}

// copyHalf copies src to dst; on EOF it half-closes dst, on error it calls fail.
func copyHalf(dst, src net.Conn, n *atomic.Int64, fail func(error)) {
	err := copyData(dst, src, n)
	if err != nil {
		fail(err)
		return
	}
	if err := closeWrite(dst); err != nil {
		fail(err)
	}
}

// closeWrite half-closes c, or closes it when it cannot half-close.
func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		err := cw.CloseWrite()
		if errors.Is(err, net.ErrClosed) {
			return nil
		}
		return err
	}
	return c.Close()
}

// streamWriterTo is implemented by both ends of a tunneled stream: it hands
// the received buffer itself to the destination, without a copy.
type streamWriterTo interface {
	writeTo(dst io.Writer, count *atomic.Int64) error
}

// Copy buffers start small so that an idle connection holds only a small
// buffer, and grow to large ones while reads keep filling them (bulk
// transfer): fewer, larger writes are what makes the tunnel fast.
const (
	smallBufSize = 16 << 10
	largeBufSize = 256 << 10
)

var (
	smallBufs = sync.Pool{New: func() any { b := make([]byte, smallBufSize); return &b }}
	largeBufs = sync.Pool{New: func() any { b := make([]byte, largeBufSize); return &b }}
)

// copyData copies until EOF (returning nil) or an error.
func copyData(dst io.Writer, src io.Reader, count *atomic.Int64) error {
	if d, s := plainTCP(dst), plainTCP(src); d != nil && s != nil {
		// Both kernel sockets: io.Copy splices without entering user space.
		n, err := io.Copy(d, s)
		count.Add(n)
		return err
	}
	if s, ok := src.(streamWriterTo); ok {
		return s.writeTo(dst, count)
	}
	pool := &smallBufs
	bp := pool.Get().(*[]byte)
	defer func() { pool.Put(bp) }()
	for {
		buf := *bp
		nr, rerr := src.Read(buf)
		if nr > 0 {
			nw, werr := dst.Write(buf[:nr])
			count.Add(int64(nw))
			if werr != nil {
				return werr
			}
		}
		if rerr != nil {
			if rerr == io.EOF {
				return nil
			}
			return rerr
		}
		// Switch buffer size: a full buffer means more is waiting.
		if nr == len(buf) && pool == &smallBufs {
			pool.Put(bp)
			pool = &largeBufs
			bp = pool.Get().(*[]byte)
		} else if nr < len(buf)/4 && pool == &largeBufs {
			pool.Put(bp)
			pool = &smallBufs
			bp = pool.Get().(*[]byte)
		}
	}
}

// plainTCP is c's TCP connection when c is one, or wraps one without
// transforming the bytes and says so with a PlainTCP method; else nil.
func plainTCP(c any) *net.TCPConn {
	switch c := c.(type) {
	case *net.TCPConn:
		return c
	case interface{ PlainTCP() *net.TCPConn }:
		return c.PlainTCP()
	}
	return nil
}

package hbone

import (
	"io"
	"net"
	"sync"
)

// recvQueue holds a stream's received bytes in pooled fixed-size chunks: no
// buffer ever grows by reallocation (and copying), an idle stream holds
// none, and a reader can hand many chunks to one writev(2).
type recvQueue struct {
	chunks []*[]byte // filled chunks; the last one may have room
	off    int       // read offset into chunks[0]
	n      int       // bytes queued
}

const recvChunkSize = 64 << 10

var recvChunks = sync.Pool{New: func() any { b := make([]byte, 0, recvChunkSize); return &b }}

func (q *recvQueue) len() int { return q.n }

// push copies p in.
func (q *recvQueue) push(p []byte) {
	q.n += len(p)
	for len(p) > 0 {
		if len(q.chunks) == 0 || len(*q.chunks[len(q.chunks)-1]) == recvChunkSize {
			q.chunks = append(q.chunks, recvChunks.Get().(*[]byte))
		}
		last := q.chunks[len(q.chunks)-1]
		n := min(len(p), recvChunkSize-len(*last))
		*last = append(*last, p[:n]...)
		p = p[n:]
	}
}

// read copies out up to len(p) bytes.
func (q *recvQueue) read(p []byte) int {
	total := 0
	for len(p) > 0 && len(q.chunks) > 0 {
		head := *q.chunks[0]
		n := copy(p, head[q.off:])
		p, total, q.off = p[n:], total+n, q.off+n
		if q.off == len(head) {
			q.popHead()
		}
	}
	q.n -= total
	return total
}

func (q *recvQueue) popHead() {
	recycle(q.chunks[0])
	q.chunks[0] = nil
	q.chunks = q.chunks[1:]
	q.off = 0
	if len(q.chunks) == 0 {
		q.chunks = nil
	}
}

// take moves everything queued into a new queue, leaving q empty.
func (q *recvQueue) take() recvQueue {
	t := *q
	*q = recvQueue{}
	return t
}

// writeTo writes the queue to w (one writev(2) for a TCP connection) and
// recycles its chunks. It returns the bytes written.
func (q *recvQueue) writeTo(w io.Writer) (int64, error) {
	bufs := make(net.Buffers, 0, len(q.chunks))
	for i, c := range q.chunks {
		b := *c
		if i == 0 {
			b = b[q.off:]
		}
		bufs = append(bufs, b)
	}
	n, err := bufs.WriteTo(w)
	q.drop()
	return n, err
}

// drop recycles every chunk.
func (q *recvQueue) drop() {
	for _, c := range q.chunks {
		recycle(c)
	}
	*q = recvQueue{}
}

func recycle(c *[]byte) {
	*c = (*c)[:0]
	recvChunks.Put(c)
}

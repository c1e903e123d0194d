package hbone

import (
	"io"
	"sync"
	"sync/atomic"
)

// uploadBody is the request body of a tunneled stream, read by
// x/net/http2's writer goroutine. Normally it reads the pipe that Conn.Write
// feeds. During Conn.ReadFrom (which Join uses) it reads the source
// directly: bulk data then goes from the source socket straight into the
// HTTP/2 frame buffer, without a copy through the pipe and two goroutine
// hand-offs per chunk.
type uploadBody struct {
	pr *io.PipeReader

	// early is what remains of DialRequest.EarlyData: the first Reads
	// return it, so it leaves right after the CONNECT HEADERS.
	early []byte

	mu     sync.Mutex
	src    io.Reader
	count  *atomic.Int64
	done   chan error // receives the outcome of reading src (nil at EOF)
	closed bool
}

func (b *uploadBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	if len(b.early) > 0 {
		n := copy(p, b.early)
		b.early = b.early[n:]
		b.mu.Unlock()
		return n, nil
	}
	src, count := b.src, b.count
	b.mu.Unlock()
	if src == nil {
		return b.pr.Read(p)
	}
	n, err := src.Read(p)
	if n > 0 && count != nil {
		count.Add(int64(n))
	}
	if err == io.EOF {
		// The source is done, not the stream: Join decides on CloseWrite.
		b.detach(nil)
		return n, nil
	}
	if err != nil {
		b.detach(err)
		return n, err // the transport resets the stream
	}
	return n, nil
}

// Close is called by the transport when the stream no longer takes data.
func (b *uploadBody) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.detach(ErrStreamClosed)
	return b.pr.Close()
}

// attach makes the next Reads read src; done receives the outcome.
func (b *uploadBody) attach(src io.Reader, count *atomic.Int64, done chan error) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	b.src, b.count, b.done = src, count, done
	return true
}

func (b *uploadBody) detach(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.src == nil {
		return
	}
	b.src, b.count = nil, nil
	b.done <- err
}

package hbone

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"

	"github.com/ambientmesh/ambient-operator/internal/spiffe"
)

// Conn is the client end of one tunneled stream: a net.Conn to the target,
// carried in an HTTP/2 CONNECT stream over a pooled mTLS connection.
//
// CloseWrite ends the upload (END_STREAM); the server then closes the write
// side of its upstream connection, and Read keeps returning what the target
// sends until it closes too. Close resets the stream (RST_STREAM) if it is
// still open. Read deadlines behave as in net.Conn; a write deadline that
// passes while a Write is blocked resets the stream, like crypto/tls.
type Conn struct {
	target   netip.AddrPort
	via      netip.AddrPort
	peer     spiffe.ID
	local    net.Addr
	body     io.ReadCloser // response body: the download direction
	upload   *io.PipeWriter
	uploadRd *uploadBody
	closedCh chan struct{} // closed by Close
	cancel   context.CancelFunc
	pc       *poolConn
	rd       *deadlineReader
	wmu      sync.Mutex
	wdl      *deadline
	closeMu  sync.Mutex
	closed   bool
	wclosed  bool
	closeErr error
}

func newConn(pc *poolConn, d *DialRequest, resp *http.Response, upload *io.PipeWriter, uploadRd *uploadBody, cancel context.CancelFunc) *Conn {
	c := &Conn{
		target:   d.Target,
		via:      d.Via,
		peer:     d.Peer,
		local:    pc.localAddr,
		body:     resp.Body,
		upload:   upload,
		uploadRd: uploadRd,
		closedCh: make(chan struct{}),
		cancel:   cancel,
		pc:       pc,
		rd:       newDeadlineReader(resp.Body),
	}
	c.wdl = newDeadline(c.onWriteDeadline)
	return c
}

// Read reads what the target sent.
func (c *Conn) Read(p []byte) (int, error) {
	n, err := c.rd.Read(p)
	return n, c.mapReadErr(err)
}

func (c *Conn) readDirect(p []byte) (int, error) {
	n, err := c.rd.readDirect(p)
	return n, c.mapReadErr(err)
}

func (c *Conn) mapReadErr(err error) error {
	if err == nil || err == io.EOF || errors.Is(err, os.ErrDeadlineExceeded) {
		return err
	}
	c.closeMu.Lock()
	closed := c.closed
	c.closeMu.Unlock()
	if closed {
		return ErrStreamClosed
	}
	return c.wrapErr(err)
}

// wrapErr names the stream in err and says plainly when the peer reset it.
func (c *Conn) wrapErr(err error) error {
	var se http2.StreamError
	if errors.As(err, &se) {
		return fmt.Errorf("hbone: stream to %s via %s reset by the server (%s): %w", c.target, c.via, se.Code, err)
	}
	return fmt.Errorf("hbone: stream to %s via %s: %w", c.target, c.via, err)
}

// Write sends p to the target. It returns once the HTTP/2 transport has taken
// all of p (flow control applies back-pressure here).
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if isClosed(c.wdl.wait()) {
		return 0, os.ErrDeadlineExceeded
	}
	n, err := c.upload.Write(p)
	if err != nil {
		err = c.mapWriteErr(err)
	}
	return n, err
}

func (c *Conn) mapWriteErr(err error) error {
	c.closeMu.Lock()
	defer c.closeMu.Unlock()
	switch {
	case c.closeErr != nil:
		return c.closeErr
	case c.closed:
		return ErrStreamClosed
	case err == io.ErrClosedPipe && c.wclosed:
		return fmt.Errorf("hbone: write after CloseWrite: %w", net.ErrClosed)
	case err == io.ErrClosedPipe:
		// The transport closed the body reader: the stream was reset or the
		// server finished its response before reading all of the upload.
		return fmt.Errorf("hbone: stream to %s via %s was closed by the peer: %w", c.target, c.via, net.ErrClosed)
	}
	return c.wrapErr(err)
}

// ReadFrom sends everything r yields until EOF (implementing io.ReaderFrom,
// so io.Copy uses it). The HTTP/2 writer reads r directly into its frame
// buffer. It does not end the upload: call CloseWrite for that.
func (c *Conn) ReadFrom(r io.Reader) (int64, error) {
	var n atomic.Int64
	err := c.readFrom(r, &n)
	return n.Load(), err
}

func (c *Conn) readFrom(r io.Reader, count *atomic.Int64) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.closeMu.Lock()
	closed, wclosed := c.closed, c.wclosed
	c.closeMu.Unlock()
	switch {
	case closed:
		return ErrStreamClosed
	case wclosed:
		return fmt.Errorf("hbone: write after CloseWrite: %w", net.ErrClosed)
	}
	done := make(chan error, 1)
	if !c.uploadRd.attach(r, count, done) {
		return c.mapWriteErr(io.ErrClosedPipe)
	}
	// The writer goroutine may be blocked reading the pipe: an empty write
	// wakes it up to notice the attached source. It completes whenever the
	// writer next reads the pipe (at the latest after r is done).
	go c.upload.Write(nil)
	select {
	case err := <-done:
		if err != nil {
			return c.mapWriteErr(err)
		}
		return nil
	case <-c.closedCh:
		return ErrStreamClosed
	}
}

// onWriteDeadline runs when the write deadline passes: a Write blocked at
// that moment cannot be resumed, so the stream is reset (like crypto/tls).
func (c *Conn) onWriteDeadline() {
	if c.wmu.TryLock() {
		c.wmu.Unlock() // no Write in progress: only later Writes fail
		return
	}
	c.abort(os.ErrDeadlineExceeded)
}

// CloseWrite ends the upload direction: the server sees EOF and half-closes
// its upstream connection. Reading continues until the target closes.
func (c *Conn) CloseWrite() error {
	c.closeMu.Lock()
	if c.closed || c.wclosed {
		c.closeMu.Unlock()
		return nil
	}
	c.wclosed = true
	c.closeMu.Unlock()
	return c.upload.Close()
}

// Close closes both directions; an unfinished stream is reset.
func (c *Conn) Close() error {
	c.abort(nil)
	return nil
}

func (c *Conn) abort(cause error) {
	c.closeMu.Lock()
	if c.closed {
		c.closeMu.Unlock()
		return
	}
	c.closed = true
	if cause != nil {
		c.closeErr = cause
	}
	close(c.closedCh)
	c.closeMu.Unlock()
	c.upload.CloseWithError(ErrStreamClosed)
	c.body.Close() // sends RST_STREAM(CANCEL) unless the server already ended the stream
	c.cancel()
}

// LocalAddr is the local address of the underlying HBONE TCP connection.
func (c *Conn) LocalAddr() net.Addr { return c.local }

// RemoteAddr is the tunnel's target (the :authority), not the HBONE endpoint.
func (c *Conn) RemoteAddr() net.Addr { return net.TCPAddrFromAddrPort(c.target) }

// Via is the HBONE endpoint the stream goes through.
func (c *Conn) Via() netip.AddrPort { return c.via }

// ConnectionState is the TLS state of the HBONE connection carrying the
// stream (peer certificates, cipher suite, ...).
func (c *Conn) ConnectionState() tls.ConnectionState { return c.pc.tlsState }

// PeerIdentity is the verified identity of the HBONE endpoint.
func (c *Conn) PeerIdentity() spiffe.ID { return c.peer }

// SetDeadline sets both deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

// SetReadDeadline makes a blocked or later Read return os.ErrDeadlineExceeded
// after t; no data is lost. Reads become deadline-aware from the first call
// on (a Read already blocked before it is not interrupted), which keeps
// deadline-free readers on the fast path.
func (c *Conn) SetReadDeadline(t time.Time) error { c.rd.setDeadline(t); return nil }

// SetWriteDeadline makes later Writes fail after t, and resets the stream if
// a Write is blocked when t passes.
func (c *Conn) SetWriteDeadline(t time.Time) error { c.wdl.set(t); return nil }

package hbone

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
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
// still open. Deadlines behave as in net.Conn, except that a Write blocked on
// the TCP connection itself (not on flow control) waits for it.
type Conn struct {
	st     *h2stream
	target netip.AddrPort
	via    netip.AddrPort
	peer   spiffe.ID
	pc     *poolConn
	early  int // bytes sent before the answer (EarlyData and forwarded from EarlyFrom)
}

// EarlyBytes is how many bytes Dial sent before the server's answer:
// DialRequest.EarlyData and what it forwarded from DialRequest.EarlyFrom.
func (c *Conn) EarlyBytes() int { return c.early }

// Read reads what the target sent.
func (c *Conn) Read(p []byte) (int, error) {
	n, err := c.st.Read(p)
	return n, c.mapErr(err)
}

func (c *Conn) writeTo(dst io.Writer, count *atomic.Int64) error {
	return c.mapErr(c.st.writeTo(dst, count))
}

// Write sends p to the target. It returns once all of p is written (flow
// control applies back-pressure here).
func (c *Conn) Write(p []byte) (int, error) {
	n, err := c.st.Write(p)
	return n, c.mapErr(err)
}

// ReadFrom sends everything r yields until EOF (io.ReaderFrom). It does not
// end the upload: call CloseWrite for that.
func (c *Conn) ReadFrom(r io.Reader) (int64, error) {
	var n atomic.Int64
	err := copyData(c, r, &n)
	return n.Load(), err
}

// mapErr names the stream in err and says plainly when the peer reset it.
func (c *Conn) mapErr(err error) error {
	if err == nil || err == io.EOF || errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, net.ErrClosed) {
		return err
	}
	var se http2.StreamError
	if errors.As(err, &se) {
		return fmt.Errorf("hbone: stream to %s via %s reset by the server (%s): %w", c.target, c.via, se.Code, err)
	}
	return fmt.Errorf("hbone: stream to %s via %s: %w", c.target, c.via, err)
}

// CloseWrite ends the upload direction: the server sees EOF and half-closes
// its upstream connection. Reading continues until the target closes.
func (c *Conn) CloseWrite() error { return c.mapErr(c.st.CloseWrite()) }

// Close closes both directions; an unfinished stream is reset.
func (c *Conn) Close() error { return c.st.Close() }

// LocalAddr is the local address of the underlying HBONE TCP connection.
func (c *Conn) LocalAddr() net.Addr { return c.pc.localAddr }

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
	c.st.setReadDeadline(t)
	return c.SetWriteDeadline(t)
}

// SetReadDeadline makes a blocked or later Read return os.ErrDeadlineExceeded
// after t; no data is lost.
func (c *Conn) SetReadDeadline(t time.Time) error { c.st.setReadDeadline(t); return nil }

// SetWriteDeadline makes later Writes fail after t, and resets the stream if
// a Write is waiting for flow control when t passes.
func (c *Conn) SetWriteDeadline(t time.Time) error { c.st.setWriteDeadline(t); return nil }

package hbone

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"golang.org/x/net/http2/hpack"
)

// The limits that keep one peer, even one holding a valid mesh certificate,
// from taking more than its share of a connection's reader, writer and memory.
// doc.go ("Abuse limits") lists them with the Server's own.
const (
	// maxQueuedControl bounds the frames the reading goroutine queues for the
	// connection's writer (PING and SETTINGS acks, RST_STREAM, WINDOW_UPDATE).
	// They pile up only while the writer is blocked, that is while the peer
	// sends without reading; x/net's server uses the same bound.
	maxQueuedControl = 10000
	// maxEmptyDataFrames bounds consecutive DATA frames that carry nothing
	// and do not end their stream: each costs work and moves nothing.
	maxEmptyDataFrames = 100
	// maxHeaderBlockWire bounds the bytes the frames of one header block
	// (HEADERS and its CONTINUATIONs) take on the wire: 16 times the header
	// list we accept. The Framer fails a block whose fields exceed the list
	// size, but CONTINUATION frames that carry nothing never reach it.
	maxHeaderBlockWire = 16 * maxHeaderListSize
	// frameHeaderLen is the size of an HTTP/2 frame header.
	frameHeaderLen = 9
	// closeGrace is how long a session that sent GOAWAY for a protocol error
	// or abuse waits for the GOAWAY to be written before it closes anyway.
	closeGrace = time.Second
	// maxWindow is the largest flow-control window HTTP/2 allows.
	maxWindow = 1<<31 - 1
)

// abuseError ends a connection whose peer went past one of the abuse limits;
// limit names it (the server logs it).
type abuseError struct{ limit string }

func (e *abuseError) Error() string {
	return "hbone: connection closed: the peer exceeded the limit on " + e.limit
}

// resetMeter is the rapid-reset detector (CVE-2023-44487 and its variants): a
// leaky bucket of the streams a peer reset before they were answered, or made
// us reset by breaking the protocol. It holds burst and drains perSecond. A
// client never has more than MaxConcurrentStreams unanswered streams, so the
// server's burst of 4×MaxConcurrentStreams and drain of MaxConcurrentStreams
// per second mean abandoning every stream slot four times at once, or all of
// them every second: a client that gives up on slow answers does neither.
type resetMeter struct {
	burst, perSecond float64
	level            float64
	last             time.Time
}

func newResetMeter(maxStreams uint32) *resetMeter {
	return &resetMeter{burst: 4 * float64(maxStreams), perSecond: float64(maxStreams)}
}

// add counts one reset at now and says whether the peer is past the limit.
func (m *resetMeter) add(now time.Time) bool {
	if !m.last.IsZero() {
		m.level = max(0, m.level-now.Sub(m.last).Seconds()*m.perSecond)
	}
	m.last = now
	m.level++
	return m.level > m.burst
}

// budgetReader fails reads past a budget that the session renews before each
// frame, so that one ReadFrame call (which reads a header block's
// CONTINUATION frames itself) cannot read forever.
type budgetReader struct {
	r    io.Reader
	left int
}

var errHeaderBlockTooLong = &abuseError{limit: "header block size"}

func (b *budgetReader) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, errHeaderBlockTooLong
	}
	if len(p) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= n
	return n, err
}

// connectionSpecific are the header fields RFC 9113 §8.2.2 forbids: HTTP/2
// has its own connection management.
var connectionSpecific = map[string]bool{
	"connection": true, "keep-alive": true, "proxy-connection": true, "transfer-encoding": true, "upgrade": true,
}

// requestPseudo are the request pseudo-header fields, as bits of a set.
var requestPseudo = map[string]uint8{":method": 1, ":scheme": 2, ":authority": 4, ":path": 8, ":protocol": 16}

// validateRequestHeaders applies RFC 9113 §8.2 and §8.3 to a request's header
// list: lowercase names, pseudo-header fields first, each at most once, only
// the request ones, :method present; no connection-specific fields; te only
// "trailers". A CONNECT without :protocol carries :authority and neither
// :scheme nor :path (§8.5); another method carries :scheme and :path. A
// request that breaks them is malformed: the stream is reset with
// PROTOCOL_ERROR. (x/net's Framer already rejects some of these; they are
// checked here too so that the rule does not depend on what decoded the
// block.)
func validateRequestHeaders(fields []hpack.HeaderField) error {
	var seen uint8 // requestPseudo bits
	method, regular := "", false
	for _, f := range fields {
		if f.Name == "" {
			return errors.New("empty header name")
		}
		if strings.ContainsFunc(f.Name, func(r rune) bool { return 'A' <= r && r <= 'Z' }) {
			return fmt.Errorf("header name %q is not lowercase", f.Name)
		}
		if f.Name[0] == ':' {
			bit := requestPseudo[f.Name]
			switch {
			case regular:
				return fmt.Errorf("pseudo-header %s after a regular header", f.Name)
			case bit == 0:
				return fmt.Errorf("pseudo-header %s is not a request pseudo-header", f.Name)
			case seen&bit != 0:
				return fmt.Errorf("duplicate pseudo-header %s", f.Name)
			}
			seen |= bit
			if f.Name == ":method" {
				method = f.Value
			}
			continue
		}
		regular = true
		if connectionSpecific[f.Name] {
			return fmt.Errorf("connection-specific header %s", f.Name)
		}
		if f.Name == "te" && !strings.EqualFold(strings.TrimSpace(f.Value), "trailers") {
			return errors.New(`te other than "trailers"`)
		}
	}
	has := func(name string) bool { return seen&requestPseudo[name] != 0 }
	switch {
	case !has(":method"):
		return errors.New("no :method")
	case method != "CONNECT":
		if !has(":scheme") || !has(":path") {
			return errors.New("request without :scheme or :path")
		}
	case has(":protocol"): // extended CONNECT: refused later, with 400
	case !has(":authority"):
		return errors.New("CONNECT without :authority")
	case has(":scheme") || has(":path"):
		return errors.New("CONNECT with :scheme or :path")
	}
	return nil
}

package hbone

import (
	"cmp"
	"time"
)

// ConnSettings are the settings of one HBONE connection that the Pool (the client end) and
// the Server share. Both configs embed them and fill them with the same defaults, so the
// two ends of a mesh connection agree on frames, windows and keepalives.
type ConnSettings struct {
	// HandshakeTimeout bounds the TLS handshake (default 10s); for the Pool it includes
	// the TCP connect and applies on top of the caller's context.
	HandshakeTimeout time.Duration
	// PingInterval sends an HTTP/2 PING when nothing was received for this long, and
	// PingTimeout closes the connection if the PING is not answered: they detect a dead
	// peer. Defaults 30s and 15s; a negative PingInterval disables keepalives.
	PingInterval time.Duration
	PingTimeout  time.Duration
	// MaxReadFrameSize is the largest DATA frame accepted from the peer (default 1 MiB:
	// fewer frames per byte on bulk transfers).
	MaxReadFrameSize uint32
	// StreamWindow and ConnWindow are the HTTP/2 receive windows (defaults 4 MiB and
	// 16 MiB): large enough to keep a fast stream busy.
	StreamWindow int32
	ConnWindow   int32
}

// withDefaults is s with each zero setting replaced by its default; a negative duration
// (disabled) stays.
func (s ConnSettings) withDefaults() ConnSettings {
	s.HandshakeTimeout = cmp.Or(s.HandshakeTimeout, 10*time.Second)
	s.PingInterval = cmp.Or(s.PingInterval, 30*time.Second)
	s.PingTimeout = cmp.Or(s.PingTimeout, 15*time.Second)
	s.MaxReadFrameSize = cmp.Or(s.MaxReadFrameSize, 1<<20)
	s.StreamWindow = cmp.Or(s.StreamWindow, 4<<20)
	s.ConnWindow = cmp.Or(s.ConnWindow, 16<<20)
	return s
}

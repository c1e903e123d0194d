package hbone

import "time"

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

// withDefaults is s with each zero setting replaced by its default.
func (s ConnSettings) withDefaults() ConnSettings {
	s.HandshakeTimeout = orDefault(s.HandshakeTimeout, 10*time.Second)
	s.PingInterval = orDefault(s.PingInterval, 30*time.Second)
	s.PingTimeout = orDefault(s.PingTimeout, 15*time.Second)
	if s.MaxReadFrameSize == 0 {
		s.MaxReadFrameSize = 1 << 20
	}
	if s.StreamWindow == 0 {
		s.StreamWindow = 4 << 20
	}
	if s.ConnWindow == 0 {
		s.ConnWindow = 16 << 20
	}
	return s
}

// orDefault is d, or def when d is zero; a negative d (disabled) stays.
func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

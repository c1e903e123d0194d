package hbone

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// StatusError is a refused CONNECT. On the server side a Handler returns one
// (see Reject) to choose the HTTP status; on the client side Dial returns one
// with the status the server answered.
type StatusError struct {
	Code   int    // HTTP status code, e.g. 403, 503
	Reason string // short human-readable cause; sent to the client in the response body
}

func (e *StatusError) Error() string {
	s := fmt.Sprintf("hbone: CONNECT refused: %d %s", e.Code, http.StatusText(e.Code))
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

// Reject returns a *StatusError with the given code and formatted reason.
func Reject(code int, format string, args ...any) error {
	return &StatusError{Code: code, Reason: fmt.Sprintf(format, args...)}
}

// StatusCode returns the HTTP status carried by err: the code of a
// *StatusError in its chain, else 503 (the upstream could not be reached).
func StatusCode(err error) int {
	var se *StatusError
	if errors.As(err, &se) && se.Code >= 400 && se.Code <= 599 {
		return se.Code
	}
	return http.StatusServiceUnavailable
}

// ErrStreamClosed is returned by operations on a tunneled stream that was
// closed locally.
var ErrStreamClosed = fmt.Errorf("hbone: stream closed: %w", net.ErrClosed)

// maxReasonLen bounds the reason sent in a refusal and read back by a client.
const maxReasonLen = 256

// ParseAuthority parses a CONNECT :authority, which for HBONE must be a
// literal IP address and port ("10.0.0.1:80", "[fd00::1]:8080"): no host
// names, no zone, port 1-65535.
func ParseAuthority(authority string) (netip.AddrPort, error) {
	if authority == "" {
		return netip.AddrPort{}, errors.New("hbone: :authority is empty, want IP:port")
	}
	host, port, err := net.SplitHostPort(authority)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("hbone: :authority %q: want IP:port: %w", authority, err)
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("hbone: :authority %q: host must be an IP address", authority)
	}
	if addr.Zone() != "" {
		return netip.AddrPort{}, fmt.Errorf("hbone: :authority %q: IPv6 zones are not allowed", authority)
	}
	if strings.Contains(host, ":") != addr.Is6() || addr.Is4In6() {
		return netip.AddrPort{}, fmt.Errorf("hbone: :authority %q: IPv4-mapped IPv6 addresses are not allowed", authority)
	}
	p, err := parsePort(port)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("hbone: :authority %q: %w", authority, err)
	}
	return netip.AddrPortFrom(addr, p), nil
}

func parsePort(s string) (uint16, error) {
	if s == "" || len(s) > 5 || (len(s) > 1 && s[0] == '0') {
		return 0, fmt.Errorf("port %q: want a number 1-65535 without leading zeros", s)
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("port %q: want a number 1-65535", s)
		}
		n = n*10 + int(s[i]-'0')
	}
	if n < 1 || n > 65535 {
		return 0, fmt.Errorf("port %q: want a number 1-65535", s)
	}
	return uint16(n), nil
}

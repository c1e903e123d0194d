package telemetry

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
)

// Header names Propagate reads and writes.
const (
	HeaderTraceParent = "Traceparent"
	HeaderTraceState  = "Tracestate"
	HeaderRequestID   = "X-Request-Id"
)

// traceparent version 00: "vv-<32 hex trace id>-<16 hex parent id>-ff".
const (
	traceParentLen = 2 + 1 + 32 + 1 + 16 + 1 + 2
	flagSampled    = 0x01
)

// Propagate makes h carry a valid W3C traceparent for the next hop and
// returns its trace id and the new span id (the traceparent's parent-id),
// for the access log.
//
// A valid incoming traceparent keeps its trace id and its sampled flag; the
// parent-id becomes a new span id of this hop. Versions above 00 are read
// as version 00 (their first four fields) and forwarded as 00, as the spec
// asks of a version-00 implementation; other trace flags are cleared because
// version 00 reserves them. When traceparent is absent or invalid
// (malformed, upper-case hex, version ff, all-zero ids, or more than one
// traceparent header), a new trace starts, not sampled because the
// waypoint records nothing, and tracestate is dropped, since it belongs to
// the trace it came with. Otherwise tracestate is left as it is, and
// baggage always is.
//
// x-request-id is set to a new UUID (version 4) when absent or empty and
// kept as it is otherwise. h must not be nil.
func Propagate(h http.Header) (traceID, spanID string) {
	var tid [16]byte
	var flags byte
	values := h.Values(HeaderTraceParent)
	if len(values) == 1 && parseTraceParent(values[0], &tid, &flags) {
		flags &= flagSampled
	} else {
		randomNonZero(tid[:])
		flags = 0
		h.Del(HeaderTraceState)
	}
	var sid [8]byte
	randomNonZero(sid[:])

	// Both new values are made in one buffer and stored in one slice: two allocations
	// per request instead of four.
	var out [traceParentLen + uuidLen]byte
	copy(out[:], "00-")
	hex.Encode(out[3:35], tid[:])
	out[35] = '-'
	hex.Encode(out[36:52], sid[:])
	out[52] = '-'
	hex.Encode(out[53:55], []byte{flags})
	n := traceParentLen
	newID := h.Get(HeaderRequestID) == ""
	if newID {
		putUUID(out[n : n+uuidLen])
		n += uuidLen
	}
	text := string(out[:n])
	set := make([]string, 0, 2)
	set = append(set, text[:traceParentLen])
	h[HeaderTraceParent] = set[0:1:1]
	if newID {
		set = append(set, text[traceParentLen:])
		h[HeaderRequestID] = set[1:2:2]
	}
	return text[3:35], text[36:52]
}

// parseTraceParent reads a traceparent value as the W3C Trace Context spec
// (level 1) defines it, storing the trace id and flags; it reports whether
// the value is valid.
func parseTraceParent(v string, traceID *[16]byte, flags *byte) bool {
	if len(v) < traceParentLen || v[2] != '-' || v[35] != '-' || v[52] != '-' {
		return false
	}
	var version, f [1]byte
	var parentID [8]byte
	if !decodeLowerHex(version[:], v[0:2]) || version[0] == 0xff ||
		!decodeLowerHex(traceID[:], v[3:35]) || isZero(traceID[:]) ||
		!decodeLowerHex(parentID[:], v[36:52]) || isZero(parentID[:]) ||
		!decodeLowerHex(f[:], v[53:55]) {
		return false
	}
	// Version 00 is exactly 55 characters; a later version may append
	// fields, each after a dash.
	if len(v) > traceParentLen && (version[0] == 0 || v[traceParentLen] != '-') {
		return false
	}
	*flags = f[0]
	return true
}

// decodeLowerHex decodes s into dst (len(s) == 2*len(dst)), accepting only
// lower-case hex digits as the spec requires.
func decodeLowerHex(dst []byte, s string) bool {
	for i := range dst {
		hi, ok1 := lowerHexDigit(s[2*i])
		lo, ok2 := lowerHexDigit(s[2*i+1])
		if !ok1 || !ok2 {
			return false
		}
		dst[i] = hi<<4 | lo
	}
	return true
}

func lowerHexDigit(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

func isZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// randomNonZero fills b with random bytes, never all zero (an all-zero id
// is invalid).
func randomNonZero(b []byte) {
	for {
		rand.Read(b) // never fails (Go ≥ 1.24)
		if !isZero(b) {
			return
		}
	}
}

// uuidLen is the length of a UUID in its usual text form.
const uuidLen = 36

// putUUID writes a random (version 4) UUID in its usual text form to s (uuidLen bytes).
func putUUID(s []byte) {
	var u [16]byte
	rand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40 // version 4
	u[8] = u[8]&0x3f | 0x80 // variant 10
	hex.Encode(s[0:8], u[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], u[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], u[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], u[8:10])
	s[23] = '-'
	hex.Encode(s[24:36], u[10:16])
}

package telemetry

import (
	"net/http"
	"regexp"
	"strings"
	"testing"
)

// A version-00 traceparent as the W3C spec defines it, written
// independently of the parser under test.
var validTraceParent = regexp.MustCompile(`^00-([0-9a-f]{32})-([0-9a-f]{16})-0[01]$`)

func checkTraceParent(t *testing.T, h http.Header, traceID, spanID string) {
	t.Helper()
	tp := h.Values("traceparent")
	if len(tp) != 1 {
		t.Fatalf("traceparent = %q, want one value", tp)
	}
	m := validTraceParent.FindStringSubmatch(tp[0])
	if m == nil || m[1] == strings.Repeat("0", 32) || m[2] == strings.Repeat("0", 16) {
		t.Fatalf("traceparent %q is not valid", tp[0])
	}
	if m[1] != traceID || m[2] != spanID {
		t.Errorf("returned %s, %s; traceparent %q", traceID, spanID, tp[0])
	}
}

var uuidV4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestPropagate(t *testing.T) {
	const (
		trace  = "4bf92f3577b34da6a3ce929d0e0e4736"
		parent = "00f067aa0ba902b7"
	)
	for _, tc := range []struct {
		name        string
		traceparent []string // nil: absent
		keepsTrace  bool     // the incoming trace id is kept (else a new one)
		flags       string   // outgoing flags
	}{
		{name: "absent", flags: "00"},
		{name: "valid sampled", traceparent: []string{"00-" + trace + "-" + parent + "-01"}, keepsTrace: true, flags: "01"},
		{name: "valid not sampled", traceparent: []string{"00-" + trace + "-" + parent + "-00"}, keepsTrace: true, flags: "00"},
		{name: "reserved flags cleared", traceparent: []string{"00-" + trace + "-" + parent + "-ff"}, keepsTrace: true, flags: "01"},
		{name: "random flag cleared", traceparent: []string{"00-" + trace + "-" + parent + "-02"}, keepsTrace: true, flags: "00"},
		{name: "later version read as 00", traceparent: []string{"cc-" + trace + "-" + parent + "-01-what-the-future-holds"}, keepsTrace: true, flags: "01"},
		{name: "later version, exact length", traceparent: []string{"01-" + trace + "-" + parent + "-01"}, keepsTrace: true, flags: "01"},
		{name: "upper-case trace id", traceparent: []string{"00-" + strings.ToUpper(trace) + "-" + parent + "-01"}, flags: "00"},
		{name: "upper-case parent id", traceparent: []string{"00-" + trace + "-00F067AA0BA902B7-01"}, flags: "00"},
		{name: "upper-case flags", traceparent: []string{"00-" + trace + "-" + parent + "-0A"}, flags: "00"},
		{name: "version ff", traceparent: []string{"ff-" + trace + "-" + parent + "-01"}, flags: "00"},
		{name: "all-zero trace id", traceparent: []string{"00-" + strings.Repeat("0", 32) + "-" + parent + "-01"}, flags: "00"},
		{name: "all-zero parent id", traceparent: []string{"00-" + trace + "-0000000000000000-01"}, flags: "00"},
		{name: "version 00 with more fields", traceparent: []string{"00-" + trace + "-" + parent + "-01-00"}, flags: "00"},
		{name: "later version, no dash after flags", traceparent: []string{"cc-" + trace + "-" + parent + "-01x"}, flags: "00"},
		{name: "short", traceparent: []string{"00-" + trace + "-" + parent[:15] + "-01"}, flags: "00"},
		{name: "dashes moved", traceparent: []string{"00-" + trace[:31] + "-" + trace[31:] + parent[:15] + "-01"}, flags: "00"},
		{name: "empty", traceparent: []string{""}, flags: "00"},
		{name: "two headers", traceparent: []string{"00-" + trace + "-" + parent + "-01", "00-" + trace + "-" + parent + "-01"}, flags: "00"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			for _, v := range tc.traceparent {
				h.Add("traceparent", v)
			}
			h.Set("tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
			h.Set("baggage", "userId=alice,isProduction=false")

			traceID, spanID := Propagate(h)

			checkTraceParent(t, h, traceID, spanID)
			if keeps := traceID == trace; keeps != tc.keepsTrace {
				t.Errorf("trace id %s, incoming %s: kept = %v, want %v", traceID, trace, keeps, tc.keepsTrace)
			}
			if spanID == parent {
				t.Errorf("span id %s is the incoming parent id", spanID)
			}
			if flags := h.Get("traceparent")[53:]; flags != tc.flags {
				t.Errorf("flags = %s, want %s", flags, tc.flags)
			}
			wantState := ""
			if tc.keepsTrace {
				wantState = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
			}
			if got := h.Values("tracestate"); strings.Join(got, "|") != wantState {
				t.Errorf("tracestate = %q, want %q", got, wantState)
			}
			if got := h.Values("baggage"); len(got) != 1 || got[0] != "userId=alice,isProduction=false" {
				t.Errorf("baggage = %q, changed", got)
			}
		})
	}
}

func TestPropagateMakesANewSpanPerHop(t *testing.T) {
	h := http.Header{}
	trace1, span1 := Propagate(h)
	trace2, span2 := Propagate(h)
	if trace1 != trace2 || span1 == span2 {
		t.Errorf("second hop: trace %s → %s, span %s → %s; want same trace, new span", trace1, trace2, span1, span2)
	}
	other, _ := Propagate(http.Header{})
	if other == trace1 {
		t.Errorf("two new traces have the same id %s", other)
	}
}

func TestPropagateRequestID(t *testing.T) {
	h := http.Header{}
	Propagate(h)
	id := h.Get("x-request-id")
	if !uuidV4.MatchString(id) {
		t.Errorf("x-request-id = %q, want a UUID v4", id)
	}
	Propagate(h)
	if got := h.Values("x-request-id"); len(got) != 1 || got[0] != id {
		t.Errorf("x-request-id = %q after another hop, want %q kept", got, id)
	}

	h = http.Header{"X-Request-Id": {"client-chosen id"}}
	Propagate(h)
	if got := h.Get("x-request-id"); got != "client-chosen id" {
		t.Errorf("x-request-id = %q, want the client's kept", got)
	}

	h = http.Header{"X-Request-Id": {""}}
	Propagate(h)
	if got := h.Get("x-request-id"); !uuidV4.MatchString(got) {
		t.Errorf("empty x-request-id became %q, want a UUID v4", got)
	}
}

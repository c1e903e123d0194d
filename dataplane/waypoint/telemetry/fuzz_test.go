package telemetry

import (
	"net/http"
	"testing"
)

// FuzzPropagate feeds arbitrary traceparent and tracestate values: nothing
// may panic, the result is always one valid version-00 traceparent, and
// tracestate is either kept as it was (the trace went on) or dropped.
//
//	go test ./dataplane/waypoint/telemetry -run '^$' -fuzz FuzzPropagate -fuzztime 20s
func FuzzPropagate(f *testing.F) {
	f.Add("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "congo=t61rcWkgMzE")
	f.Add("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-extra", "")
	f.Add("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "a=b")
	f.Add("00-00000000000000000000000000000000-00f067aa0ba902b7-01", "")
	f.Add("", "rojo=00f067aa0ba902b7")
	f.Add("00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01", "x")
	f.Fuzz(func(t *testing.T, traceparent, tracestate string) {
		h := http.Header{"Traceparent": {traceparent}, "Tracestate": {tracestate}}
		traceID, spanID := Propagate(h)
		checkTraceParent(t, h, traceID, spanID)
		if state := h.Values("Tracestate"); len(state) > 1 || len(state) == 1 && state[0] != tracestate {
			t.Errorf("tracestate %q became %q", tracestate, state)
		}
		if len(traceparent) >= 35 && traceID == traceparent[3:35] {
			if h.Get("Tracestate") != tracestate {
				t.Errorf("trace %s went on but tracestate was dropped", traceID)
			}
		}
	})
}

package telemetry

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

var accessLogFields = []string{
	"time", "method", "authority", "path", "protocol", "response_code", "response_flags", "duration_ms",
	"bytes_received", "bytes_sent", "upstream_cluster", "upstream_host", "upstream_service_time_ms",
	"source_address", "source_principal", "destination_service", "route_name", "x_request_id",
	"traceparent", "trace_id", "span_id", "user_agent", "attempts", "rbac_policy",
}

// logLines logs entries and parses every line written back as JSON.
func logLines(t *testing.T, entries ...*Entry) []map[string]any {
	t.Helper()
	var out bytes.Buffer
	log := NewAccessLog(&out)
	for _, e := range entries {
		log.Log(e)
	}
	var lines []map[string]any
	for line := range strings.Lines(out.String()) {
		var fields map[string]any
		if err := json.Unmarshal([]byte(line), &fields); err != nil {
			t.Fatalf("line %q is not JSON: %v", line, err)
		}
		lines = append(lines, fields)
	}
	return lines
}

func TestAccessLogLineHasEveryField(t *testing.T) {
	start := time.Date(2026, 3, 1, 12, 30, 45, 123456789, time.FixedZone("CET", 3600))
	lines := logLines(t, &Entry{
		Start: start, Method: "GET", Authority: "reviews:9080", Path: "/reviews/0?x=<1>&y", Protocol: "HTTP/1.1",
		ResponseCode: 503, ResponseFlags: "UF,URX", Duration: 1500 * time.Millisecond,
		BytesReceived: 10, BytesSent: 95,
		UpstreamCluster: "outbound|9080||reviews.bookinfo.svc.cluster.local", UpstreamHost: "10.0.1.7:9080",
		UpstreamServiceTime: 42 * time.Millisecond, Attempts: 3,
		SourceAddress: "10.0.0.5", SourcePrincipal: "spiffe://cluster.local/ns/bookinfo/sa/productpage",
		DestinationService: "reviews.bookinfo.svc.cluster.local", RouteName: "reviews-route",
		RequestID:   "2f1d7a58-5a3c-4a8e-9d2e-7c1b2a3d4e5f",
		TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		TraceID:     "4bf92f3577b34da6a3ce929d0e0e4736", SpanID: "00f067aa0ba902b7",
		UserAgent: "curl/8.5.0",
	})
	if len(lines) != 1 {
		t.Fatalf("%d lines, want 1", len(lines))
	}
	got := lines[0]
	want := map[string]any{
		"time": "2026-03-01T11:30:45.123456789Z", "method": "GET", "authority": "reviews:9080",
		"path": "/reviews/0?x=<1>&y", "protocol": "HTTP/1.1", "response_code": 503.0, "response_flags": "UF,URX",
		"duration_ms": 1500.0, "bytes_received": 10.0, "bytes_sent": 95.0,
		"upstream_cluster": "outbound|9080||reviews.bookinfo.svc.cluster.local", "upstream_host": "10.0.1.7:9080",
		"upstream_service_time_ms": 42.0, "source_address": "10.0.0.5",
		"source_principal":    "spiffe://cluster.local/ns/bookinfo/sa/productpage",
		"destination_service": "reviews.bookinfo.svc.cluster.local", "route_name": "reviews-route",
		"x_request_id": "2f1d7a58-5a3c-4a8e-9d2e-7c1b2a3d4e5f",
		"traceparent":  "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"trace_id":     "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7",
		"user_agent": "curl/8.5.0", "attempts": 3.0, "rbac_policy": "",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("logged\n %v\nwant\n %v", got, want)
	}
}

func TestAccessLogDefaults(t *testing.T) {
	before := time.Now().UTC()
	got := logLines(t, &Entry{Method: "POST", ResponseCode: 403, ResponseFlags: FlagRBACAccessDenied, RBACPolicy: "ns[shop]-policy[deny-all]-rule[0]"})[0]

	keys := make([]string, 0, len(got))
	for k := range got {
		keys = append(keys, k)
	}
	if slices.Sort(keys); !slices.Equal(keys, slices.Sorted(slices.Values(accessLogFields))) {
		t.Errorf("fields %v, want %v", keys, accessLogFields)
	}
	if got["upstream_service_time_ms"] != nil {
		t.Errorf("upstream_service_time_ms = %v without an upstream response, want null", got["upstream_service_time_ms"])
	}
	if got["rbac_policy"] != "ns[shop]-policy[deny-all]-rule[0]" || got["response_flags"] != "RBAC" {
		t.Errorf("rbac_policy, response_flags = %v, %v", got["rbac_policy"], got["response_flags"])
	}
	logged, err := time.Parse(time.RFC3339Nano, got["time"].(string))
	if err != nil || logged.Before(before) || logged.After(time.Now()) {
		t.Errorf("time = %v (%v), want now", got["time"], err)
	}
	if got := logLines(t, &Entry{})[0]["response_flags"]; got != "-" {
		t.Errorf("response_flags = %v without flags, want \"-\"", got)
	}
}

func TestAccessLogEscapesWhatClientsSend(t *testing.T) {
	hostile := "/a\"b\\c\n{\"x\":1}\x00\xff\u2028"
	got := logLines(t, &Entry{Path: hostile, UserAgent: hostile, Authority: "\t"})[0]
	if got["authority"] != "\t" {
		t.Errorf("authority = %q", got["authority"])
	}
	// Invalid UTF-8 becomes U+FFFD; everything else survives.
	want := strings.ToValidUTF8(hostile, "\uFFFD")
	if got["path"] != want || got["user_agent"] != want {
		t.Errorf("path, user_agent = %q, %q; want %q", got["path"], got["user_agent"], want)
	}
}

func TestAccessLogConcurrentLinesDoNotInterleave(t *testing.T) {
	var out unsyncedWriter
	log := NewAccessLog(&out)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				log.Log(&Entry{Method: "GET", Path: fmt.Sprintf("/%d/%d/%s", g, i, strings.Repeat("x", 500))})
			}
		})
	}
	wg.Wait()
	n := 0
	scanner := bufio.NewScanner(&out.buf)
	for scanner.Scan() {
		if !json.Valid(scanner.Bytes()) {
			t.Fatalf("line %d is not JSON: %q", n, scanner.Text())
		}
		n++
	}
	if n != 1600 {
		t.Errorf("%d lines, want 1600", n)
	}
}

// unsyncedWriter is a writer that is not safe for concurrent use: if
// AccessLog wrote to it concurrently, the race detector would say so.
type unsyncedWriter struct{ buf bytes.Buffer }

func (w *unsyncedWriter) Write(p []byte) (int, error) { return w.buf.Write(p) }

func TestNilAccessLogLogsNothing(t *testing.T) {
	log := NewAccessLog(nil)
	if log != nil {
		t.Fatal("NewAccessLog(nil) is not nil")
	}
	log.Log(&Entry{Method: "GET"}) // must not panic
	NewAccessLog(&bytes.Buffer{}).Log(nil)
}

package telemetry

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
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

// encodingJSONLine is the access log line as encoding/json writes it (HTML
// escaping off), the reference for the log's own encoder.
func encodingJSONLine(t testing.TB, e *Entry) string {
	t.Helper()
	var upstreamMS *int64
	if e.UpstreamServiceTime > 0 {
		ms := e.UpstreamServiceTime.Milliseconds()
		upstreamMS = &ms
	}
	line := struct {
		Time                  string `json:"time"`
		Method                string `json:"method"`
		Authority             string `json:"authority"`
		Path                  string `json:"path"`
		Protocol              string `json:"protocol"`
		ResponseCode          int    `json:"response_code"`
		ResponseFlags         string `json:"response_flags"`
		DurationMS            int64  `json:"duration_ms"`
		BytesReceived         int64  `json:"bytes_received"`
		BytesSent             int64  `json:"bytes_sent"`
		UpstreamCluster       string `json:"upstream_cluster"`
		UpstreamHost          string `json:"upstream_host"`
		UpstreamServiceTimeMS *int64 `json:"upstream_service_time_ms"`
		SourceAddress         string `json:"source_address"`
		SourcePrincipal       string `json:"source_principal"`
		DestinationService    string `json:"destination_service"`
		RouteName             string `json:"route_name"`
		RequestID             string `json:"x_request_id"`
		TraceParent           string `json:"traceparent"`
		TraceID               string `json:"trace_id"`
		SpanID                string `json:"span_id"`
		UserAgent             string `json:"user_agent"`
		Attempts              int    `json:"attempts"`
		RBACPolicy            string `json:"rbac_policy"`
	}{
		e.Start.UTC().Format(time.RFC3339Nano), e.Method, e.Authority, e.Path, e.Protocol, e.ResponseCode, orNone(e.ResponseFlags),
		e.Duration.Milliseconds(), e.BytesReceived, e.BytesSent, e.UpstreamCluster, e.UpstreamHost, upstreamMS,
		e.SourceAddress, e.SourcePrincipal, e.DestinationService, e.RouteName, e.RequestID, e.TraceParent, e.TraceID, e.SpanID,
		e.UserAgent, e.Attempts, e.RBACPolicy,
	}
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(&line); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

// checkLineIsEncodingJSONs logs e and compares the line with encoding/json's.
func checkLineIsEncodingJSONs(t testing.TB, e *Entry) {
	t.Helper()
	var out bytes.Buffer
	NewAccessLog(&out).Log(e)
	if want := encodingJSONLine(t, e); out.String() != want {
		t.Errorf("logged\n %q\nencoding/json writes\n %q", out.String(), want)
	}
}

func TestAccessLogLineIsWhatEncodingJSONWrites(t *testing.T) {
	start := time.Date(2026, 3, 1, 12, 30, 45, 120000000, time.FixedZone("CET", 3600))
	for _, e := range []*Entry{
		{Start: start},
		{Start: start, Method: "GET", Path: `/a "quoted" \path`, UserAgent: "tab\there\nnew line\r\b\f\x00\x1f\x7f",
			Authority: "<html> & friends", RouteName: "ünïcode ✓ \u2028\u2029", RBACPolicy: "bad utf-8 \xff\xfe end",
			ResponseCode: -1, Duration: -time.Second, BytesReceived: 1 << 62, Attempts: 7, UpstreamServiceTime: time.Millisecond},
	} {
		checkLineIsEncodingJSONs(t, e)
	}
}

// FuzzAccessLogStrings: whatever the strings of an entry, the line is the one
// encoding/json would write.
//
//	go test ./dataplane/waypoint/telemetry -run '^$' -fuzz FuzzAccessLogStrings -fuzztime 20s
func FuzzAccessLogStrings(f *testing.F) {
	f.Add("/reviews?x=<1>&y", "curl/8.5.0", "\x00\u2028\xff\"\\")
	f.Fuzz(func(t *testing.T, path, userAgent, other string) {
		checkLineIsEncodingJSONs(t, &Entry{Start: time.Unix(1, 0), Path: path, UserAgent: userAgent,
			Method: other, Authority: other, RequestID: other, RBACPolicy: other})
	})
}

func BenchmarkAccessLog(b *testing.B) {
	log := NewAccessLog(io.Discard)
	e := &Entry{
		Start: time.Now(), Method: "POST", Authority: "echo.shop.svc.cluster.local", Path: "/echo", Protocol: "HTTP/1.1",
		ResponseCode: 200, Duration: 1500 * time.Microsecond, BytesReceived: 1024, BytesSent: 1024,
		UpstreamCluster: "outbound|80||echo.shop.svc.cluster.local", UpstreamHost: "10.0.1.7:8080",
		UpstreamServiceTime: 2 * time.Millisecond, Attempts: 1,
		SourceAddress: "10.0.0.5", SourcePrincipal: "spiffe://cluster.local/ns/client/sa/fortio",
		DestinationService: "echo.shop.svc.cluster.local", RouteName: "default", RequestID: "2f1d7a58-5a3c-4a8e-9d2e-7c1b2a3d4e5f",
		TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", TraceID: "4bf92f3577b34da6a3ce929d0e0e4736",
		SpanID: "00f067aa0ba902b7", UserAgent: "fortio.org/fortio-1.68.2",
	}
	b.ReportAllocs()
	for b.Loop() {
		log.Log(e)
	}
}

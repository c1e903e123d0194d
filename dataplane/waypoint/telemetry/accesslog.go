package telemetry

import (
	"bytes"
	"encoding/json"
	"io"
	"sync"
	"time"
)

// Entry is one request as the access log records it. The JSON field names
// are given with each field; see also AccessLog.
type Entry struct {
	Start         time.Time     // time: when the request started (RFC 3339, UTC); zero means now
	Method        string        // method
	Authority     string        // authority: :authority / Host as received
	Path          string        // path: :path as received, with the query
	Protocol      string        // protocol: "HTTP/1.1", "HTTP/2", ... ("tcp" for TCP connections)
	ResponseCode  int           // response_code: 0 when no response was sent
	ResponseFlags string        // response_flags: Flag* constants joined with ","; "" means "-"
	Duration      time.Duration // duration_ms: from the first request byte to the last response byte

	BytesReceived int64 // bytes_received: request body bytes from the client
	BytesSent     int64 // bytes_sent: response body bytes to the client

	UpstreamCluster     string        // upstream_cluster
	UpstreamHost        string        // upstream_host: the endpoint's ip:port
	UpstreamServiceTime time.Duration // upstream_service_time_ms: until the upstream's response headers; 0: no upstream response (logged as null)
	Attempts            int           // attempts: upstream attempts made, retries included

	SourceAddress      string // source_address: the real client IP (from a trusted Forwarded header, else the peer)
	SourcePrincipal    string // source_principal: the client's SPIFFE ID, "" without mTLS
	DestinationService string // destination_service: the service's hostname
	RouteName          string // route_name
	RBACPolicy         string // rbac_policy: the policy that denied the request, "" when none did

	RequestID   string // x_request_id
	TraceParent string // traceparent: as sent upstream
	TraceID     string // trace_id: from Propagate
	SpanID      string // span_id: from Propagate, this hop's span
	UserAgent   string // user_agent
}

// jsonEntry is the line's layout: field order and names are part of the log
// format that people grep and parse.
type jsonEntry struct {
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
}

// AccessLog writes one JSON object per line for each logged request. It is
// safe for concurrent use: each line is written with a single Write, and
// lines never interleave. A nil *AccessLog logs nothing. Write errors are
// dropped: a full disk must not fail requests.
type AccessLog struct {
	mu  sync.Mutex
	w   io.Writer
	buf bytes.Buffer
	enc *json.Encoder
}

// NewAccessLog returns an access log writing to w, or nil (log nothing) when
// w is nil.
func NewAccessLog(w io.Writer) *AccessLog {
	if w == nil {
		return nil
	}
	a := &AccessLog{w: w}
	a.enc = json.NewEncoder(&a.buf)
	a.enc.SetEscapeHTML(false) // paths and user agents stay readable
	return a
}

// Log writes e as one line.
func (a *AccessLog) Log(e *Entry) {
	if a == nil || e == nil {
		return
	}
	start := e.Start
	if start.IsZero() {
		start = time.Now()
	}
	line := jsonEntry{
		Time:               start.UTC().Format(time.RFC3339Nano),
		Method:             e.Method,
		Authority:          e.Authority,
		Path:               e.Path,
		Protocol:           e.Protocol,
		ResponseCode:       e.ResponseCode,
		ResponseFlags:      orNone(e.ResponseFlags),
		DurationMS:         e.Duration.Milliseconds(),
		BytesReceived:      e.BytesReceived,
		BytesSent:          e.BytesSent,
		UpstreamCluster:    e.UpstreamCluster,
		UpstreamHost:       e.UpstreamHost,
		SourceAddress:      e.SourceAddress,
		SourcePrincipal:    e.SourcePrincipal,
		DestinationService: e.DestinationService,
		RouteName:          e.RouteName,
		RequestID:          e.RequestID,
		TraceParent:        e.TraceParent,
		TraceID:            e.TraceID,
		SpanID:             e.SpanID,
		UserAgent:          e.UserAgent,
		Attempts:           e.Attempts,
		RBACPolicy:         e.RBACPolicy,
	}
	if e.UpstreamServiceTime > 0 {
		ms := e.UpstreamServiceTime.Milliseconds()
		line.UpstreamServiceTimeMS = &ms
	}

	a.mu.Lock()
	defer a.mu.Unlock()
	a.buf.Reset()
	// jsonEntry holds only strings and integers: encoding cannot fail.
	_ = a.enc.Encode(&line)
	_, _ = a.w.Write(a.buf.Bytes())
}

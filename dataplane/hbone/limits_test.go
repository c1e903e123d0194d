package hbone

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2/hpack"
)

func TestResetMeter(t *testing.T) {
	t0 := time.Unix(1000, 0)
	// Resets at the given offsets from t0, with MaxConcurrentStreams 10: a
	// burst of 40, drained at 10 per second.
	burst := func(n int, at time.Duration) []time.Duration {
		var d []time.Duration
		for range n {
			d = append(d, at)
		}
		return d
	}
	steady := func(n int, every time.Duration) []time.Duration {
		var d []time.Duration
		for i := range n {
			d = append(d, time.Duration(i)*every)
		}
		return d
	}
	for _, tc := range []struct {
		name   string
		resets []time.Duration
		trips  int // 1-based index of the reset that goes past the limit; 0: none
	}{
		{"every slot abandoned four times at once", burst(40, 0), 0},
		{"one more", burst(41, 0), 41},
		{"drained after a second", append(burst(40, 0), burst(10, time.Second)...), 0},
		{"not drained enough", append(burst(40, 0), burst(11, time.Second)...), 51},
		{"steady at the drain rate", steady(1000, 100*time.Millisecond), 0},
		// Every 30 ms, 0.7 more each time: past 40 at the 57th.
		{"steady at three times the drain rate", steady(1000, 30*time.Millisecond), 57},
		{"a rapid reset flood", steady(1000, time.Microsecond), 41},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newResetMeter(10)
			trips := 0
			for i, at := range tc.resets {
				if m.add(t0.Add(at)) {
					trips = i + 1
					break
				}
			}
			if trips != tc.trips {
				t.Errorf("past the limit at reset %d, want %d", trips, tc.trips)
			}
		})
	}
}

func TestValidateRequestHeaders(t *testing.T) {
	fields := func(kv ...string) []hpack.HeaderField {
		var f []hpack.HeaderField
		for i := 0; i+1 < len(kv); i += 2 {
			f = append(f, hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
		}
		return f
	}
	connect := []string{":method", "CONNECT", ":authority", "10.0.0.1:80"}
	for _, tc := range []struct {
		name    string
		fields  []hpack.HeaderField
		wantErr string // "" for valid
	}{
		{"CONNECT", fields(connect...), ""},
		{"CONNECT with headers", fields(append(connect, "baggage", "k=v", "te", "trailers", "traceparent", "00-1")...), ""},
		{"te: Trailers", fields(append(connect, "te", " Trailers")...), ""},
		{"GET", fields(":method", "GET", ":scheme", "https", ":path", "/", ":authority", "a"), ""},
		{"extended CONNECT (refused later)", fields(":method", "CONNECT", ":protocol", "websocket", ":scheme", "https", ":path", "/", ":authority", "a"), ""},
		{"empty :authority (refused later)", fields(":method", "CONNECT", ":authority", ""), ""},
		{"connection", fields(append(connect, "connection", "keep-alive")...), "connection-specific header connection"},
		{"keep-alive", fields(append(connect, "keep-alive", "5")...), "connection-specific"},
		{"proxy-connection", fields(append(connect, "proxy-connection", "close")...), "connection-specific"},
		{"transfer-encoding", fields(append(connect, "transfer-encoding", "chunked")...), "connection-specific"},
		{"upgrade", fields(append(connect, "upgrade", "h2c")...), "connection-specific"},
		{"te: gzip", fields(append(connect, "te", "gzip")...), `te other than "trailers"`},
		{"te: trailers, gzip", fields(append(connect, "te", "trailers, gzip")...), `te other than "trailers"`},
		{":path on CONNECT", fields(append(connect, ":path", "/")...), "CONNECT with :scheme or :path"},
		{":scheme on CONNECT", fields(append(connect, ":scheme", "https")...), "CONNECT with :scheme or :path"},
		{"CONNECT without :authority", fields(":method", "CONNECT"), "CONNECT without :authority"},
		{"GET without :path", fields(":method", "GET", ":scheme", "https", ":authority", "a"), "without :scheme or :path"},
		{"no :method", fields(":authority", "10.0.0.1:80"), "no :method"},
		{"duplicate :authority", fields(append(connect, ":authority", "10.0.0.2:80")...), "duplicate pseudo-header :authority"},
		{"duplicate :method", fields(":method", "CONNECT", ":method", "GET", ":authority", "a"), "duplicate pseudo-header :method"},
		{"uppercase name", fields(append(connect, "Baggage", "k=v")...), `"Baggage" is not lowercase`},
		{"uppercase pseudo-header", fields(":method", "CONNECT", ":Authority", "a"), "not lowercase"},
		{"pseudo after regular", fields(":method", "CONNECT", "baggage", "k=v", ":authority", "a"), "pseudo-header :authority after a regular header"},
		{"response pseudo-header", fields(append(connect, ":status", "200")...), ":status is not a request pseudo-header"},
		{"empty name", fields(append(connect, "", "x")...), "empty header name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := validateRequestHeaders(tc.fields)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("valid request rejected: %v", err)
			case tc.wantErr != "" && err == nil:
				t.Errorf("malformed request accepted, want %q", tc.wantErr)
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Errorf("error %q, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestBudgetReader(t *testing.T) {
	b := &budgetReader{r: bytes.NewReader(make([]byte, 100)), left: 30}
	got, err := io.ReadAll(b)
	if len(got) != 30 || !errors.Is(err, errHeaderBlockTooLong) {
		t.Fatalf("read %d bytes, %v; want 30 then the budget error", len(got), err)
	}
	b.left = 100
	if got, err := io.ReadAll(b); len(got) != 70 || err != nil {
		t.Fatalf("after renewal: read %d bytes, %v; want the other 70 and EOF", len(got), err)
	}
}

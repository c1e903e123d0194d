package waypoint

import (
	"net/http"
	"testing"
)

func TestCleanQueryKeepsWhatNetURLParses(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"a=1&b=%41", "a=1&b=%41"}, // unchanged, not re-encoded
		{"b=2&a=1", "b=2&a=1"},
		{"a=1;b=2&c=3", "c=3"},
		{"a=%zz&b=2", "b=2"},
		{"a=%4", ""},
	} {
		if got := cleanQuery(tc.in); got != tc.want {
			t.Errorf("cleanQuery(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestStreamedAnswers(t *testing.T) {
	for _, tc := range []struct {
		length      int64
		contentType string
		want        bool
	}{
		{length: 10, contentType: "text/plain", want: false},
		{length: -1, contentType: "text/plain", want: true},
		{length: 10, contentType: "text/event-stream", want: true},
		{length: 10, contentType: " Text/Event-Stream ; charset=utf-8", want: true},
		{length: 10, contentType: "text/event-streams", want: false},
	} {
		resp := &http.Response{ContentLength: tc.length, Header: http.Header{"Content-Type": {tc.contentType}}}
		if got := streamed(resp); got != tc.want {
			t.Errorf("streamed(length %d, %q) = %v, want %v", tc.length, tc.contentType, got, tc.want)
		}
	}
}

func TestBodyBuffersBySizeClass(t *testing.T) {
	for _, tc := range []struct{ n, capacity int }{{1, 512}, {512, 512}, {513, 1024}, {1024, 1024}, {40000, 65536}, {maxInlineBody, maxInlineBody}} {
		b := getBodyBuffer(tc.n)
		if len(*b) != tc.n || cap(*b) != tc.capacity {
			t.Errorf("getBodyBuffer(%d): len %d cap %d, want len %d cap %d", tc.n, len(*b), cap(*b), tc.n, tc.capacity)
		}
		putBodyBuffer(b)
	}
}

func TestCopyHeaderDoesNotShareRoomToGrow(t *testing.T) {
	src := http.Header{"A": make([]string, 1, 4)}
	src["A"][0] = "1"
	dst := http.Header{"B": {"2"}}
	copyHeader(dst, src)
	dst["A"] = append(dst["A"], "appended to dst")
	src["A"] = append(src["A"], "appended to src")
	if len(dst["A"]) != 2 || dst["A"][1] != "appended to dst" || src["A"][1] != "appended to src" {
		t.Errorf("dst %v, src %v: the copies share their growth", dst, src)
	}
	copyHeader(dst, http.Header{"B": {"3"}})
	if got := dst["B"]; len(got) != 2 || got[1] != "3" {
		t.Errorf("B = %v, want 2 then 3", got)
	}
}

package ascii

import "testing"

func TestFoldsASCIILettersOnly(t *testing.T) {
	for _, tc := range []struct {
		s, t        string
		equal, pref bool
	}{
		{"Text/Event-Stream", "text/event-stream", true, true},
		{"text/event-stream", "text/event-stream", true, true},
		{"text/event-ſtream", "text/event-stream", false, false}, // no Unicode folding
		{"/API/v1", "/api", false, true},
		{"/ap", "/api", false, false},
		{"", "", true, true},
		{"a[", "A{", false, false}, // '[' and '{' differ by the case bit but are not letters
	} {
		if got := EqualFold(tc.s, tc.t); got != tc.equal {
			t.Errorf("EqualFold(%q, %q) = %v, want %v", tc.s, tc.t, got, tc.equal)
		}
		if got := HasPrefixFold(tc.s, tc.t); got != tc.pref {
			t.Errorf("HasPrefixFold(%q, %q) = %v, want %v", tc.s, tc.t, got, tc.pref)
		}
	}
	for in, want := range map[string]string{"HTTPS": "https", "http": "http", "MiXeD-1": "mixed-1", "ÄB": "Äb"} {
		if got := ToLower(in); got != want {
			t.Errorf("ToLower(%q) = %q, want %q", in, got, want)
		}
	}
}

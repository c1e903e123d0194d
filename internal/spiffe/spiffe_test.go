package spiffe

import (
	"net/url"
	"strings"
	"testing"
)

func TestParseValid(t *testing.T) {
	for _, s := range []string{
		"spiffe://cluster.local/ns/default/sa/default",
		"spiffe://example.org/ns/shop-1/sa/cart.v2",
		"spiffe://td_with_underscore/ns/a/sa/b",
	} {
		id, err := Parse(s)
		if err != nil {
			t.Fatalf("Parse(%q): %v", s, err)
		}
		if got := id.String(); got != s {
			t.Errorf("round trip: got %q, want %q", got, s)
		}
		if got := id.URI().String(); got != s {
			t.Errorf("URI(): got %q, want %q", got, s)
		}
		u, _ := url.Parse(s)
		fromURI, err := FromURI(u)
		if err != nil || fromURI != id {
			t.Errorf("FromURI(%q) = %v, %v; want %v", s, fromURI, err, id)
		}
	}
}

func TestParseInvalidNamesTheField(t *testing.T) {
	for _, tc := range []struct{ in, wantErr string }{
		{"", "scheme"},
		{"http://cluster.local/ns/a/sa/b", "scheme"},
		{"SPIFFE://cluster.local/ns/a/sa/b", "scheme"},
		{"spiffe://cluster.local", "path"},
		{"spiffe://cluster.local/", "path"},
		{"spiffe://cluster.local/ns/a", "path"},
		{"spiffe://cluster.local/ns/a/sa/b/extra", "path"},
		{"spiffe://cluster.local/ns/a/sa/", "service account: must not be empty"},
		{"spiffe://cluster.local/ns//sa/b", "namespace: must not be empty"},
		{"spiffe://cluster.local/sa/b/ns/a", "path"},
		{"spiffe:///ns/a/sa/b", "trust domain: must not be empty"},
		{"spiffe://Cluster.local/ns/a/sa/b", "trust domain: invalid character"},
		{"spiffe://cluster.local:443/ns/a/sa/b", "trust domain: invalid character"},
		{"spiffe://user@cluster.local/ns/a/sa/b", "trust domain: invalid character"},
		{"spiffe://cluster.local/ns/A/sa/b", "namespace: invalid character"},
		{"spiffe://cluster.local/ns/-a/sa/b", "namespace: must start and end"},
		{"spiffe://cluster.local/ns/a/sa/b?x=1", "invalid character '?'"},
		{"spiffe://cluster.local/ns/a/sa/b%41", "invalid character '%'"},
		{"spiffe://cluster.local/ns/a/sa/b..c", "service account: label"},
		{"spiffe://cluster.local/ns/" + strings.Repeat("a", 64) + "/sa/b", "namespace: longer than 63"},
		{"spiffe://cluster.local/ns/a/sa/" + strings.Repeat("b", 3000), "longer than 2048"},
	} {
		_, err := Parse(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("Parse(%q) error = %v, want it to contain %q", tc.in, err, tc.wantErr)
		}
	}
}

func TestFromURIRejectsExtras(t *testing.T) {
	for _, s := range []string{
		"spiffe://cluster.local/ns/a/sa/b#frag",
		"spiffe://cluster.local/ns/a/sa/b?q",
		"spiffe://u:p@cluster.local/ns/a/sa/b",
	} {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := FromURI(u); err == nil {
			t.Errorf("FromURI(%q) accepted", s)
		}
	}
	if _, err := FromURI(nil); err == nil {
		t.Error("FromURI(nil) accepted")
	}
}

func TestZeroAndNew(t *testing.T) {
	var zero ID
	if !zero.IsZero() || zero.String() != "" {
		t.Errorf("zero ID: IsZero=%v String=%q", zero.IsZero(), zero.String())
	}
	if _, err := New("cluster.local", "ns", "Bad"); err == nil || !strings.Contains(err.Error(), "service account") {
		t.Errorf("New with bad SA: %v", err)
	}
	id := MustNew("cluster.local", "shop", "cart")
	if id.String() != "spiffe://cluster.local/ns/shop/sa/cart" {
		t.Errorf("MustNew: %s", id)
	}
}

// FuzzParse checks that Parse never panics and that whatever it accepts is
// canonical: formatting and re-parsing gives the same ID and the same text.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"spiffe://cluster.local/ns/default/sa/default",
		"spiffe://a/ns/b/sa/c.d",
		"spiffe://cluster.local/ns/a/sa/b/c",
		"spiffe://cluster.local/ns/%2e/sa/b",
		"spiffe://[::1]/ns/a/sa/b",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := Parse(s)
		if err != nil {
			return
		}
		if id.String() != s {
			t.Fatalf("accepted non-canonical %q (formats as %q)", s, id.String())
		}
		again, err := Parse(id.URI().String())
		if err != nil || again != id {
			t.Fatalf("URI round trip of %q: %v, %v", s, again, err)
		}
	})
}

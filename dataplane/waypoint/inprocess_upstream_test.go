package waypoint_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"net/textproto"
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	wt "github.com/ambientmesh/ambient-operator/dataplane/waypoint/waypointtest"
)

// The waypoint's HTTP/1.1 requests to an endpoint reuse one HBONE stream while the
// answers allow it, and that connection counts against the cluster's max_connections.
func TestHTTP1UpstreamConnectionIsReused(t *testing.T) {
	m, v1, _ := reviewsMesh(t, wt.PrefixRoute("default", "/", "v1"))
	client := m.Client(wt.ClientID, netip.Addr{}, false)
	for i := range 5 {
		a := send(client, http.MethodPost, "/items", nil, "a body of known length")
		if a.err != nil || a.status != http.StatusOK {
			t.Fatalf("POST %d: %d %v", i, a.status, a.err)
		}
	}
	if got := v1.Tunnels.Load(); got != 1 {
		t.Errorf("5 requests in a row opened %d HBONE streams to the endpoint, want 1 (kept alive)", got)
	}
	if c := clustersDump(t, m)["v1"]; c.CxTotal != 1 || c.CxActive != 1 {
		t.Errorf("/clusters shows cx_total %d, cx_active %d; want the one open connection counted", c.CxTotal, c.CxActive)
	}
}

// What an HTTP/1.1 answer carries besides its body crosses the waypoint: informational
// answers (103 Early Hints) before it, and trailers after it.
func TestHTTP1EarlyHintsAndTrailersCrossTheWaypoint(t *testing.T) {
	m := wt.Start(t, wt.Options{})
	b := m.Backend("reviews-v1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		w.Header().Set("Trailer", "X-Checksum")
		_, _ = io.WriteString(w, "reviews")
		w.Header().Set("X-Checksum", "c0ffee")
	}))
	pushReviews(t, m, nil, []*routev3.Route{route("default", prefix("/"), toCluster("v1"))}, wt.Cluster("v1"), wt.Endpoints("v1", b))

	var hints []string
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		Got1xxResponse: func(code int, header textproto.MIMEHeader) error {
			hints = append(hints, http.StatusText(code)+": "+header.Get("Link"))
			return nil
		},
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+reviewsVIP.String()+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := m.Client(wt.ClientID, netip.Addr{}, false).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || string(body) != "reviews" {
		t.Fatalf("body %q, %v; want reviews", body, err)
	}
	if got := resp.Trailer.Get("X-Checksum"); got != "c0ffee" {
		t.Errorf("trailer X-Checksum = %q, want c0ffee", got)
	}
	if want := "Early Hints: </style.css>; rel=preload"; strings.Join(hints, ", ") != want {
		t.Errorf("informational answers %q, want %q", hints, want)
	}
}

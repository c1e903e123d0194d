package waypoint_test

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	wt "github.com/ambientmesh/ambient-operator/dataplane/waypoint/waypointtest"
)

const reviews = "reviews.shop.svc.cluster.local"

var reviewsVIP = netip.MustParseAddrPort("127.0.100.1:9080")

// named answers with its name, so the client sees which backend served it.
func named(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Served-By", name)
		fmt.Fprintf(w, "%s %s %s", name, r.Method, r.URL.RequestURI())
	})
}

// reviewsMesh serves reviews:9080 from v1 and v2 behind a waypoint with routes rc.
func reviewsMesh(t *testing.T, routes ...*routev3.Route) (*wt.Mesh, *wt.Backend, *wt.Backend) {
	t.Helper()
	m := wt.Start(t, wt.Options{})
	v1, v2 := m.Backend("reviews-v1", named("v1")), m.Backend("reviews-v2", named("v2"))
	name := fmt.Sprintf("%s:%d", reviews, reviewsVIP.Port())
	if nacks := m.Push(
		wt.Cluster("v1"), wt.Cluster("v2"),
		wt.Endpoints("v1", v1), wt.Endpoints("v2", v2),
		wt.HTTPListener(reviews, reviewsVIP),
		wt.RouteConfig(name, routes...),
	); len(nacks) > 0 {
		t.Fatalf("NACKed: %v", nacks)
	}
	m.WaitReady()
	return m, v1, v2
}

func TestRoutesByPathOverHBONEWithTheClientsAddress(t *testing.T) {
	m, v1, v2 := reviewsMesh(t, wt.PrefixRoute("v2", "/v2", "v2"), wt.PrefixRoute("default", "/", "v1"))
	client := m.Client(wt.ClientID, netip.MustParseAddr("127.0.50.7"), false)
	url := "http://" + reviewsVIP.String()
	if code, body := wt.Get(client, url+"/v2/items", nil); code != 200 || body != "v2 GET /v2/items" {
		t.Fatalf("GET /v2/items = %d %q, want v2's answer", code, body)
	}
	if code, body := wt.Get(client, url+"/", nil); code != 200 || body != "v1 GET /" {
		t.Fatalf("GET / = %d %q, want v1's answer", code, body)
	}
	// The waypoint reached each backend over HBONE with its own identity and named the
	// real client in Forwarded.
	for _, b := range []*wt.Backend{v1, v2} {
		fw, peers := b.Forwarded(), b.Peers()
		if len(fw) == 0 || fw[0] != "for=127.0.50.7" || peers[0] != wt.WaypointID {
			t.Errorf("%s saw Forwarded %q from %v, want for=127.0.50.7 from the waypoint", b.ID, fw, peers)
		}
	}
}

func TestH2CPriorKnowledge(t *testing.T) {
	m, _, _ := reviewsMesh(t, wt.PrefixRoute("default", "/", "v1"))
	client := m.Client(wt.ClientID, netip.Addr{}, true)
	resp, err := client.Get("http://" + reviewsVIP.String() + "/h2")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != 200 || resp.Header.Get("X-Served-By") != "v1" {
		t.Fatalf("got %s %d from %q, want HTTP/2 200 from v1", resp.Proto, resp.StatusCode, resp.Header.Get("X-Served-By"))
	}
}

func TestNoRouteIs404(t *testing.T) {
	m, _, _ := reviewsMesh(t, wt.PrefixRoute("only", "/only", "v1"))
	code, body := wt.Get(m.Client(wt.ClientID, netip.Addr{}, false), "http://"+reviewsVIP.String()+"/else", nil)
	if code != http.StatusNotFound || !strings.Contains(body, "no route") {
		t.Fatalf("got %d %q, want 404 no route", code, body)
	}
}

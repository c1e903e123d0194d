package waypoint_test

import (
	"net/http"
	"net/netip"
	"sync"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	wt "github.com/ambientmesh/ambient-operator/dataplane/waypoint/waypointtest"
)

// echoMesh runs a waypoint with echo backends v1 and v2 (clusters "v1" and "v2") and the
// routes given, and returns an HTTP/1.1 client.
func echoMesh(t *testing.T, routes ...*routev3.Route) (*wt.Mesh, *http.Client) {
	t.Helper()
	m := wt.Start(t, wt.Options{})
	v1, v2 := m.Backend("reviews-v1", echo("v1")), m.Backend("reviews-v2", echo("v2"))
	pushReviews(t, m, nil, routes, upstreams(map[string][]*wt.Backend{"v1": {v1}, "v2": {v2}})...)
	return m, m.Client(wt.ClientID, netip.Addr{}, false)
}

func TestWeightedClusters90To10(t *testing.T) {
	split := &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
		Clusters: []*routev3.WeightedCluster_ClusterWeight{
			{Name: "v1", Weight: wrapperspb.UInt32(90)},
			{Name: "v2", Weight: wrapperspb.UInt32(10)},
		},
	}}}
	_, client := echoMesh(t, route("split", prefix("/"), split))

	const total, workers = 1000, 8
	var mu sync.Mutex
	served := map[string]int{}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range total / workers {
				a := send(client, http.MethodGet, "/split", nil, "")
				mu.Lock()
				if a.err != nil || a.status != http.StatusOK {
					served["error"]++
				} else {
					served[a.header.Get("X-Served-By")]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if served["error"] > 0 || served["v1"]+served["v2"] != total {
		t.Fatalf("served %v, want %d answers from v1 or v2", served, total)
	}
	// 90/10 over 1,000 requests: the standard deviation is about 1 point, ±3 points
	// leaves room for chance and none for a wrong split.
	if share := float64(served["v2"]) * 100 / total; share < 7 || share > 13 {
		t.Fatalf("v2 served %.1f%% (%v), want 10 ± 3", share, served)
	}
}

func TestHeaderQueryAndMethodMatches(t *testing.T) {
	byUser := prefix("/")
	byUser.Headers = []*routev3.HeaderMatcher{headerIs("end-user", "jason")}
	byQuery := prefix("/")
	byQuery.QueryParameters = []*routev3.QueryParameterMatcher{{Name: "version", QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: exact("2")}}}
	byMethod := prefix("/")
	byMethod.Headers = []*routev3.HeaderMatcher{headerIs(":method", "DELETE")}
	_, client := echoMesh(t,
		route("jason", byUser, toCluster("v2")),
		route("query", byQuery, toCluster("v2")),
		route("delete", byMethod, toCluster("v2")),
		route("default", prefix("/"), toCluster("v1")),
	)
	for _, tc := range []struct {
		name, method, path string
		header             http.Header
		want               string
	}{
		{"the user's header", http.MethodGet, "/reviews/1", http.Header{"End-User": {"jason"}}, "v2"},
		{"another user", http.MethodGet, "/reviews/1", http.Header{"End-User": {"alice"}}, "v1"},
		{"no user", http.MethodGet, "/reviews/1", nil, "v1"},
		{"the query parameter", http.MethodGet, "/reviews/1?version=2", nil, "v2"},
		{"another query value", http.MethodGet, "/reviews/1?version=3", nil, "v1"},
		{"the method", http.MethodDelete, "/reviews/1", nil, "v2"},
		{"another method", http.MethodPut, "/reviews/1", nil, "v1"},
	} {
		a := send(client, tc.method, tc.path, tc.header, "")
		if a.err != nil || a.status != http.StatusOK || a.header.Get("X-Served-By") != tc.want {
			t.Errorf("%s: %s %s got %d from %q (%v), want 200 from %s", tc.name, tc.method, tc.path, a.status, a.header.Get("X-Served-By"), a.err, tc.want)
		}
	}
}

func TestHeaderOperationsSeenByServerAndClient(t *testing.T) {
	add := func(key, value string, action corev3.HeaderValueOption_HeaderAppendAction) *corev3.HeaderValueOption {
		return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: key, Value: value}, AppendAction: action}
	}
	r := route("headers", prefix("/"), toCluster("v1"))
	r.RequestHeadersToAdd = []*corev3.HeaderValueOption{
		add("x-added", "waypoint", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD),
		add("x-set", "waypoint", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
	}
	r.RequestHeadersToRemove = []string{"x-remove-me"}
	r.ResponseHeadersToAdd = []*corev3.HeaderValueOption{
		add("x-response-added", "waypoint", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD),
		add("x-upstream-version", "waypoint", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
	}
	r.ResponseHeadersToRemove = []string{"x-upstream-secret"}
	_, client := echoMesh(t, r)

	a := get(t, client, "/", http.Header{"X-Added": {"client"}, "X-Set": {"client"}, "X-Remove-Me": {"secret"}})
	seen := echoOf(t, a)
	if got := seen.Header.Values("X-Added"); len(got) != 2 || got[0] != "client" || got[1] != "waypoint" {
		t.Errorf("server saw X-Added %q, want the client's value and the waypoint's appended", got)
	}
	if got := seen.Header.Values("X-Set"); len(got) != 1 || got[0] != "waypoint" {
		t.Errorf("server saw X-Set %q, want only the waypoint's value", got)
	}
	if got := seen.Header.Values("X-Remove-Me"); len(got) != 0 {
		t.Errorf("server saw X-Remove-Me %q, want it removed", got)
	}
	if got := a.header.Get("X-Response-Added"); got != "waypoint" {
		t.Errorf("client saw X-Response-Added %q, want waypoint", got)
	}
	if got := a.header.Values("X-Upstream-Version"); len(got) != 1 || got[0] != "waypoint" {
		t.Errorf("client saw X-Upstream-Version %q, want the upstream's value overwritten", got)
	}
	if got := a.header.Values("X-Upstream-Secret"); len(got) != 0 {
		t.Errorf("client saw X-Upstream-Secret %q, want it removed", got)
	}
}

func TestRewritesSeenByTheServer(t *testing.T) {
	prefixRewrite := toCluster("v1")
	prefixRewrite.PrefixRewrite = "/v1/reviews"
	regexRewrite := toCluster("v1")
	regexRewrite.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{
		Pattern:      &matcherv3.RegexMatcher{Regex: `^/users/([0-9]+)/profile$`},
		Substitution: `/profiles/\1`,
	}
	hostRewrite := toCluster("v1")
	hostRewrite.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: "reviews-internal.shop.svc.cluster.local"}
	_, client := echoMesh(t,
		route("prefix", prefix("/api/reviews"), prefixRewrite),
		route("regex", prefix("/users/"), regexRewrite),
		route("host", prefix("/host"), hostRewrite),
	)
	for _, tc := range []struct {
		path, wantURI, wantHost string
	}{
		{"/api/reviews/7?sort=asc", "/v1/reviews/7?sort=asc", reviewsVIP.String()},
		{"/users/42/profile", "/profiles/42", reviewsVIP.String()},
		{"/host/x", "/host/x", "reviews-internal.shop.svc.cluster.local"},
	} {
		seen := echoOf(t, get(t, client, tc.path, nil))
		if seen.URI != tc.wantURI || seen.Host != tc.wantHost {
			t.Errorf("GET %s: server saw %s with Host %s, want %s with Host %s", tc.path, seen.URI, seen.Host, tc.wantURI, tc.wantHost)
		}
	}
}

func TestRedirect(t *testing.T) {
	redirect := &routev3.Route{
		Name:  "moved",
		Match: prefix("/old"),
		Action: &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{
			HostRedirect:         "reviews.example.com",
			PathRewriteSpecifier: &routev3.RedirectAction_PathRedirect{PathRedirect: "/new"},
			ResponseCode:         routev3.RedirectAction_MOVED_PERMANENTLY,
		}},
	}
	m, _ := echoMesh(t, redirect, route("default", prefix("/"), toCluster("v1")))
	client := m.Client(wt.ClientID, netip.Addr{}, false)
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	a := get(t, client, "/old/page", nil)
	if a.status != http.StatusMovedPermanently || a.header.Get("Location") != "http://reviews.example.com/new" {
		t.Fatalf("got %d Location %q, want 301 to http://reviews.example.com/new (host_redirect replaces host and port, as in Envoy)", a.status, a.header.Get("Location"))
	}
}

func TestConnectionCloseGetsItsAnswer(t *testing.T) {
	_, client := echoMesh(t, route("default", prefix("/"), toCluster("v1")))
	// Each request says "Connection: close": the waypoint answers, then closes the
	// connection, and the answer must arrive before the end of the stream.
	client.Transport.(*http.Transport).DisableKeepAlives = true
	for i := range 20 {
		if a := send(client, http.MethodGet, "/", nil, ""); a.err != nil || a.status != http.StatusOK {
			t.Fatalf("request %d: got %d (%v), want 200", i, a.status, a.err)
		}
	}
}

package route

import (
	"math/rand/v2"
	"net/http"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func weightedRoute(clusters ...*routev3.WeightedCluster_ClusterWeight) *routev3.Route {
	return &routev3.Route{Name: "split", Match: prefixMatch("/"), Action: &routev3.Route_Route{Route: &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{Clusters: clusters}},
	}}}
}

func clusterWeight(name string, weight uint32) *routev3.WeightedCluster_ClusterWeight {
	return &routev3.WeightedCluster_ClusterWeight{Name: name, Weight: u32(weight)}
}

func TestSingleCluster(t *testing.T) {
	tbl := mustCompile(t, routeConfig(anyHost(routeTo("reviews", prefixMatch("/")))))
	f := tbl.Match(request("GET", "/")).Forward
	wc := f.PickCluster(func(uint64) uint64 { panic("a single cluster needs no draw") })
	if wc.Name != "reviews" || wc.Weight != 1 {
		t.Errorf("PickCluster = %+v, want reviews with weight 1", wc)
	}
}

func TestWeightedClusterSplit(t *testing.T) {
	tbl := mustCompile(t, routeConfig(anyHost(weightedRoute(clusterWeight("v1", 90), clusterWeight("v2", 10)))))
	f := tbl.Match(request("GET", "/")).Forward
	rng := rand.New(rand.NewPCG(1, 2))
	const draws = 100_000
	counts := map[string]int{}
	for range draws {
		counts[f.PickCluster(rng.Uint64N).Name]++
	}
	for name, want := range map[string]float64{"v1": 90, "v2": 10} {
		got := 100 * float64(counts[name]) / draws
		if got < want-1 || got > want+1 {
			t.Errorf("%s got %.2f%% of requests, want %v%% ± 1", name, got, want)
		}
	}
}

func TestWeightedClusterBoundaries(t *testing.T) {
	tbl := mustCompile(t, routeConfig(anyHost(weightedRoute(
		clusterWeight("a", 1), clusterWeight("off", 0), clusterWeight("b", 3)))))
	f := tbl.Match(request("GET", "/")).Forward
	for draw, want := range []string{"a", "b", "b", "b"} {
		got := f.PickCluster(func(n uint64) uint64 {
			if n != 4 {
				t.Fatalf("rnd called with n = %d, want the total weight 4", n)
			}
			return uint64(draw)
		})
		if got.Name != want {
			t.Errorf("draw %d picked %q, want %q", draw, got.Name, want)
		}
	}
}

func TestTimeout(t *testing.T) {
	for _, tc := range []struct {
		name    string
		timeout *durationpb.Duration
		want    time.Duration
	}{
		{"unset is Envoy's default", nil, DefaultTimeout},
		{"explicit zero is none", durationpb.New(0), NoTimeout},
		{"explicit", durationpb.New(3 * time.Second), 3 * time.Second},
	} {
		r := routeTo("r", prefixMatch("/"))
		r.GetRoute().Timeout = tc.timeout
		tbl := mustCompile(t, routeConfig(anyHost(r)))
		if got := tbl.Match(request("GET", "/")).Forward.Timeout; got != tc.want {
			t.Errorf("%s: Timeout = %v, want %v", tc.name, got, tc.want)
		}
	}
	if DefaultTimeout != 15*time.Second {
		t.Errorf("DefaultTimeout = %v, want Envoy's 15s", DefaultTimeout)
	}
}

func TestPathAndHostRewrite(t *testing.T) {
	caseInsensitive := func(m *routev3.RouteMatch) *routev3.RouteMatch {
		m.CaseSensitive = wrapperspb.Bool(false)
		return m
	}
	regexRewrite := func(pattern, substitution string) *matcherv3.RegexMatchAndSubstitute {
		return &matcherv3.RegexMatchAndSubstitute{Pattern: regex(pattern), Substitution: substitution}
	}
	for _, tc := range []struct {
		name          string
		match         *routev3.RouteMatch
		prefixRewrite string
		regexRewrite  *matcherv3.RegexMatchAndSubstitute
		target        string
		wantURI       string
		wantPath      string // decoded, when it differs from wantURI's path
	}{
		{"prefix to slash", prefixMatch("/api"), "/", nil, "/api/x", "/x", ""},
		{"prefix to slash, whole path", prefixMatch("/api"), "/", nil, "/api", "/", ""},
		{"prefix to slash keeps query", prefixMatch("/api"), "/", nil, "/api/x?a=1&b=2", "/x?a=1&b=2", ""},
		{"prefix with slash to slash", prefixMatch("/api/"), "/", nil, "/api/x", "/x", ""},
		{"prefix to prefix", prefixMatch("/api"), "/v2", nil, "/api/x", "/v2/x", ""},
		{"prefix not at a segment", prefixMatch("/api"), "/v2", nil, "/apis", "/v2s", ""},
		{"case-insensitive prefix", caseInsensitive(prefixMatch("/API")), "/v2", nil, "/api/x", "/v2/x", ""},
		{"separated prefix", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/api"}}, "/b", nil, "/api/x", "/b/x", ""},
		{"exact path replaced whole", exactMatch("/old"), "/new", nil, "/old?a=b", "/new?a=b", ""},
		{"escaped path", prefixMatch("/a%20b"), "/c", nil, "/a%20b/d%20e", "/c/d%20e", "/c/d e"},
		{"regex groups", prefixMatch("/"), "", regexRewrite(`^/service/([^/]+)(/.*)$`, `\2/instance/\1`), "/service/foo/v1/api", "/v1/api/instance/foo", ""},
		{"regex every occurrence", prefixMatch("/"), "", regexRewrite(`one`, `two`), "/xxx/one/yyy/one/zzz", "/xxx/two/yyy/two/zzz", ""},
		{"regex first occurrence", prefixMatch("/"), "", regexRewrite(`^(.*?)one(.*)$`, `\1two\2`), "/xxx/one/yyy/one/zzz", "/xxx/two/yyy/one/zzz", ""},
		{"regex case-insensitive", prefixMatch("/"), "", regexRewrite(`(?i)/xxx/`, `/yyy/`), "/aaa/XxX/bbb", "/aaa/yyy/bbb", ""},
		{"regex leaves the query", prefixMatch("/"), "", regexRewrite(`one`, `two`), "/a/one?x=one", "/a/two?x=one", ""},
		{"regex whole match group", prefixMatch("/"), "", regexRewrite(`^/[a-z]+`, `/v1\0`), "/items/7", "/v1/items/7", ""},
		{"regex producing an escape", exactMatch("/x"), "", regexRewrite(`^/x$`, `/a%2Fb`), "/x", "/a%2Fb", "/a/b"},
		{"regex producing nothing keeps the path", prefixMatch("/"), "", regexRewrite(`^.*$`, ``), "/x", "/x", ""},
		{"no rewrite", prefixMatch("/"), "", nil, "/x?y", "/x?y", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := routeTo("r", tc.match)
			r.GetRoute().PrefixRewrite = tc.prefixRewrite
			r.GetRoute().RegexRewrite = tc.regexRewrite
			tbl := mustCompile(t, routeConfig(anyHost(r)))
			req := request("GET", tc.target)
			rt := tbl.Match(req)
			if rt == nil {
				t.Fatal("no route matched")
			}
			rt.ApplyRequest(req, rt.Forward.PickCluster(rand.Uint64N))
			if got := req.URL.RequestURI(); got != tc.wantURI {
				t.Errorf("URL.RequestURI() = %q, want %q", got, tc.wantURI)
			}
			if req.RequestURI != tc.wantURI {
				t.Errorf("RequestURI = %q, want %q", req.RequestURI, tc.wantURI)
			}
			if tc.wantPath != "" && req.URL.Path != tc.wantPath {
				t.Errorf("URL.Path = %q, want %q", req.URL.Path, tc.wantPath)
			}
			if req.Host != "example.com" {
				t.Errorf("Host changed to %q without a host rewrite", req.Host)
			}
		})
	}
}

func TestHostRewrite(t *testing.T) {
	split := weightedRoute(clusterWeight("plain", 1), clusterWeight("own-host", 1))
	split.GetRoute().HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: "route.internal"}
	split.GetRoute().GetWeightedClusters().Clusters[1].HostRewriteSpecifier = &routev3.WeightedCluster_ClusterWeight_HostRewriteLiteral{HostRewriteLiteral: "cluster.internal"}
	tbl := mustCompile(t, routeConfig(anyHost(split)))
	for draw, want := range []string{"route.internal", "cluster.internal"} {
		req := request("GET", "http://svc.ns:8080/x")
		rt := tbl.Match(req)
		rt.ApplyRequest(req, rt.Forward.PickCluster(func(uint64) uint64 { return uint64(draw) }))
		if req.Host != want {
			t.Errorf("draw %d: Host = %q, want %q", draw, req.Host, want)
		}
	}
}

func TestRedirect(t *testing.T) {
	redirectRoute := func(m *routev3.RouteMatch, rd *routev3.RedirectAction) *routev3.Route {
		return &routev3.Route{Name: "redirect", Match: m, Action: &routev3.Route_Redirect{Redirect: rd}}
	}
	https := &routev3.RedirectAction_HttpsRedirect{HttpsRedirect: true}
	for _, tc := range []struct {
		name         string
		match        *routev3.RouteMatch
		redirect     *routev3.RedirectAction
		target       string
		wantStatus   int
		wantLocation string
	}{
		{"https keeps host, path and query", prefixMatch("/"), &routev3.RedirectAction{SchemeRewriteSpecifier: https},
			"http://svc/a?b=1", 301, "https://svc/a?b=1"},
		{"https drops the http default port", prefixMatch("/"), &routev3.RedirectAction{SchemeRewriteSpecifier: https},
			"http://svc:80/a", 301, "https://svc/a"},
		{"https keeps another port", prefixMatch("/"), &routev3.RedirectAction{SchemeRewriteSpecifier: https},
			"http://svc:8080/a", 301, "https://svc:8080/a"},
		{"https with IPv6 host", prefixMatch("/"), &routev3.RedirectAction{SchemeRewriteSpecifier: https},
			"http://[fd00::1]:80/a", 301, "https://[fd00::1]/a"},
		{"scheme", prefixMatch("/"), &routev3.RedirectAction{SchemeRewriteSpecifier: &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: "HTTPS"}},
			"http://svc/a", 301, "https://svc/a"},
		{"same scheme keeps default port", prefixMatch("/"), &routev3.RedirectAction{SchemeRewriteSpecifier: &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: "http"}},
			"http://svc:80/a", 301, "http://svc:80/a"},
		{"host", prefixMatch("/"), &routev3.RedirectAction{HostRedirect: "other.example"},
			"http://svc:8080/a?b=1", 301, "http://other.example/a?b=1"},
		{"port", prefixMatch("/"), &routev3.RedirectAction{PortRedirect: 8443},
			"http://svc:8080/a?b=1", 301, "http://svc:8443/a?b=1"},
		{"host and port", prefixMatch("/"), &routev3.RedirectAction{HostRedirect: "other", PortRedirect: 9000},
			"http://svc/a", 301, "http://other:9000/a"},
		{"path keeps query", prefixMatch("/"), &routev3.RedirectAction{PathRewriteSpecifier: &routev3.RedirectAction_PathRedirect{PathRedirect: "/new-path-1"}},
			"http://svc/old-path-1?bar=1", 301, "http://svc/new-path-1?bar=1"},
		{"path strip query", prefixMatch("/"), &routev3.RedirectAction{StripQuery: true, PathRewriteSpecifier: &routev3.RedirectAction_PathRedirect{PathRedirect: "/new-path-2"}},
			"http://svc/old-path-2?bar=1", 301, "http://svc/new-path-2"},
		{"path with its own query", prefixMatch("/"), &routev3.RedirectAction{StripQuery: true, PathRewriteSpecifier: &routev3.RedirectAction_PathRedirect{PathRedirect: "/new-path-3?foo=1"}},
			"http://svc/old-path-3?bar=1", 301, "http://svc/new-path-3?foo=1"},
		{"strip query only", prefixMatch("/"), &routev3.RedirectAction{StripQuery: true},
			"http://svc/a?b=1", 301, "http://svc/a"},
		{"prefix rewrite", prefixMatch("/old"), &routev3.RedirectAction{PathRewriteSpecifier: &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: "/new"}},
			"http://svc/old/x?y=1", 301, "http://svc/new/x?y=1"},
		{"prefix rewrite to slash", prefixMatch("/old"), &routev3.RedirectAction{PathRewriteSpecifier: &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: "/"}},
			"http://svc/old/x", 301, "http://svc/x"},
		{"regex rewrite", prefixMatch("/"), &routev3.RedirectAction{PathRewriteSpecifier: &routev3.RedirectAction_RegexRewrite{RegexRewrite: &matcherv3.RegexMatchAndSubstitute{
			Pattern: regex(`^/users/([0-9]+)$`), Substitution: `/u/\1`}}},
			"http://svc/users/42?tab=1", 301, "http://svc/u/42?tab=1"},
		{"found", prefixMatch("/"), &routev3.RedirectAction{ResponseCode: routev3.RedirectAction_FOUND}, "http://svc/", 302, "http://svc/"},
		{"see other", prefixMatch("/"), &routev3.RedirectAction{ResponseCode: routev3.RedirectAction_SEE_OTHER}, "http://svc/", 303, "http://svc/"},
		{"temporary", prefixMatch("/"), &routev3.RedirectAction{ResponseCode: routev3.RedirectAction_TEMPORARY_REDIRECT}, "http://svc/", 307, "http://svc/"},
		{"permanent", prefixMatch("/"), &routev3.RedirectAction{ResponseCode: routev3.RedirectAction_PERMANENT_REDIRECT}, "http://svc/", 308, "http://svc/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tbl := mustCompile(t, routeConfig(anyHost(redirectRoute(tc.match, tc.redirect))))
			req := request("GET", tc.target)
			rt := tbl.Match(req)
			if rt == nil || rt.Redirect == nil || rt.Forward != nil || rt.Direct != nil {
				t.Fatalf("Match = %+v, want a redirect route", rt)
			}
			status, location := rt.Redirect.Response(req)
			if status != tc.wantStatus || location != tc.wantLocation {
				t.Errorf("Response = %d %q, want %d %q", status, location, tc.wantStatus, tc.wantLocation)
			}
		})
	}
}

func TestDirectResponse(t *testing.T) {
	r := &routev3.Route{Name: "teapot", Match: prefixMatch("/"), Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{
		Status: 418, Body: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "short and stout"}}}}}
	r.ResponseHeadersToAdd = []*corev3.HeaderValueOption{headerValue("x-teapot", "yes", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD)}
	empty := &routev3.Route{Name: "empty", Match: exactMatch("/empty"), Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 204}}}
	tbl := mustCompile(t, routeConfig(anyHost(empty, r)))

	rt := tbl.Match(request("GET", "/brew"))
	if rt.Direct == nil || rt.Direct.Status != 418 || string(rt.Direct.Body) != "short and stout" {
		t.Fatalf("Direct = %+v, want 418 with the body", rt.Direct)
	}
	h := http.Header{}
	rt.ApplyResponse(h, nil)
	if h.Get("X-Teapot") != "yes" {
		t.Errorf("response headers = %v, want X-Teapot: yes", h)
	}
	if d := tbl.Match(request("GET", "/empty")).Direct; d.Status != 204 || len(d.Body) != 0 {
		t.Errorf("Direct = %+v, want 204 without body", d)
	}
}

func TestMirrors(t *testing.T) {
	mirror := func(cluster string, percent *typev3.FractionalPercent) *routev3.RouteAction_RequestMirrorPolicy {
		mp := &routev3.RouteAction_RequestMirrorPolicy{Cluster: cluster}
		if percent != nil {
			mp.RuntimeFraction = &corev3.RuntimeFractionalPercent{DefaultValue: percent}
		}
		return mp
	}
	own := routeTo("own", exactMatch("/own"))
	own.GetRoute().RequestMirrorPolicies = []*routev3.RouteAction_RequestMirrorPolicy{
		mirror("shadow-half", &typev3.FractionalPercent{Numerator: 50}),
		mirror("shadow-all", nil),
		mirror("shadow-tiny", &typev3.FractionalPercent{Numerator: 25, Denominator: typev3.FractionalPercent_TEN_THOUSAND}),
	}
	own.GetRoute().RequestMirrorPolicies[1].DisableShadowHostSuffixAppend = true
	vh := anyHost(own, routeTo("inherited", prefixMatch("/")))
	vh.RequestMirrorPolicies = []*routev3.RouteAction_RequestMirrorPolicy{mirror("vhost-shadow", &typev3.FractionalPercent{Numerator: 7, Denominator: typev3.FractionalPercent_MILLION})}
	rc := routeConfig(vh, vhost("other", []string{"other"}, routeTo("global", prefixMatch("/"))))
	rc.RequestMirrorPolicies = []*routev3.RouteAction_RequestMirrorPolicy{mirror("global-shadow", nil)}
	tbl := mustCompile(t, rc)

	got := tbl.Match(request("GET", "/own")).Forward.Mirrors
	want := []Mirror{
		{Cluster: "shadow-half", PerMillion: 500_000},
		{Cluster: "shadow-all", PerMillion: 1_000_000, DisableShadowHostSuffix: true},
		{Cluster: "shadow-tiny", PerMillion: 2_500},
	}
	if len(got) != len(want) {
		t.Fatalf("Mirrors = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("Mirrors[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
	if got := tbl.Match(request("GET", "/x")).Forward.Mirrors; len(got) != 1 || got[0] != (Mirror{Cluster: "vhost-shadow", PerMillion: 7}) {
		t.Errorf("virtual host mirrors = %+v, want vhost-shadow at 7 per million", got)
	}
	r := request("GET", "/x")
	r.Host = "other"
	if got := tbl.Match(r).Forward.Mirrors; len(got) != 1 || got[0].Cluster != "global-shadow" {
		t.Errorf("route configuration mirrors = %+v, want global-shadow", got)
	}
}

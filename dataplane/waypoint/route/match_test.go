package route

import (
	"crypto/tls"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestVirtualHostByDomain(t *testing.T) {
	tbl := mustCompile(t, &routev3.RouteConfiguration{Name: "hosts", VirtualHosts: []*routev3.VirtualHost{
		vhost("exact", []string{"www.example.com", "api.example.com:8080"}, routeTo("exact", prefixMatch("/"))),
		vhost("short-suffix", []string{"*.com"}, routeTo("short-suffix", prefixMatch("/"))),
		vhost("long-suffix", []string{"*.example.com"}, routeTo("long-suffix", prefixMatch("/"))),
		vhost("short-prefix", []string{"foo*"}, routeTo("short-prefix", prefixMatch("/"))),
		vhost("long-prefix", []string{"foo.bar.*"}, routeTo("long-prefix", prefixMatch("/"))),
		vhost("any", []string{"*"}, routeTo("any", prefixMatch("/"))),
	}})
	for _, tc := range []struct {
		host, want string
	}{
		{"www.example.com", "exact"},
		{"WWW.Example.COM", "exact"},         // domains are case-insensitive
		{"api.example.com:8080", "exact"},    // a domain may carry a port
		{"www.example.com:9080", "exact"},    // port-stripped fallback
		{"other.example.com", "long-suffix"}, // longest suffix first
		{"other.org.com", "short-suffix"},
		{".example.com", "short-suffix"}, // "*" stands for at least one character
		{"foo.bar.baz", "long-prefix"},   // longest prefix first
		{"foo.baz", "short-prefix"},
		{"foo.bar.com", "short-suffix"}, // suffix wildcards before prefix wildcards
		{"unknown.internal", "any"},     // "*" last
		{"unknown.internal:80", "any"},
		{"api.example.com", "long-suffix"}, // "api.example.com:8080" needs the port
		{"api.example.com:8080", "exact"},
		{"www.example.com.:80", "any"}, // a trailing dot makes another name
	} {
		r := request("GET", "/")
		r.Host = tc.host
		if got := matchedName(tbl, r); got != tc.want {
			t.Errorf("host %q: got virtual host %q, want %q", tc.host, got, tc.want)
		}
	}
}

func TestVirtualHostIgnorePortAndNoDefault(t *testing.T) {
	rc := routeConfig(vhost("svc", []string{"svc.ns.svc.cluster.local"}, routeTo("svc", prefixMatch("/"))))
	rc.IgnorePortInHostMatching = true
	tbl := mustCompile(t, rc)
	for _, tc := range []struct{ host, want string }{
		{"svc.ns.svc.cluster.local:8080", "svc"},
		{"svc.ns.svc.cluster.local", "svc"},
		{"other", ""}, // no "*" virtual host: no route
	} {
		r := request("GET", "/")
		r.Host = tc.host
		if got := matchedName(tbl, r); got != tc.want {
			t.Errorf("host %q: got %q, want %q", tc.host, got, tc.want)
		}
	}
}

func TestPathMatch(t *testing.T) {
	caseInsensitive := func(m *routev3.RouteMatch) *routev3.RouteMatch {
		m.CaseSensitive = wrapperspb.Bool(false)
		return m
	}
	separated := func(p string) *routev3.RouteMatch {
		return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: p}}
	}
	for _, tc := range []struct {
		name  string
		match *routev3.RouteMatch
		path  string
		want  bool
	}{
		{"prefix", prefixMatch("/api"), "/api", true},
		{"prefix longer path", prefixMatch("/api"), "/api/v1", true},
		{"prefix not segment-aware", prefixMatch("/api"), "/apis", true},
		{"prefix miss", prefixMatch("/api"), "/ap", false},
		{"prefix is case-sensitive", prefixMatch("/api"), "/API", false},
		{"prefix case-insensitive", caseInsensitive(prefixMatch("/api")), "/API/x", true},
		{"prefix ignores query", prefixMatch("/a?b"), "/a?b", false},
		{"empty prefix matches all", prefixMatch(""), "/anything", true},
		{"exact", exactMatch("/login"), "/login", true},
		{"exact ignores query", exactMatch("/login"), "/login?next=/", true},
		{"exact no trailing slash", exactMatch("/login"), "/login/", false},
		{"exact is case-sensitive", exactMatch("/login"), "/Login", false},
		{"exact case-insensitive", caseInsensitive(exactMatch("/login")), "/LOGIN", true},
		{"exact sees escaped path", exactMatch("/a%20b"), "/a%20b", true},
		{"regex whole path", regexMatch(`/users/[0-9]+`), "/users/42", true},
		{"regex is anchored at the end", regexMatch(`/users/[0-9]+`), "/users/42/x", false},
		{"regex is anchored at the start", regexMatch(`[0-9]+`), "/42", false},
		{"regex alternation stays anchored", regexMatch(`/a|/b`), "/a/x", false},
		{"regex ignores query", regexMatch(`/users/[0-9]+`), "/users/42?x=1", true},
		{"regex ignores case_sensitive", caseInsensitive(regexMatch(`/a`)), "/A", false},
		{"separated exact", separated("/api/dev"), "/api/dev", true},
		{"separated subpath", separated("/api/dev"), "/api/dev/v1", true},
		{"separated trailing slash", separated("/api/dev"), "/api/dev/", true},
		{"separated with query", separated("/api/dev"), "/api/dev?param=true", true},
		{"separated not a segment", separated("/api/dev"), "/api/developer", false},
		{"separated case-insensitive", caseInsensitive(separated("/api/dev")), "/API/Dev/x", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tbl := mustCompile(t, routeConfig(anyHost(routeTo("r", tc.match))))
			if got := tbl.Match(request("GET", tc.path)) != nil; got != tc.want {
				t.Errorf("%s: matched = %v, want %v", tc.path, got, tc.want)
			}
		})
	}
}

func TestHeaderMatch(t *testing.T) {
	str := func(name, kind, v string) *routev3.HeaderMatcher {
		return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: stringMatch(kind, v)}}
	}
	ignoreCase := func(name, kind, v string) *routev3.HeaderMatcher {
		h := str(name, kind, v)
		h.GetStringMatch().IgnoreCase = true
		return h
	}
	present := func(name string, b bool) *routev3.HeaderMatcher {
		return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: b}}
	}
	inverted := func(h *routev3.HeaderMatcher) *routev3.HeaderMatcher { h.InvertMatch = true; return h }
	missingEmpty := func(h *routev3.HeaderMatcher) *routev3.HeaderMatcher { h.TreatMissingHeaderAsEmpty = true; return h }

	for _, tc := range []struct {
		name    string
		matcher *routev3.HeaderMatcher
		method  string
		target  string
		headers []string
		want    bool
	}{
		{"exact", str("x-version", "exact", "v2"), "", "", []string{"X-Version: v2"}, true},
		{"exact miss", str("x-version", "exact", "v2"), "", "", []string{"X-Version: v22"}, false},
		{"exact absent", str("x-version", "exact", "v2"), "", "", nil, false},
		{"name is case-insensitive", str("X-VERSION", "exact", "v2"), "", "", []string{"x-version: v2"}, true},
		{"exact ignore_case", ignoreCase("x-version", "exact", "V2"), "", "", []string{"X-Version: v2"}, true},
		{"prefix", str("user-agent", "prefix", "curl/"), "", "", []string{"User-Agent: curl/8.5"}, true},
		{"suffix", str("x-user", "suffix", "@example.com"), "", "", []string{"X-User: a@example.com"}, true},
		{"contains", str("x-tags", "contains", "beta"), "", "", []string{"X-Tags: a,beta,c"}, true},
		{"contains ignore_case", ignoreCase("x-tags", "contains", "BETA"), "", "", []string{"X-Tags: a,Beta"}, true},
		{"regex is a full match", str("x-id", "regex", "[0-9]+"), "", "", []string{"X-Id: 123"}, true},
		{"regex partial is no match", str("x-id", "regex", "[0-9]+"), "", "", []string{"X-Id: 123a"}, false},
		{"legacy exact", &routev3.HeaderMatcher{Name: "x-a", HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: "1"}}, "", "", []string{"X-A: 1"}, true},
		{"legacy prefix", &routev3.HeaderMatcher{Name: "x-a", HeaderMatchSpecifier: &routev3.HeaderMatcher_PrefixMatch{PrefixMatch: "ab"}}, "", "", []string{"X-A: abc"}, true},
		{"legacy suffix", &routev3.HeaderMatcher{Name: "x-a", HeaderMatchSpecifier: &routev3.HeaderMatcher_SuffixMatch{SuffixMatch: "bc"}}, "", "", []string{"X-A: abc"}, true},
		{"legacy contains", &routev3.HeaderMatcher{Name: "x-a", HeaderMatchSpecifier: &routev3.HeaderMatcher_ContainsMatch{ContainsMatch: "b"}}, "", "", []string{"X-A: abc"}, true},
		{"legacy regex", &routev3.HeaderMatcher{Name: "x-a", HeaderMatchSpecifier: &routev3.HeaderMatcher_SafeRegexMatch{SafeRegexMatch: regex("a.c")}}, "", "", []string{"X-A: abc"}, true},
		{"range in", &routev3.HeaderMatcher{Name: "x-n", HeaderMatchSpecifier: &routev3.HeaderMatcher_RangeMatch{RangeMatch: &typev3.Int64Range{Start: -10, End: 0}}}, "", "", []string{"X-N: -1"}, true},
		{"range end excluded", &routev3.HeaderMatcher{Name: "x-n", HeaderMatchSpecifier: &routev3.HeaderMatcher_RangeMatch{RangeMatch: &typev3.Int64Range{Start: -10, End: 0}}}, "", "", []string{"X-N: 0"}, false},
		{"range not a number", &routev3.HeaderMatcher{Name: "x-n", HeaderMatchSpecifier: &routev3.HeaderMatcher_RangeMatch{RangeMatch: &typev3.Int64Range{Start: 0, End: 10}}}, "", "", []string{"X-N: 1a"}, false},
		{"present", present("x-debug", true), "", "", []string{"X-Debug: "}, true},
		{"present absent", present("x-debug", true), "", "", nil, false},
		{"present false wants absence", present("x-debug", false), "", "", nil, true},
		{"no specifier is presence", &routev3.HeaderMatcher{Name: "x-debug"}, "", "", []string{"X-Debug: 1"}, true},
		{"invert exact", inverted(str("x-version", "exact", "v2")), "", "", []string{"X-Version: v1"}, true},
		{"invert exact hit", inverted(str("x-version", "exact", "v2")), "", "", []string{"X-Version: v2"}, false},
		{"invert absent still fails", inverted(str("x-version", "exact", "v2")), "", "", nil, false},
		{"invert present", inverted(present("x-debug", true)), "", "", nil, true},
		{"missing as empty", missingEmpty(str("x-e", "regex", "^$")), "", "", nil, true},
		{"missing as empty inverted", inverted(missingEmpty(str("x-e", "exact", "v"))), "", "", nil, true},
		{"repeated headers joined", str("x-a", "exact", "1,2"), "", "", []string{"X-A: 1", "X-A: 2"}, true},
		{":method", str(":method", "exact", "POST"), "POST", "", nil, true},
		{":method miss", str(":method", "exact", "POST"), "GET", "", nil, false},
		{":authority", str(":authority", "exact", "svc:8080"), "", "http://svc:8080/", nil, true},
		{"host reads :authority", str("host", "prefix", "svc"), "", "http://svc:8080/", nil, true},
		{":path has the query", str(":path", "exact", "/a?b=1"), "", "/a?b=1", nil, true},
		{":scheme", str(":scheme", "exact", "http"), "", "", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := prefixMatch("/")
			m.Headers = []*routev3.HeaderMatcher{tc.matcher}
			tbl := mustCompile(t, routeConfig(anyHost(routeTo("r", m))))
			method, target := tc.method, tc.target
			if method == "" {
				method = "GET"
			}
			if target == "" {
				target = "/"
			}
			if got := tbl.Match(request(method, target, tc.headers...)) != nil; got != tc.want {
				t.Errorf("matched = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestSchemePseudoHeaderOverTLS(t *testing.T) {
	m := prefixMatch("/")
	m.Headers = []*routev3.HeaderMatcher{{Name: ":scheme", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: stringMatch("exact", "https")}}}
	tbl := mustCompile(t, routeConfig(anyHost(routeTo("r", m))))
	r := request("GET", "/")
	if tbl.Match(r) != nil {
		t.Error("plain request matched :scheme https")
	}
	r.TLS = &tls.ConnectionState{}
	if tbl.Match(r) == nil {
		t.Error("TLS request did not match :scheme https")
	}
}

func TestQueryParameterMatch(t *testing.T) {
	query := func(name string, sm string, value string) *routev3.QueryParameterMatcher {
		q := &routev3.QueryParameterMatcher{Name: name}
		if sm == "present" {
			q.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_PresentMatch{PresentMatch: true}
		} else {
			q.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_StringMatch{StringMatch: stringMatch(sm, value)}
		}
		return q
	}
	for _, tc := range []struct {
		name    string
		matcher *routev3.QueryParameterMatcher
		target  string
		want    bool
	}{
		{"exact", query("debug", "exact", "1"), "/?debug=1", true},
		{"exact among others", query("debug", "exact", "1"), "/?a=b&debug=1&c", true},
		{"exact miss", query("debug", "exact", "1"), "/?debug=0", false},
		{"absent", query("debug", "exact", "1"), "/?other=1", false},
		{"first value counts", query("v", "exact", "1"), "/?v=2&v=1", false},
		{"regex", query("id", "regex", "[a-f0-9]+"), "/?id=beef", true},
		{"present", query("debug", "present", ""), "/?debug", true},
		{"present empty value", query("debug", "present", ""), "/?debug=", true},
		{"present absent", query("debug", "present", ""), "/?debugx=1", false},
		{"values are not decoded", query("q", "exact", "a%20b"), "/?q=a%20b", true},
		{"name is case-sensitive", query("Debug", "exact", "1"), "/?debug=1", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := prefixMatch("/")
			m.QueryParameters = []*routev3.QueryParameterMatcher{tc.matcher}
			tbl := mustCompile(t, routeConfig(anyHost(routeTo("r", m))))
			if got := tbl.Match(request("GET", tc.target)) != nil; got != tc.want {
				t.Errorf("%s: matched = %v, want %v", tc.target, got, tc.want)
			}
		})
	}
}

func TestGRPCMatch(t *testing.T) {
	m := prefixMatch("/")
	m.Grpc = &routev3.RouteMatch_GrpcRouteMatchOptions{}
	tbl := mustCompile(t, routeConfig(anyHost(routeTo("grpc", m), routeTo("other", prefixMatch("/")))))
	for _, tc := range []struct{ contentType, want string }{
		{"application/grpc", "grpc"},
		{"application/grpc+proto", "grpc"},
		{"application/grpc;charset=utf-8", "grpc"},
		{"application/grpc-web", "other"},
		{"application/json", "other"},
		{"", "other"},
	} {
		r := request("POST", "/pkg.Service/Method", "Content-Type: "+tc.contentType)
		if got := matchedName(tbl, r); got != tc.want {
			t.Errorf("content-type %q: got %q, want %q", tc.contentType, got, tc.want)
		}
	}
}

// TestRoutesInConfigOrder checks that the first matching route wins, with
// routes in the order a Gateway API control plane emits them: exact paths,
// then longer prefixes, then more header and query conditions.
func TestRoutesInConfigOrder(t *testing.T) {
	withHeader := func(m *routev3.RouteMatch, name, value string) *routev3.RouteMatch {
		m.Headers = append(m.Headers, &routev3.HeaderMatcher{Name: name,
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: stringMatch("exact", value)}})
		return m
	}
	withQuery := func(m *routev3.RouteMatch, name, value string) *routev3.RouteMatch {
		m.QueryParameters = append(m.QueryParameters, &routev3.QueryParameterMatcher{Name: name,
			QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: stringMatch("exact", value)}})
		return m
	}
	tbl := mustCompile(t, routeConfig(anyHost(
		routeTo("exact-login", exactMatch("/login")),
		routeTo("v2-canary", withHeader(withHeader(prefixMatch("/api/v2"), "x-canary", "true"), ":method", "GET")),
		routeTo("v2-post", withHeader(prefixMatch("/api/v2"), ":method", "POST")),
		routeTo("v2", prefixMatch("/api/v2")),
		routeTo("api-debug", withQuery(prefixMatch("/api"), "debug", "1")),
		routeTo("api", prefixMatch("/api")),
		routeTo("catch-all", prefixMatch("/")),
	)))
	for _, tc := range []struct {
		method, target string
		headers        []string
		want           string
	}{
		{"GET", "/login", nil, "exact-login"},
		{"GET", "/login/x", nil, "catch-all"},
		{"GET", "/api/v2/items", []string{"X-Canary: true"}, "v2-canary"},
		{"POST", "/api/v2/items", []string{"X-Canary: true"}, "v2-post"},
		{"GET", "/api/v2/items", []string{"X-Canary: false"}, "v2"},
		{"GET", "/api/v1?debug=1", nil, "api-debug"},
		{"GET", "/api/v2?debug=1", nil, "v2"},
		{"GET", "/api", nil, "api"},
		{"GET", "/", nil, "catch-all"},
	} {
		if got := matchedName(tbl, request(tc.method, tc.target, tc.headers...)); got != tc.want {
			t.Errorf("%s %s %v: got %q, want %q", tc.method, tc.target, tc.headers, got, tc.want)
		}
	}
}

package route

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

// fuzzSeed is a configuration that uses most of what Compile supports.
func fuzzSeed(tb testing.TB) *routev3.RouteConfiguration {
	headerMatch := prefixMatch("/api")
	headerMatch.Headers = []*routev3.HeaderMatcher{
		{Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: stringMatch("exact", "GET")}},
		{Name: "x-version", HeaderMatchSpecifier: &routev3.HeaderMatcher_SafeRegexMatch{SafeRegexMatch: regex("v[0-9]+")}, InvertMatch: true},
	}
	headerMatch.QueryParameters = []*routev3.QueryParameterMatcher{{Name: "debug",
		QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_PresentMatch{PresentMatch: true}}}
	split := weightedRoute(clusterWeight("v1", 90), clusterWeight("v2", 10))
	split.Match = headerMatch
	split.GetRoute().PrefixRewrite = "/"
	split.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx,retriable-status-codes", RetriableStatusCodes: []uint32{429}}
	split.GetRoute().RequestMirrorPolicies = []*routev3.RouteAction_RequestMirrorPolicy{{Cluster: "shadow",
		RuntimeFraction: &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: 10}}}}
	split.RequestHeadersToAdd = []*corev3.HeaderValueOption{headerValue("x-route", "split", overwriteOrAdd)}
	split.TypedPerFilterConfig = faultFilter(tb, httpFault(time.Millisecond, &typev3.FractionalPercent{Numerator: 50}, 503, &typev3.FractionalPercent{Numerator: 1}))

	rewrite := routeTo("rewrite", regexMatch(`/users/[0-9]+`))
	rewrite.GetRoute().RegexRewrite = &matcherv3.RegexMatchAndSubstitute{Pattern: regex(`^/users/([0-9]+)$`), Substitution: `/u/\1`}
	rewrite.GetRoute().Timeout = durationpb.New(0)
	redirect := &routev3.Route{Name: "redirect", Match: exactMatch("/old"), Action: &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{
		SchemeRewriteSpecifier: &routev3.RedirectAction_HttpsRedirect{HttpsRedirect: true}, PortRedirect: 8443, StripQuery: true}}}
	direct := &routev3.Route{Name: "direct", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/health"}},
		Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 200,
			Body: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "ok"}}}}}

	vh := anyHost(split, rewrite, redirect, direct, routeTo("default", prefixMatch("/")))
	vh.RetryPolicy = &routev3.RetryPolicy{RetryOn: "connect-failure"}
	rc := routeConfig(vh, vhost("wild", []string{"*.example.com", "foo.*", "exact:8080"}, routeTo("wild", prefixMatch("/"))))
	rc.ResponseHeadersToRemove = []string{"server"}
	return rc
}

// FuzzCompile feeds arbitrary bytes as a RouteConfiguration and, when it
// compiles, matches and applies a few requests built from the other inputs:
// nothing may panic.
func FuzzCompile(f *testing.F) {
	seed, err := proto.Marshal(fuzzSeed(f))
	if err != nil {
		f.Fatal(err)
	}
	if _, err := Compile(fuzzSeed(f)); err != nil {
		f.Fatalf("seed does not compile: %v", err)
	}
	f.Add(seed, "/api/x?debug", "svc:80", "x-version: v1")
	f.Add(seed, "/users/42?tab=1", "a.example.com", "content-type: application/grpc")
	f.Add(seed, "/old?x=1", "[::1]:80", "")
	f.Add(seed, "/health/live", "foo.bar", ":authority: x")
	f.Add([]byte{}, "/", "", "")

	f.Fuzz(func(t *testing.T, data []byte, target, host, header string) {
		rc := &routev3.RouteConfiguration{}
		if err := proto.Unmarshal(data, rc); err != nil {
			return
		}
		tbl, err := Compile(rc)
		if err != nil {
			return
		}
		_ = tbl.Name()
		for _, method := range []string{"GET", "POST"} {
			r := fuzzRequest(method, target, host, header)
			rt := tbl.Match(r)
			if rt == nil {
				continue
			}
			exercise(rt, r)
		}
	})
}

func fuzzRequest(method, target, host, header string) *http.Request {
	u, err := url.ParseRequestURI(target)
	if err != nil {
		path, query, _ := strings.Cut(target, "?")
		u = &url.URL{Path: path, RawQuery: query}
	}
	r := &http.Request{Method: method, URL: u, Host: host, Header: http.Header{}, RequestURI: target}
	name, value, _ := strings.Cut(header, ":")
	r.Header.Add(strings.TrimSpace(name), value)
	r.Header.Add("Content-Type", value)
	r.Header.Add("X-Version", header)
	return r
}

// exercise calls everything the handler would call on a matched route, with
// draws taken from the request so they vary with the input.
func exercise(rt *Route, r *http.Request) {
	seed := uint64(len(r.URL.Path)*31 + len(r.Host))
	if rt.Fault != nil {
		rt.Fault.Decide(func(n uint32) uint32 { return uint32(seed % uint64(n)) })
	}
	switch {
	case rt.Forward != nil:
		f := rt.Forward
		wc := f.PickCluster(func(n uint64) uint64 { return seed % n })
		rt.ApplyRequest(r, wc)
		rt.ApplyResponse(http.Header{"Server": {"x"}}, wc)
		if f.Retry != nil {
			f.Retry.Retriable(Outcome{Status: int(seed % 600), Reset: seed%2 == 0})
			f.Retry.Backoff(int(seed%70)-3, func(n int64) int64 { return int64(seed % uint64(n)) })
		}
	case rt.Redirect != nil:
		rt.Redirect.Response(r)
		rt.ApplyResponse(http.Header{}, nil)
	case rt.Direct != nil:
		rt.ApplyResponse(http.Header{}, nil)
	}
}

// TestConcurrentUse shares one Table between goroutines, as the handler does;
// run with -race.
func TestConcurrentUse(t *testing.T) {
	tbl := mustCompile(t, fuzzSeed(t))
	targets := []string{"/api/x?debug", "/users/42", "/old?x=1", "/health", "/other"}
	done := make(chan struct{})
	for g := range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range 200 {
				target := targets[(g+i)%len(targets)]
				r := fuzzRequest("GET", target, "svc", "x-version: v1")
				if rt := tbl.Match(r); rt != nil {
					exercise(rt, r)
				} else {
					t.Errorf("%s: no route", target)
				}
			}
		}()
	}
	for range 4 {
		<-done
	}
}

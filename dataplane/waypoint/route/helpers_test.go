package route

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Builders for the Envoy messages the tests feed; every configuration they
// make must pass ValidateAll (mustCompile checks, through Compile).

func routeConfig(vhosts ...*routev3.VirtualHost) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{Name: "test", VirtualHosts: vhosts}
}

func vhost(name string, domains []string, routes ...*routev3.Route) *routev3.VirtualHost {
	return &routev3.VirtualHost{Name: name, Domains: domains, Routes: routes}
}

// anyHost is the single "*" virtual host of the waypoint's contract.
func anyHost(routes ...*routev3.Route) *routev3.VirtualHost {
	return vhost("default", []string{"*"}, routes...)
}

func forwardTo(cluster string) *routev3.Route_Route {
	return &routev3.Route_Route{Route: &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster},
	}}
}

func prefixMatch(prefix string) *routev3.RouteMatch {
	return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}}
}

func exactMatch(path string) *routev3.RouteMatch {
	return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: path}}
}

func regexMatch(re string) *routev3.RouteMatch {
	return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: regex(re)}}
}

func regex(re string) *matcherv3.RegexMatcher {
	return &matcherv3.RegexMatcher{Regex: re}
}

// routeTo is a route named name matching m and forwarding to a cluster of
// the same name.
func routeTo(name string, m *routev3.RouteMatch) *routev3.Route {
	return &routev3.Route{Name: name, Match: m, Action: forwardTo(name)}
}

func stringMatch(kind, value string) *matcherv3.StringMatcher {
	sm := &matcherv3.StringMatcher{}
	switch kind {
	case "exact":
		sm.MatchPattern = &matcherv3.StringMatcher_Exact{Exact: value}
	case "prefix":
		sm.MatchPattern = &matcherv3.StringMatcher_Prefix{Prefix: value}
	case "suffix":
		sm.MatchPattern = &matcherv3.StringMatcher_Suffix{Suffix: value}
	case "contains":
		sm.MatchPattern = &matcherv3.StringMatcher_Contains{Contains: value}
	case "regex":
		sm.MatchPattern = &matcherv3.StringMatcher_SafeRegex{SafeRegex: regex(value)}
	default:
		panic("unknown string match kind " + kind)
	}
	return sm
}

func headerValue(name, value string, action corev3.HeaderValueOption_HeaderAppendAction) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: name, Value: value}, AppendAction: action}
}

func mustAny(t testing.TB, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func u32(v uint32) *wrapperspb.UInt32Value { return wrapperspb.UInt32(v) }

func mustCompile(t testing.TB, rc *routev3.RouteConfiguration) *Table {
	t.Helper()
	tbl, err := Compile(rc)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return tbl
}

// request builds a server-side request; headers are "Name: value" strings.
func request(method, target string, headers ...string) *http.Request {
	r := httptest.NewRequest(method, target, nil)
	for _, h := range headers {
		name, value, _ := strings.Cut(h, ":")
		r.Header.Add(strings.TrimSpace(name), strings.TrimSpace(value))
	}
	return r
}

// matchedName is the name of the route t picks for r, "" for none.
func matchedName(t *Table, r *http.Request) string {
	if rt := t.Match(r); rt != nil {
		return rt.Name
	}
	return ""
}

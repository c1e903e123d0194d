package rbac

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

const (
	webID   = "spiffe://cluster.local/ns/shop/sa/web"
	adminID = "spiffe://cluster.local/ns/admin/sa/ops"
)

func TestPrincipals(t *testing.T) {
	groups := claims(map[string]any{
		"sub":    "alice",
		"groups": []any{"a", "b"},
		"level":  float64(3),
		"admin":  true,
		"realm":  map[string]any{"role": "editor"},
		"nobody": nil,
	})
	tests := []struct {
		name      string
		principal *rbacv3.Principal
		attrs     Attributes
		want      bool
	}{
		{"any", anyPrincipal(), Attributes{}, true},

		// authenticated.principal_name against the peer's SPIFFE ID.
		{"exact id", principalName(exact(webID)), Attributes{Principal: webID}, true},
		{"exact id, other peer", principalName(exact(webID)), Attributes{Principal: adminID}, false},
		{"exact id, no peer identity", principalName(exact(webID)), Attributes{}, false},
		{"namespace regex", principalName(regex("spiffe://cluster.local/ns/shop/.*")), Attributes{Principal: webID}, true},
		{"namespace regex, other namespace", principalName(regex("spiffe://cluster.local/ns/shop/.*")),
			Attributes{Principal: "spiffe://cluster.local/ns/shopping/sa/web"}, false},
		{"namespace regex must match the whole id", principalName(regex("spiffe://cluster.local/ns/shop/.*")),
			Attributes{Principal: "spiffe://evil.example/x/spiffe://cluster.local/ns/shop/sa/web"}, false},
		{"prefix", principalName(prefix("spiffe://cluster.local/ns/shop/")), Attributes{Principal: webID}, true},
		{"suffix", principalName(suffix("/sa/web")), Attributes{Principal: webID}, true},
		{"contains", principalName(contains("/ns/admin/")), Attributes{Principal: webID}, false},
		{"ignore_case", principalName(exactFold("SPIFFE://cluster.local/ns/SHOP/sa/web")), Attributes{Principal: webID}, true},
		{"no principal_name: any authenticated peer", principalName(nil), Attributes{Principal: adminID}, true},
		{"no principal_name: plaintext peer", principalName(nil), Attributes{}, false},

		// Combinators.
		{"and_ids all match", &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: []*rbacv3.Principal{
			principalName(exact(webID)), {Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: cidr("10.0.0.0", 8)}},
		}}}}, Attributes{Principal: webID, RemoteIP: addr("10.1.2.3")}, true},
		{"and_ids one fails", &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: []*rbacv3.Principal{
			principalName(exact(webID)), {Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: cidr("10.0.0.0", 8)}},
		}}}}, Attributes{Principal: webID, RemoteIP: addr("192.168.0.1")}, false},
		{"or_ids one matches", &rbacv3.Principal{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{Ids: []*rbacv3.Principal{
			principalName(exact(adminID)), principalName(exact(webID)),
		}}}}, Attributes{Principal: webID}, true},
		{"or_ids none matches", &rbacv3.Principal{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{Ids: []*rbacv3.Principal{
			principalName(exact(adminID)),
		}}}}, Attributes{Principal: webID}, false},
		{"not_id negates", &rbacv3.Principal{Identifier: &rbacv3.Principal_NotId{NotId: principalName(exact(adminID))}},
			Attributes{Principal: webID}, true},
		{"not_id of a match", &rbacv3.Principal{Identifier: &rbacv3.Principal_NotId{NotId: principalName(exact(webID))}},
			Attributes{Principal: webID}, false},

		// Addresses: remote_ip is the original client, direct_remote_ip and
		// source_ip the TCP peer.
		{"remote_ip", &rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: cidr("10.0.0.0", 8)}},
			Attributes{RemoteIP: addr("10.9.9.9"), DirectRemoteIP: addr("172.16.0.1")}, true},
		{"remote_ip ignores the direct peer", &rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: cidr("172.16.0.0", 12)}},
			Attributes{RemoteIP: addr("10.9.9.9"), DirectRemoteIP: addr("172.16.0.1")}, false},
		{"direct_remote_ip", &rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: cidr("172.16.0.0", 12)}},
			Attributes{RemoteIP: addr("10.9.9.9"), DirectRemoteIP: addr("172.16.0.1")}, true},
		{"source_ip is the direct peer", &rbacv3.Principal{Identifier: &rbacv3.Principal_SourceIp{SourceIp: cidr("172.16.0.1", 32)}},
			Attributes{RemoteIP: addr("10.9.9.9"), DirectRemoteIP: addr("172.16.0.1")}, true},
		{"source_ip, other address", &rbacv3.Principal{Identifier: &rbacv3.Principal_SourceIp{SourceIp: cidr("10.9.9.9", 32)}},
			Attributes{RemoteIP: addr("10.9.9.9"), DirectRemoteIP: addr("172.16.0.1")}, false},
		{"IPv6 CIDR", &rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: cidr("2001:db8:abcd::", 48)}},
			Attributes{RemoteIP: addr("2001:db8:abcd:12::1")}, true},
		{"IPv6 CIDR, outside", &rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: cidr("2001:db8:abcd::", 48)}},
			Attributes{RemoteIP: addr("2001:db8:abce::1")}, false},
		{"IPv4 client, IPv6 CIDR", &rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: cidr("::", 0)}},
			Attributes{RemoteIP: addr("10.0.0.1")}, false},
		{"IPv4-mapped client, IPv4 CIDR", &rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: cidr("10.0.0.0", 8)}},
			Attributes{RemoteIP: addr("::ffff:10.0.0.1")}, true},
		{"IPv4-mapped CIDR, IPv4 client", &rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: cidr("::ffff:10.0.0.0", 104)}},
			Attributes{RemoteIP: addr("10.0.0.1")}, true},
		{"prefix_len unset is /0", &rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: &corev3.CidrRange{AddressPrefix: "192.168.1.1"}}},
			Attributes{RemoteIP: addr("8.8.8.8")}, true},
		{"no address", &rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: cidr("0.0.0.0", 0)}},
			Attributes{}, false},

		// Request attributes as principals.
		{"header", headerPrincipal(headerStr("x-user", exact("alice"))),
			Attributes{Header: http.Header{"X-User": {"alice"}}}, true},
		{"url_path", &rbacv3.Principal{Identifier: &rbacv3.Principal_UrlPath{UrlPath: urlPath(exact("/login"))}},
			Attributes{Path: "/login?next=/"}, true},

		// JWT claims in dynamic metadata.
		{"claim sub", metadataPrincipal(claim(stringValue(exact("alice")), "sub")), Attributes{Metadata: groups}, true},
		{"claim sub, other", metadataPrincipal(claim(stringValue(exact("bob")), "sub")), Attributes{Metadata: groups}, false},
		{"claim without a token", metadataPrincipal(claim(stringValue(exact("alice")), "sub")), Attributes{}, false},
		{"nested claim", metadataPrincipal(claim(stringValue(exact("editor")), "realm", "role")), Attributes{Metadata: groups}, true},
		{"nested claim below a string", metadataPrincipal(claim(stringValue(exact("alice")), "sub", "x")), Attributes{Metadata: groups}, false},
		{"list claim one_of", metadataPrincipal(claim(listOneOf(stringValue(exact("b"))), "groups")), Attributes{Metadata: groups}, true},
		{"list claim one_of, absent element", metadataPrincipal(claim(listOneOf(stringValue(exact("c"))), "groups")), Attributes{Metadata: groups}, false},
		{"string matcher on a list", metadataPrincipal(claim(stringValue(exact("b")), "groups")), Attributes{Metadata: groups}, false},
		{"sourced_metadata DYNAMIC", &rbacv3.Principal{Identifier: &rbacv3.Principal_SourcedMetadata{SourcedMetadata: &rbacv3.SourcedMetadata{
			MetadataMatcher: claim(stringValue(exact("alice")), "sub"),
		}}}, Attributes{Metadata: groups}, true},
		{"inverted claim", metadataPrincipal(inverted(claim(stringValue(exact("bob")), "sub"))), Attributes{Metadata: groups}, true},
		{"inverted claim without a token", metadataPrincipal(inverted(claim(stringValue(exact("bob")), "sub"))), Attributes{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := mustCompile(t, httpRBAC(rbacv3.RBAC_ALLOW, map[string]*rbacv3.Policy{
				"p": {Permissions: []*rbacv3.Permission{anyPermission()}, Principals: []*rbacv3.Principal{tt.principal}},
			}))
			if got := f.Evaluate(&tt.attrs).Allowed; got != tt.want {
				t.Errorf("principal matched = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestPermissions(t *testing.T) {
	get := Attributes{
		Method: "GET", Host: "shop.example", Path: "/api/items?id=1", Scheme: "http",
		DestinationIP: addr("10.96.0.10"), DestinationPort: 8080,
		Header: http.Header{"X-Tenant": {"blue"}, "Accept": {"text/html", "application/json"}},
	}
	tests := []struct {
		name       string
		permission *rbacv3.Permission
		attrs      Attributes
		want       bool
	}{
		{"any", anyPermission(), get, true},

		{":method", headerPermission(headerStr(":method", exact("GET"))), get, true},
		{":method, other", headerPermission(headerStr(":method", exact("POST"))), get, false},
		{":authority", headerPermission(headerStr(":authority", exact("shop.example"))), get, true},
		{"host names :authority", headerPermission(headerStr("host", exact("shop.example"))), get, true},
		{":path includes the query", headerPermission(headerStr(":path", exact("/api/items?id=1"))), get, true},
		{":path without the query", headerPermission(headerStr(":path", exact("/api/items"))), get, false},
		{":scheme", headerPermission(headerStr(":scheme", exact("http"))), get, true},
		{"header name is case-insensitive", headerPermission(headerStr("X-TENANT", exact("blue"))), get, true},
		{"repeated header is joined with commas", headerPermission(headerStr("accept", exact("text/html,application/json"))), get, true},

		{"url_path drops the query", &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: urlPath(exact("/api/items"))}}, get, true},
		{"url_path prefix", &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: urlPath(prefix("/admin"))}}, get, false},
		{"url_path drops the fragment", &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: urlPath(exact("/a"))}},
			Attributes{Path: "/a#frag"}, true},
		{"url_path without a request path", &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: urlPath(prefix("/"))}},
			Attributes{}, false},

		{"destination_ip", &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationIp{DestinationIp: cidr("10.96.0.0", 12)}}, get, true},
		{"destination_ip, outside", &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationIp{DestinationIp: cidr("10.0.0.0", 16)}}, get, false},
		{"destination_ip IPv6", &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationIp{DestinationIp: cidr("fd00:10:96::", 112)}},
			Attributes{DestinationIP: addr("fd00:10:96::a")}, true},
		{"destination_port", &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: 8080}}, get, true},
		{"destination_port, other", &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: 80}}, get, false},
		{"destination_port_range start is inclusive", &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPortRange{
			DestinationPortRange: &typev3.Int32Range{Start: 8080, End: 8081}}}, get, true},
		{"destination_port_range end is exclusive", &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPortRange{
			DestinationPortRange: &typev3.Int32Range{Start: 8000, End: 8080}}}, get, false},

		// The waypoint sees no SNI: only matchers that accept "" match.
		{"requested_server_name exact name", &rbacv3.Permission{Rule: &rbacv3.Permission_RequestedServerName{RequestedServerName: exact("shop.example")}}, get, false},
		{"requested_server_name empty", &rbacv3.Permission{Rule: &rbacv3.Permission_RequestedServerName{RequestedServerName: exact("")}}, get, true},

		{"metadata", &rbacv3.Permission{Rule: &rbacv3.Permission_Metadata{Metadata: claim(stringValue(exact("alice")), "sub")}},
			Attributes{Metadata: claims(map[string]any{"sub": "alice"})}, true},
		{"sourced_metadata", &rbacv3.Permission{Rule: &rbacv3.Permission_SourcedMetadata{SourcedMetadata: &rbacv3.SourcedMetadata{
			MetadataMatcher: claim(stringValue(exact("alice")), "sub"), MetadataSource: rbacv3.MetadataSource_DYNAMIC,
		}}}, Attributes{Metadata: claims(map[string]any{"sub": "bob"})}, false},

		{"and_rules all match", &rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{
			headerPermission(headerStr(":method", exact("GET"))),
			{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: 8080}},
		}}}}, get, true},
		{"and_rules one fails", &rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{
			headerPermission(headerStr(":method", exact("GET"))),
			{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: 9090}},
		}}}}, get, false},
		{"or_rules one matches", &rbacv3.Permission{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{
			headerPermission(headerStr(":method", exact("POST"))),
			headerPermission(headerStr(":method", exact("GET"))),
		}}}}, get, true},
		{"not_rule", &rbacv3.Permission{Rule: &rbacv3.Permission_NotRule{NotRule: headerPermission(headerStr(":method", exact("POST")))}}, get, true},
		{"not_rule of a match", &rbacv3.Permission{Rule: &rbacv3.Permission_NotRule{NotRule: anyPermission()}}, get, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := mustCompile(t, httpRBAC(rbacv3.RBAC_ALLOW, map[string]*rbacv3.Policy{
				"p": {Permissions: []*rbacv3.Permission{tt.permission}, Principals: []*rbacv3.Principal{anyPrincipal()}},
			}))
			if got := f.Evaluate(&tt.attrs).Allowed; got != tt.want {
				t.Errorf("permission matched = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestHeaderMatcher(t *testing.T) {
	present := http.Header{"X-Debug": {"1"}, "X-Count": {"42"}, "X-Empty": {""}}
	tests := []struct {
		name    string
		matcher *routev3.HeaderMatcher
		want    bool // against the headers above
	}{
		{"no specifier means present", &routev3.HeaderMatcher{Name: "x-debug"}, true},
		{"no specifier, absent", &routev3.HeaderMatcher{Name: "x-other"}, false},
		{"present_match", &routev3.HeaderMatcher{Name: "x-debug", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}, true},
		{"present_match, empty value", &routev3.HeaderMatcher{Name: "x-empty", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}, true},
		{"present_match false, absent", &routev3.HeaderMatcher{Name: "x-other", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: false}}, true},
		{"present_match false, present", &routev3.HeaderMatcher{Name: "x-debug", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: false}}, false},
		{"present_match inverted, absent", &routev3.HeaderMatcher{Name: "x-other", InvertMatch: true,
			HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}, true},
		{"present_match inverted, present", &routev3.HeaderMatcher{Name: "x-debug", InvertMatch: true,
			HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}, false},

		{"invert_match", &routev3.HeaderMatcher{Name: "x-debug", InvertMatch: true,
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("0")}}, true},
		{"invert_match of a match", &routev3.HeaderMatcher{Name: "x-debug", InvertMatch: true,
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("1")}}, false},
		{"invert_match, absent header does not match", &routev3.HeaderMatcher{Name: "x-other", InvertMatch: true,
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("1")}}, false},
		{"treat_missing_header_as_empty with invert", &routev3.HeaderMatcher{Name: "x-other", InvertMatch: true, TreatMissingHeaderAsEmpty: true,
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("1")}}, true},
		{"treat_missing_header_as_empty, empty regex", &routev3.HeaderMatcher{Name: "x-other", TreatMissingHeaderAsEmpty: true,
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: regex("^$")}}, true},

		{"range_match", &routev3.HeaderMatcher{Name: "x-count", HeaderMatchSpecifier: &routev3.HeaderMatcher_RangeMatch{
			RangeMatch: &typev3.Int64Range{Start: 0, End: 100}}}, true},
		{"range_match end is exclusive", &routev3.HeaderMatcher{Name: "x-count", HeaderMatchSpecifier: &routev3.HeaderMatcher_RangeMatch{
			RangeMatch: &typev3.Int64Range{Start: 0, End: 42}}}, false},
		{"range_match on a non-number", &routev3.HeaderMatcher{Name: "x-empty", HeaderMatchSpecifier: &routev3.HeaderMatcher_RangeMatch{
			RangeMatch: &typev3.Int64Range{Start: -10, End: 10}}}, false},
		{"exact_match (deprecated)", &routev3.HeaderMatcher{Name: "x-debug", HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: "1"}}, true},
		{"safe_regex_match (deprecated)", &routev3.HeaderMatcher{Name: "x-count", HeaderMatchSpecifier: &routev3.HeaderMatcher_SafeRegexMatch{
			SafeRegexMatch: &matcherv3.RegexMatcher{Regex: `\d+`}}}, true},
		{"prefix_match (deprecated)", &routev3.HeaderMatcher{Name: "x-count", HeaderMatchSpecifier: &routev3.HeaderMatcher_PrefixMatch{PrefixMatch: "4"}}, true},
		{"suffix_match (deprecated)", &routev3.HeaderMatcher{Name: "x-count", HeaderMatchSpecifier: &routev3.HeaderMatcher_SuffixMatch{SuffixMatch: "3"}}, false},
		{"contains_match (deprecated)", &routev3.HeaderMatcher{Name: "x-count", HeaderMatchSpecifier: &routev3.HeaderMatcher_ContainsMatch{ContainsMatch: "2"}}, true},
		{"string_match ignore_case", headerStr("x-debug", &matcherv3.StringMatcher{
			MatchPattern: &matcherv3.StringMatcher_Contains{Contains: "1"}, IgnoreCase: true}), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := mustCompile(t, httpRBAC(rbacv3.RBAC_ALLOW, map[string]*rbacv3.Policy{
				"p": {Permissions: []*rbacv3.Permission{headerPermission(tt.matcher)}, Principals: []*rbacv3.Principal{anyPrincipal()}},
			}))
			if got := f.Evaluate(&Attributes{Header: present}).Allowed; got != tt.want {
				t.Errorf("header matched = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestStringMatcherIgnoreCase(t *testing.T) {
	tests := []struct {
		matcher *matcherv3.StringMatcher
		value   string
		want    bool
	}{
		{&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "Alice"}, IgnoreCase: true}, "aLICE", true},
		{&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "/API/"}, IgnoreCase: true}, "/api/v1", true},
		{&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: ".JSON"}, IgnoreCase: true}, "/a.json", true},
		{&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: "Admin"}, IgnoreCase: true}, "/x/ADMIN/y", true},
		{&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "/API/"}, IgnoreCase: true}, "/ap", false},
		// Only ASCII folds, as in Envoy: the Kelvin sign is not a 'k'.
		{&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "k"}, IgnoreCase: true}, "\u212a", false},
		// ignore_case does not apply to regexes.
		{&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "abc"}}, IgnoreCase: true}, "ABC", false},
		{exact("Alice"), "alice", false},
	}
	for _, tt := range tests {
		match, err := compileString(tt.matcher)
		if err != nil {
			t.Fatalf("%v: %v", tt.matcher, err)
		}
		if got := match(tt.value); got != tt.want {
			t.Errorf("%v on %q = %v, want %v", tt.matcher, tt.value, got, tt.want)
		}
	}
}

func TestMetadataValues(t *testing.T) {
	md := claims(map[string]any{
		"sub":    "alice",
		"groups": []any{"a", "b"},
		"scores": []any{float64(1), float64(7)},
		"level":  float64(3),
		"big":    json.Number("12"),
		"admin":  true,
		"nobody": nil,
	})
	double := func(m *matcherv3.DoubleMatcher) *matcherv3.ValueMatcher {
		return &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_DoubleMatch{DoubleMatch: m}}
	}
	exactNum := func(n float64) *matcherv3.ValueMatcher {
		return double(&matcherv3.DoubleMatcher{MatchPattern: &matcherv3.DoubleMatcher_Exact{Exact: n}})
	}
	rangeNum := func(start, end float64) *matcherv3.ValueMatcher {
		return double(&matcherv3.DoubleMatcher{MatchPattern: &matcherv3.DoubleMatcher_Range{Range: &typev3.DoubleRange{Start: start, End: end}}})
	}
	boolean := func(b bool) *matcherv3.ValueMatcher {
		return &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_BoolMatch{BoolMatch: b}}
	}
	presentM := func(b bool) *matcherv3.ValueMatcher {
		return &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_PresentMatch{PresentMatch: b}}
	}
	null := &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_NullMatch_{NullMatch: &matcherv3.ValueMatcher_NullMatch{}}}
	or := func(vs ...*matcherv3.ValueMatcher) *matcherv3.ValueMatcher {
		return &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_OrMatch{OrMatch: &matcherv3.OrMatcher{ValueMatchers: vs}}}
	}
	tests := []struct {
		name    string
		matcher *matcherv3.MetadataMatcher
		want    bool
	}{
		{"double exact", claim(exactNum(3), "level"), true},
		{"double exact, other", claim(exactNum(4), "level"), false},
		{"double range", claim(rangeNum(1, 4), "level"), true},
		{"double range end is exclusive", claim(rangeNum(1, 3), "level"), false},
		{"double on json.Number", claim(exactNum(12), "big"), true},
		{"double on a string", claim(exactNum(3), "sub"), false},
		{"bool", claim(boolean(true), "admin"), true},
		{"bool, other", claim(boolean(false), "admin"), false},
		{"null", claim(null, "nobody"), true},
		{"null on an absent claim", claim(null, "missing"), false},
		{"present", claim(presentM(true), "nobody"), true},
		{"present, absent claim", claim(presentM(true), "missing"), false},
		{"present false never matches", claim(presentM(false), "missing"), false},
		{"absence via invert", inverted(claim(presentM(true), "missing")), true},
		{"list one_of exact", claim(listOneOf(stringValue(exact("b"))), "groups"), true},
		{"list one_of prefix", claim(listOneOf(stringValue(prefix("z"))), "groups"), false},
		{"list one_of number", claim(listOneOf(rangeNum(5, 10)), "scores"), true},
		{"list matcher on a scalar", claim(listOneOf(stringValue(exact("alice"))), "sub"), false},
		{"or_match", claim(or(stringValue(exact("bob")), stringValue(exact("alice"))), "sub"), true},
		{"or_match none", claim(or(stringValue(exact("bob")), exactNum(1)), "sub"), false},
		{"inverted list one_of", inverted(claim(listOneOf(stringValue(exact("b"))), "groups")), false},
		{"other filter", &matcherv3.MetadataMatcher{Filter: "other", Value: stringValue(exact("alice")),
			Path: []*matcherv3.MetadataMatcher_PathSegment{{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: "sub"}}}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := mustCompile(t, httpRBAC(rbacv3.RBAC_ALLOW, map[string]*rbacv3.Policy{
				"p": {Permissions: []*rbacv3.Permission{anyPermission()}, Principals: []*rbacv3.Principal{metadataPrincipal(tt.matcher)}},
			}))
			if got := f.Evaluate(&Attributes{Metadata: md}).Allowed; got != tt.want {
				t.Errorf("metadata matched = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestActions(t *testing.T) {
	fromWeb := map[string]*rbacv3.Policy{
		"web": {Permissions: []*rbacv3.Permission{anyPermission()}, Principals: []*rbacv3.Principal{principalName(exact(webID))}},
	}
	tests := []struct {
		name string
		cfg  *rbachttpv3.RBAC
		peer string
		want Decision
	}{
		{"ALLOW, policy matches", httpRBAC(rbacv3.RBAC_ALLOW, fromWeb), webID, Decision{Allowed: true, Policy: "web", Action: "ALLOW"}},
		{"ALLOW, no policy matches", httpRBAC(rbacv3.RBAC_ALLOW, fromWeb), adminID, Decision{Allowed: false, Action: "ALLOW"}},
		{"ALLOW without policies denies everything", httpRBAC(rbacv3.RBAC_ALLOW, nil), webID, Decision{Allowed: false, Action: "ALLOW"}},
		{"DENY, policy matches", httpRBAC(rbacv3.RBAC_DENY, fromWeb), webID, Decision{Allowed: false, Policy: "web", Action: "DENY"}},
		{"DENY, no policy matches", httpRBAC(rbacv3.RBAC_DENY, fromWeb), adminID, Decision{Allowed: true, Action: "DENY"}},
		{"DENY without policies allows everything", httpRBAC(rbacv3.RBAC_DENY, nil), webID, Decision{Allowed: true, Action: "DENY"}},
		{"LOG, policy matches", httpRBAC(rbacv3.RBAC_LOG, fromWeb), webID, Decision{Allowed: true, Policy: "web", Action: "LOG"}},
		{"LOG, no policy matches", httpRBAC(rbacv3.RBAC_LOG, fromWeb), adminID, Decision{Allowed: true, Action: "LOG"}},
		{"no rules allows everything", &rbachttpv3.RBAC{}, adminID, Decision{Allowed: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := mustCompile(t, tt.cfg)
			if got := f.Evaluate(&Attributes{Principal: tt.peer}); got != tt.want {
				t.Errorf("Evaluate = %+v, want %+v", got, tt.want)
			}
			if f.Action() != tt.want.Action {
				t.Errorf("Action() = %q, want %q", f.Action(), tt.want.Action)
			}
		})
	}
}

func TestPolicyNeedsPermissionAndPrincipal(t *testing.T) {
	f := mustCompile(t, httpRBAC(rbacv3.RBAC_ALLOW, map[string]*rbacv3.Policy{
		"web-reads": {
			Permissions: []*rbacv3.Permission{headerPermission(headerStr(":method", exact("GET"))), headerPermission(headerStr(":method", exact("HEAD")))},
			Principals:  []*rbacv3.Principal{principalName(exact(webID)), principalName(exact(adminID))},
		},
	}))
	tests := []struct {
		peer, method string
		want         bool
	}{
		{webID, "GET", true},
		{adminID, "HEAD", true},
		{webID, "POST", false},
		{"spiffe://cluster.local/ns/other/sa/x", "GET", false},
	}
	for _, tt := range tests {
		if got := f.Evaluate(&Attributes{Principal: tt.peer, Method: tt.method}).Allowed; got != tt.want {
			t.Errorf("%s %s: allowed = %v, want %v", tt.peer, tt.method, got, tt.want)
		}
	}
}

func TestMatchedPolicyIsFirstInNameOrder(t *testing.T) {
	everyone := &rbacv3.Policy{Permissions: []*rbacv3.Permission{anyPermission()}, Principals: []*rbacv3.Principal{anyPrincipal()}}
	f := mustCompile(t, httpRBAC(rbacv3.RBAC_DENY, map[string]*rbacv3.Policy{
		"ns[shop]-policy[zeta]-rule[0]":  everyone,
		"ns[shop]-policy[alpha]-rule[1]": everyone,
		"ns[shop]-policy[alpha]-rule[0]": everyone,
	}))
	for range 20 { // map order varies between runs; the answer must not
		if got := f.Evaluate(&Attributes{}).Policy; got != "ns[shop]-policy[alpha]-rule[0]" {
			t.Fatalf("matched policy = %q, want the first by name", got)
		}
	}
}

// TestChain is the waypoint's filter order: DENY rules, then ALLOW rules.
func TestChain(t *testing.T) {
	deny := mustCompile(t, httpRBAC(rbacv3.RBAC_DENY, map[string]*rbacv3.Policy{
		"no-admin-from-web": {
			Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_UrlPath{UrlPath: urlPath(prefix("/admin"))}}},
			Principals:  []*rbacv3.Principal{principalName(exact(webID))},
		},
	}))
	allow := mustCompile(t, httpRBAC(rbacv3.RBAC_ALLOW, map[string]*rbacv3.Policy{
		"shop": {
			Permissions: []*rbacv3.Permission{anyPermission()},
			Principals:  []*rbacv3.Principal{principalName(regex("spiffe://cluster.local/ns/shop/.*"))},
		},
	}))
	tests := []struct {
		name    string
		filters []*Filter
		attrs   Attributes
		want    Decision
	}{
		{"no filters allow", nil, Attributes{Principal: adminID}, Decision{Allowed: true}},
		{"allowed by the ALLOW filter", []*Filter{deny, allow}, Attributes{Principal: webID, Path: "/cart"},
			Decision{Allowed: true, Policy: "shop", Action: "ALLOW"}},
		{"deny wins over allow", []*Filter{deny, allow}, Attributes{Principal: webID, Path: "/admin/users"},
			Decision{Allowed: false, Policy: "no-admin-from-web", Action: "DENY"}},
		{"not in the allow list", []*Filter{deny, allow}, Attributes{Principal: adminID, Path: "/cart"},
			Decision{Allowed: false, Action: "ALLOW"}},
		{"only DENY: the rest is allowed", []*Filter{deny}, Attributes{Principal: adminID, Path: "/admin"},
			Decision{Allowed: true, Action: "DENY"}},
		{"only ALLOW: default deny", []*Filter{allow}, Attributes{Path: "/cart"},
			Decision{Allowed: false, Action: "ALLOW"}},
		{"a nil filter allows", []*Filter{nil}, Attributes{}, Decision{Allowed: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := EvaluateChain(&tt.attrs, tt.filters...); got != tt.want {
				t.Errorf("EvaluateChain = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestNetworkFilter(t *testing.T) {
	cfg := &rbacnetv3.RBAC{
		StatPrefix: "tcp",
		Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{
			"db-from-shop": {
				Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: 5432}}},
				Principals:  []*rbacv3.Principal{principalName(regex("spiffe://cluster.local/ns/shop/.*"))},
			},
			"get-only": { // HTTP matchers see no headers on a connection
				Permissions: []*rbacv3.Permission{headerPermission(headerStr(":method", exact("GET")))},
				Principals:  []*rbacv3.Principal{anyPrincipal()},
			},
		}},
	}
	if err := cfg.ValidateAll(); err != nil {
		t.Fatal(err)
	}
	f, err := CompileNetwork(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		attrs Attributes
		want  Decision
	}{
		{Attributes{Principal: webID, DestinationPort: 5432}, Decision{Allowed: true, Policy: "db-from-shop", Action: "ALLOW"}},
		{Attributes{Principal: adminID, DestinationPort: 5432}, Decision{Allowed: false, Action: "ALLOW"}},
		{Attributes{Principal: webID, DestinationPort: 6379}, Decision{Allowed: false, Action: "ALLOW"}},
	}
	for _, tt := range tests {
		if got := f.Evaluate(&tt.attrs); got != tt.want {
			t.Errorf("%+v: %+v, want %+v", tt.attrs, got, tt.want)
		}
	}
}

func TestCompileErrors(t *testing.T) {
	policy := func(perm *rbacv3.Permission, prin *rbacv3.Principal) *rbachttpv3.RBAC {
		return httpRBAC(rbacv3.RBAC_DENY, map[string]*rbacv3.Policy{
			"deny-evil": {Permissions: []*rbacv3.Permission{perm}, Principals: []*rbacv3.Principal{prin}},
		})
	}
	extension := &corev3.TypedExtensionConfig{Name: "ext", TypedConfig: mustAny(t)}
	// Messages whose Go types live in modules we do not import are built from text.
	withMatcher := &rbachttpv3.RBAC{}
	fromText(t, withMatcher, `matcher: {on_no_match: {action: {name: "deny",
		typed_config: {[type.googleapis.com/google.protobuf.StringValue]: {value: "x"}}}}}`)
	customString := &matcherv3.StringMatcher{}
	fromText(t, customString, `custom: {name: "ext", typed_config: {[type.googleapis.com/google.protobuf.StringValue]: {value: "x"}}}`)
	withCondition := policy(anyPermission(), anyPrincipal())
	fromText(t, withCondition.Rules.Policies["deny-evil"], `condition: {const_expr: {bool_value: true}}`)
	tests := []struct {
		name string
		cfg  *rbachttpv3.RBAC
		want []string // substrings of the error
	}{
		{"matcher tree", withMatcher, []string{"matcher"}},
		{"CEL condition", withCondition, []string{`"deny-evil"`, "condition"}},
		{"principal filter_state", policy(anyPermission(), &rbacv3.Principal{Identifier: &rbacv3.Principal_FilterState{
			FilterState: &matcherv3.FilterStateMatcher{Key: "k", Matcher: &matcherv3.FilterStateMatcher_StringMatch{StringMatch: exact("v")}},
		}}), []string{`"deny-evil"`, "principals[0]", "filter_state"}},
		{"custom principal nested in and_ids", policy(anyPermission(), &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{
			Ids: []*rbacv3.Principal{anyPrincipal(), {Identifier: &rbacv3.Principal_Custom{Custom: extension}}},
		}}}), []string{`"deny-evil"`, "and_ids[1]", "custom"}},
		{"permission matcher extension", policy(&rbacv3.Permission{Rule: &rbacv3.Permission_Matcher{Matcher: extension}}, anyPrincipal()),
			[]string{`"deny-evil"`, "permissions[0]", "matcher"}},
		{"permission uri_template in not_rule", policy(&rbacv3.Permission{Rule: &rbacv3.Permission_NotRule{
			NotRule: &rbacv3.Permission{Rule: &rbacv3.Permission_UriTemplate{UriTemplate: extension}}}}, anyPrincipal()),
			[]string{`"deny-evil"`, "not_rule", "uri_template"}},
		{"route metadata", policy(&rbacv3.Permission{Rule: &rbacv3.Permission_SourcedMetadata{SourcedMetadata: &rbacv3.SourcedMetadata{
			MetadataMatcher: claim(stringValue(exact("x")), "sub"), MetadataSource: rbacv3.MetadataSource_ROUTE,
		}}}, anyPrincipal()), []string{`"deny-evil"`, "ROUTE"}},
		{"custom string matcher", policy(anyPermission(), principalName(customString)), []string{`"deny-evil"`, "custom"}},
		{"unknown pseudo-header", policy(headerPermission(headerStr(":protocol", exact("websocket"))), anyPrincipal()),
			[]string{`"deny-evil"`, ":protocol"}},
		{"bad regex", policy(anyPermission(), principalName(regex("spiffe://(unclosed"))), []string{`"deny-evil"`, "safe_regex"}},
		{"regex that would escape its anchors", policy(anyPermission(), principalName(regex("a)|(b"))), []string{`"deny-evil"`, "safe_regex"}},
		{"bad address", policy(anyPermission(), &rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: cidr("10.0.0", 8)}}),
			[]string{`"deny-evil"`, "cidr"}},
		{"IPv4 prefix too long", policy(&rbacv3.Permission{Rule: &rbacv3.Permission_DestinationIp{DestinationIp: cidr("10.0.0.0", 33)}}, anyPrincipal()),
			[]string{`"deny-evil"`, "10.0.0.0/33"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.ValidateAll(); err != nil {
				t.Fatalf("test config must pass ValidateAll, so Compile is what rejects it: %v", err)
			}
			f, err := CompileHTTP(tt.cfg)
			if err == nil {
				t.Fatalf("CompileHTTP succeeded (%+v), want an error", f)
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
		})
	}
}

func TestCompileRejectsInvalidConfig(t *testing.T) {
	if _, err := CompileHTTP(nil); err == nil {
		t.Error("nil config compiled")
	}
	cfg := httpRBAC(rbacv3.RBAC_ALLOW, map[string]*rbacv3.Policy{"empty": {}})
	if _, err := CompileHTTP(cfg); err == nil || !strings.Contains(err.Error(), "invalid config") || !strings.Contains(err.Error(), "Permissions") {
		t.Errorf("policy without permissions: err = %v, want a validation error", err)
	}
}

func TestCompileNetworkErrors(t *testing.T) {
	if _, err := CompileNetwork(nil); err == nil {
		t.Error("nil config compiled")
	}
	if _, err := CompileNetwork(&rbacnetv3.RBAC{}); err == nil || !strings.Contains(err.Error(), "StatPrefix") {
		t.Errorf("config without stat_prefix: err = %v, want a validation error", err)
	}
	cfg := &rbacnetv3.RBAC{StatPrefix: "tcp", Rules: &rbacv3.RBAC{Policies: map[string]*rbacv3.Policy{
		"fs": {Permissions: []*rbacv3.Permission{anyPermission()}, Principals: []*rbacv3.Principal{{Identifier: &rbacv3.Principal_FilterState{
			FilterState: &matcherv3.FilterStateMatcher{Key: "k", Matcher: &matcherv3.FilterStateMatcher_StringMatch{StringMatch: exact("v")}},
		}}}},
	}}}
	if _, err := CompileNetwork(cfg); err == nil || !strings.Contains(err.Error(), `"fs"`) {
		t.Errorf("unsupported principal: err = %v, want one naming the policy", err)
	}
}

// fromText merges a text-format proto into m.
func fromText(t *testing.T, m proto.Message, text string) {
	t.Helper()
	parsed := m.ProtoReflect().New().Interface()
	if err := prototext.Unmarshal([]byte(text), parsed); err != nil {
		t.Fatal(err)
	}
	proto.Merge(m, parsed)
}

func mustAny(t *testing.T) *anypb.Any {
	a, err := anypb.New(wrapperspb.String("x"))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

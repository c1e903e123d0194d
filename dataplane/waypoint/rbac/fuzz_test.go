package rbac

import (
	"net/http"
	"net/netip"
	"testing"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
)

// FuzzCompile feeds arbitrary bytes as an HTTP RBAC config and evaluates
// whatever compiles against a request made from the second input: nothing
// may panic, and the decision must follow the filter's action.
//
//	go test ./dataplane/waypoint/rbac -run '^$' -fuzz FuzzCompile -fuzztime 20s
func FuzzCompile(f *testing.F) {
	seeds := []*rbachttpv3.RBAC{
		{},
		httpRBAC(rbacv3.RBAC_ALLOW, map[string]*rbacv3.Policy{
			"shop": {
				Permissions: []*rbacv3.Permission{
					headerPermission(headerStr(":method", exact("GET"))),
					{Rule: &rbacv3.Permission_UrlPath{UrlPath: urlPath(prefix("/api"))}},
					{Rule: &rbacv3.Permission_DestinationIp{DestinationIp: cidr("2001:db8::", 32)}},
				},
				Principals: []*rbacv3.Principal{
					principalName(regex("spiffe://cluster.local/ns/shop/.*")),
					{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: cidr("10.0.0.0", 8)}},
					{Identifier: &rbacv3.Principal_NotId{NotId: headerPrincipal(headerStr("x-user", exactFold("alice")))}},
				},
			},
		}),
		httpRBAC(rbacv3.RBAC_DENY, map[string]*rbacv3.Policy{
			"claims": {
				Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: 8080}}},
				Principals: []*rbacv3.Principal{
					metadataPrincipal(claim(listOneOf(stringValue(exact("b"))), "groups")),
					metadataPrincipal(inverted(claim(&matcherv3.ValueMatcher{
						MatchPattern: &matcherv3.ValueMatcher_PresentMatch{PresentMatch: true}}, "realm", "role"))),
				},
			},
		}),
	}
	for _, s := range seeds {
		b, err := proto.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, "spiffe://cluster.local/ns/shop/sa/web")
		f.Add(b, "/api/items?x=1")
	}
	f.Fuzz(func(t *testing.T, config []byte, request string) {
		cfg := &rbachttpv3.RBAC{}
		if err := proto.Unmarshal(config, cfg); err != nil {
			return
		}
		filter, err := CompileHTTP(cfg)
		if err != nil {
			return
		}
		a := fuzzAttributes(request)
		d := filter.Evaluate(a)
		switch filter.Action() {
		case ActionAllow:
			if d.Allowed != filter.matches(a) {
				t.Fatalf("ALLOW filter: %+v", d)
			}
		case ActionDeny:
			if d.Allowed == filter.matches(a) {
				t.Fatalf("DENY filter: %+v", d)
			}
		default:
			if !d.Allowed {
				t.Fatalf("%q filter denied: %+v", filter.Action(), d)
			}
		}
		if again := filter.Evaluate(a); again != d {
			t.Fatalf("decisions differ: %+v then %+v", d, again)
		}
	})
}

// matches reports whether any policy matches, for the fuzz test's oracle.
func (f *Filter) matches(a *Attributes) bool {
	_, ok := f.match(a)
	return ok
}

// fuzzAttributes makes a request whose every string field comes from s and
// whose addresses come from its bytes.
func fuzzAttributes(s string) *Attributes {
	var b [16]byte
	copy(b[:], s)
	v6 := netip.AddrFrom16(b)
	v4 := netip.AddrFrom4([4]byte(b[:4]))
	return &Attributes{
		Principal:       s,
		RemoteIP:        v4,
		DirectRemoteIP:  v6,
		DestinationIP:   v6.Unmap(),
		DestinationPort: uint16(len(s)),
		Method:          s,
		Host:            s,
		Path:            s,
		Scheme:          s,
		Header:          http.Header{"X-User": {s}, "Accept": {s, s}},
		Metadata: map[string]map[string]any{jwtFilter: {"payload": map[string]any{
			"sub":    s,
			"groups": []any{s, float64(len(s)), true, nil, map[string]any{"k": s}},
			"realm":  map[string]any{"role": s},
		}}},
	}
}

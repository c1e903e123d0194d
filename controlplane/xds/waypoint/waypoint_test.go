package waypoint

import (
	"regexp"
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
)

func TestParseNodeCluster(t *testing.T) {
	for _, tc := range []struct {
		cluster  string
		ns, name string
		ok       bool
	}{
		{NodeCluster("shop", "wp"), "shop", "wp", true},
		{"waypoint/shop/", "", "", false},
		{"waypoint//wp", "", "", false},
		{"waypoint/shop/wp/extra", "", "", false},
		{"ztunnel/node-a", "", "", false},
		{"", "", "", false},
	} {
		ns, name, ok := ParseNodeCluster(tc.cluster)
		if ns != tc.ns || name != tc.name || ok != tc.ok {
			t.Errorf("ParseNodeCluster(%q) = %q, %q, %v; want %q, %q, %v", tc.cluster, ns, name, ok, tc.ns, tc.name, tc.ok)
		}
	}
}

// TestReplacePrefixMatchFollowsGatewayAPI applies the generated rewrite the way Envoy does
// (a prefix rewrite replaces the matched prefix; a regex rewrite replaces every match) to
// the examples of Gateway API's HTTPPathModifier documentation.
func TestReplacePrefixMatchFollowsGatewayAPI(t *testing.T) {
	for _, tc := range []struct {
		path, matchPrefix, replacement, want string
	}{
		{"/foo/bar", "/foo", "/xyz", "/xyz/bar"},
		{"/foo/bar", "/foo", "/xyz/", "/xyz/bar"},
		{"/foo/bar", "/foo/", "/xyz", "/xyz/bar"},
		{"/foo/bar", "/foo/", "/xyz/", "/xyz/bar"},
		{"/foo", "/foo", "/xyz", "/xyz"},
		{"/foo/", "/foo", "/xyz", "/xyz/"},
		{"/foo/bar", "/foo", "", "/bar"},
		{"/foo/", "/foo", "", "/"},
		{"/foo", "/foo", "", "/"},
		{"/foo/", "/foo", "/", "/"},
		{"/foo", "/foo", "/", "/"},
		{"/anything", "/", "/xyz", "/xyz/anything"},
	} {
		m, _ := httpMatch(&gatewayv1.HTTPRouteMatch{Path: &gatewayv1.HTTPPathMatch{Value: &tc.matchPrefix}})
		a := &routev3.RouteAction{}
		applyRewrite(a, &gatewayv1.HTTPURLRewriteFilter{Path: &gatewayv1.HTTPPathModifier{
			Type: gatewayv1.PrefixMatchHTTPPathModifier, ReplacePrefixMatch: &tc.replacement,
		}}, m)
		var got string
		if a.RegexRewrite != nil {
			got = regexp.MustCompile(a.RegexRewrite.Pattern.Regex).ReplaceAllString(tc.path, a.RegexRewrite.Substitution)
		} else {
			got = a.PrefixRewrite + strings.TrimPrefix(tc.path, m.path)
		}
		if got != tc.want {
			t.Errorf("%s with prefix %s replaced by %q = %q, want %q", tc.path, tc.matchPrefix, tc.replacement, got, tc.want)
		}
	}
}

func TestFaultAnnotations(t *testing.T) {
	for _, tc := range []struct {
		abort, delay string
		wantErr      string
		wantStatus   uint32
		wantMillion  uint32 // abort share, in millionths (100 = percent form)
		wantDelay    time.Duration
	}{
		{abort: "503", wantStatus: 503, wantMillion: 100},
		{abort: "503:50", wantStatus: 503, wantMillion: 500_000},
		{abort: "429:0.25", wantStatus: 429, wantMillion: 2_500},
		{delay: "1500ms:10", wantDelay: 1500 * time.Millisecond},
		{abort: "700", wantErr: "not in 200-599"},
		{abort: "503:150", wantErr: "from 0 to 100"},
		{abort: "x", wantErr: "invalid syntax"},
		{delay: "-1s", wantErr: "positive"},
		{delay: "soon", wantErr: "invalid duration"},
	} {
		ann := map[string]string{}
		if tc.abort != "" {
			ann[AnnotationFaultAbort] = tc.abort
		}
		if tc.delay != "" {
			ann[AnnotationFaultDelay] = tc.delay
		}
		f, err := parseFaultAnnotations(ann)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%v: error %v, want one containing %q", ann, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%v: %v", ann, err)
			continue
		}
		cfg := f.config()
		if tc.wantStatus != 0 && (cfg.GetAbort().GetHttpStatus() != tc.wantStatus || cfg.GetAbort().GetPercentage().GetNumerator() != tc.wantMillion) {
			t.Errorf("%v: abort = %v", ann, cfg.GetAbort())
		}
		if tc.wantDelay != 0 && cfg.GetDelay().GetFixedDelay().AsDuration() != tc.wantDelay {
			t.Errorf("%v: delay = %v", ann, cfg.GetDelay())
		}
	}
}

// FuzzHTTPRoute feeds arbitrary strings into the user-written parts of an HTTPRoute. The
// waypoint's resources must still build and validate: a route Envoy would refuse is
// refused alone (Accepted=False), and never takes its waypoint's configuration with it.
func FuzzHTTPRoute(f *testing.F) {
	f.Add("/api", "X-Env", "prod", "/v2", "example.com", "503:10")
	f.Add("/a?b", "bad name", "line\nbreak", "//", "", "")
	f.Add("(", "", "\x00", "/\r", "h\n", "2s:x")
	st := loadState(f, "testdata/httproute-timeouts.yaml")
	wp := &st.Waypoints[0]
	f.Fuzz(func(t *testing.T, path, headerName, headerValue, rewrite, host, fault string) {
		st := st
		regex := gatewayv1.PathMatchRegularExpression
		hostname := gatewayv1.PreciseHostname(host)
		route := gatewayv1.HTTPRoute{
			ObjectMeta: metav1.ObjectMeta{Name: "fuzz", Namespace: "shop", Annotations: map[string]string{AnnotationFaultAbort: fault}},
			Spec: gatewayv1.HTTPRouteSpec{
				CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{serviceParent("web")}},
				Rules: []gatewayv1.HTTPRouteRule{{
					Matches: []gatewayv1.HTTPRouteMatch{
						{Path: &gatewayv1.HTTPPathMatch{Value: &path}, Headers: []gatewayv1.HTTPHeaderMatch{{Name: gatewayv1.HTTPHeaderName(headerName), Value: headerValue}}},
						{Path: &gatewayv1.HTTPPathMatch{Type: &regex, Value: &path}},
					},
					Filters: []gatewayv1.HTTPRouteFilter{
						{Type: gatewayv1.HTTPRouteFilterRequestHeaderModifier, RequestHeaderModifier: &gatewayv1.HTTPHeaderFilter{
							Set: []gatewayv1.HTTPHeader{{Name: gatewayv1.HTTPHeaderName(headerName), Value: headerValue}}, Remove: []string{headerName},
						}},
						{Type: gatewayv1.HTTPRouteFilterURLRewrite, URLRewrite: &gatewayv1.HTTPURLRewriteFilter{
							Hostname: &hostname, Path: &gatewayv1.HTTPPathModifier{Type: gatewayv1.FullPathHTTPPathModifier, ReplaceFullPath: &rewrite},
						}},
					},
					BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: "web", Port: ptrTo(gatewayv1.PortNumber(80))}}}},
				}},
			},
		}
		st.HTTPRoutes = []gatewayv1.HTTPRoute{route}
		res, err := Build(testMesh, wp, &st)
		if err != nil {
			t.Fatalf("Build: %v", err)
		}
		accepted := HTTPRouteParentStatuses(&route, &st, metav1.Now())[0].Conditions[0].Status == metav1.ConditionTrue
		routes := res.Routes["web.shop.svc.cluster.local:80"].GetVirtualHosts()[0].GetRoutes()
		if applied := routes[0].GetName() != "default"; applied != accepted {
			t.Fatalf("route applied = %v but Accepted = %v", applied, accepted)
		}
	})
}

func serviceParent(name string) gatewayv1.ParentReference {
	return gatewayv1.ParentReference{Group: ptrTo(gatewayv1.Group("")), Kind: ptrTo(gatewayv1.Kind("Service")), Name: gatewayv1.ObjectName(name)}
}

func ptrTo[T any](v T) *T { return &v }

// TestPolicyScopeAcrossNamespaces: a policy targeting the waypoint must live in the
// waypoint's namespace and then covers traffic from every namespace it serves; Service and
// Namespace targets apply only to listeners of the policy's own namespace.
func TestPolicyScopeAcrossNamespaces(t *testing.T) {
	wp := &meshv1.Waypoint{ObjectMeta: metav1.ObjectMeta{Namespace: "infra", Name: "shared"}}
	policy := func(ns string, kind meshv1.TargetKind, name string) *meshv1.MeshPolicy {
		return &meshv1.MeshPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "p"}, Spec: meshv1.MeshPolicySpec{
			TargetRefs: []meshv1.PolicyTargetReference{{Kind: kind, Name: name}}, Rules: []meshv1.Rule{{}}}}
	}
	shopWeb := scope{namespace: "shop", service: "web"}
	for _, tc := range []struct {
		name   string
		policy *meshv1.MeshPolicy
		sc     scope
		want   bool
	}{
		{"waypoint target, another namespace's Service", policy("infra", meshv1.TargetKindWaypoint, "shared"), shopWeb, true},
		{"waypoint target, another namespace's pod", policy("infra", meshv1.TargetKindWaypoint, "shared"), scope{namespace: "shop"}, true},
		{"same waypoint name in the listener's namespace", policy("shop", meshv1.TargetKindWaypoint, "shared"), shopWeb, false},
		{"Service target of the listener's namespace", policy("shop", meshv1.TargetKindService, "web"), shopWeb, true},
		{"Service of the same name in the waypoint's namespace", policy("infra", meshv1.TargetKindService, "web"), shopWeb, false},
		{"Namespace target of the listener's namespace", policy("shop", meshv1.TargetKindNamespace, "shop"), shopWeb, true},
		{"the waypoint's Namespace", policy("infra", meshv1.TargetKindNamespace, "infra"), shopWeb, false},
	} {
		if got := appliesTo(tc.policy, wp, tc.sc); got != tc.want {
			t.Errorf("%s: appliesTo = %v, want %v", tc.name, got, tc.want)
		}
	}
}

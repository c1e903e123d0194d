package waypoint

import (
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// An HTTPRoute and a GRPCRoute go through the same first and last steps: an unreadable
// fault annotation and session persistence make either unsupported, with the same words,
// and every rule is kept.
func TestCompiledRoutesShareTheirChecks(t *testing.T) {
	meta := metav1.ObjectMeta{Name: "r", Namespace: "shop", Annotations: map[string]string{AnnotationFaultAbort: "abc"}}
	persist := &gatewayv1.SessionPersistence{}
	httpRoute := compileHTTPRoute(&gatewayv1.HTTPRoute{ObjectMeta: meta, Spec: gatewayv1.HTTPRouteSpec{
		Rules: []gatewayv1.HTTPRouteRule{{}, {SessionPersistence: persist}},
	}})
	grpcRoute := compileGRPCRoute(&gatewayv1.GRPCRoute{ObjectMeta: meta, Spec: gatewayv1.GRPCRouteSpec{
		Rules: []gatewayv1.GRPCRouteRule{{}, {SessionPersistence: persist}},
	}})
	for kind, c := range map[string]compiledRoute{"HTTPRoute": httpRoute, "GRPCRoute": grpcRoute} {
		if len(c.rules) != 2 || c.rules[1].index != 1 || c.rules[0].route.name != "r" {
			t.Errorf("%s: %d rules, want both with their index and route", kind, len(c.rules))
		}
		if len(c.unsupported) != 2 || c.unsupported[1] != "spec.rules[1].sessionPersistence is not supported" {
			t.Errorf("%s: unsupported = %q, want the fault annotation and rule 1's session persistence", kind, c.unsupported)
		}
	}
	if !slices.Equal(httpRoute.unsupported, grpcRoute.unsupported) {
		t.Errorf("HTTPRoute says %q, GRPCRoute %q; want the same", httpRoute.unsupported, grpcRoute.unsupported)
	}
}

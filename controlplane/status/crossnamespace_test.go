package status

import (
	"context"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	xdsserver "github.com/ambientmesh/ambient-operator/controlplane/xds/server"
	"github.com/ambientmesh/ambient-operator/controlplane/xds/translate"
)

// crossNamespaceObjects: shop's Services use waypoints of infra. web uses the Waypoint
// infra/shared (Ready) through its namespace's labels; api names the Gateway waypoint
// infra/gw (not Programmed yet). Both allow every namespace. Each Service has an L7 policy
// and an HTTPRoute.
func crossNamespaceObjects() []client.Object {
	use := func(name string) map[string]string {
		return map[string]string{meshv1.LabelUseWaypoint: name, meshv1.LabelUseWaypointNamespace: "infra"}
	}
	service := func(name string, labels map[string]string) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, Labels: labels},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": name}, Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}
	}
	policy := func(name, target string) *meshv1.MeshPolicy {
		return &meshv1.MeshPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, Generation: 1},
			Spec: meshv1.MeshPolicySpec{
				TargetRefs: []meshv1.PolicyTargetReference{{Kind: meshv1.TargetKindService, Name: target}},
				Rules:      []meshv1.Rule{{To: []meshv1.Destination{{Methods: []string{"GET"}}}}},
			}}
	}
	route := func(name, parent string) *gatewayv1.HTTPRoute {
		return &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, Generation: 1},
			Spec: gatewayv1.HTTPRouteSpec{
				CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{
					Group: ptr.To(gatewayv1.Group("")), Kind: ptr.To(gatewayv1.Kind("Service")), Name: gatewayv1.ObjectName(parent)}}},
				Rules: []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: gatewayv1.BackendRef{
					BackendObjectReference: gatewayv1.BackendObjectReference{Name: gatewayv1.ObjectName(parent), Port: ptr.To(gatewayv1.PortNumber(80))}}}}}},
			}}
	}
	all := gatewayv1.NamespacesFromAll
	return []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "infra"}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: use("shared")}},
		&meshv1.Waypoint{ObjectMeta: metav1.ObjectMeta{Namespace: "infra", Name: "shared"},
			Spec: meshv1.WaypointSpec{AllowedNamespaces: &meshv1.WaypointAllowedNamespaces{From: meshv1.NamespacesFromAll}},
			Status: meshv1.WaypointStatus{Conditions: []metav1.Condition{{Type: meshv1.WaypointConditionReady,
				Status: metav1.ConditionTrue, Reason: meshv1.ReasonReady, LastTransitionTime: metav1.Now()}}}},
		&gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "infra", Name: "gw"},
			Spec: gatewayv1.GatewaySpec{GatewayClassName: translate.WaypointGatewayClass, Listeners: []gatewayv1.Listener{{
				Name: "mesh", Port: 15008, Protocol: "HBONE",
				AllowedRoutes: &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{From: &all}}}}},
			Status: gatewayv1.GatewayStatus{Conditions: []metav1.Condition{
				{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted", LastTransitionTime: metav1.Now()},
				{Type: "Programmed", Status: metav1.ConditionFalse, Reason: "Pending", Message: "0/1 replicas available", LastTransitionTime: metav1.Now()},
			}}},
		service("web", nil),
		service("api", use("gw")),
		policy("web-get-only", "web"),
		policy("api-get-only", "api"),
		route("web", "web"),
		route("api", "api"),
	}
}

// TestPolicyStatusFollowsWaypointsOfOtherNamespaces: a policy on a Service whose waypoint
// lives in another namespace is enforced by that waypoint (a Waypoint or a Gateway), and
// changes of that waypoint or its proxies requeue it.
func TestPolicyStatusFollowsWaypointsOfOtherNamespaces(t *testing.T) {
	proxies := &fakeProxies{waypoints: map[string]xdsserver.WaypointState{
		"infra/shared": {Published: true, Sync: xdsserver.Sync{Connected: 1, Synced: true},
			Contents: xdsserver.WaypointContents{Policies: map[string]int64{"shop/web-get-only": 1}, Services: []string{"shop/web"}}},
	}}
	r, c := newReconciler(t, proxies, crossNamespaceObjects()...)
	ctx := context.Background()

	p, _ := reconcilePolicy(t, r, c, "web-get-only")
	if got := meta.FindStatusCondition(p.Status.Conditions, meshv1.PolicyConditionEnforced); enforced(p) != "True/Enforced" ||
		!strings.Contains(got.Message, `Waypoint "infra/shared"`) {
		t.Errorf("web-get-only: Enforced %s (%+v), want True/Enforced by Waypoint infra/shared", enforced(p), got)
	}
	p, _ = reconcilePolicy(t, r, c, "api-get-only")
	if got := meta.FindStatusCondition(p.Status.Conditions, meshv1.PolicyConditionEnforced); enforced(p) != "False/WaypointNotReady" ||
		!strings.Contains(got.Message, `Gateway "infra/gw" is not Programmed (Pending: 0/1 replicas available)`) {
		t.Errorf("api-get-only: Enforced %s (%+v), want False/WaypointNotReady naming the Gateway", enforced(p), got)
	}

	both := []reconcile.Request{
		{NamespacedName: types.NamespacedName{Namespace: "shop", Name: "api-get-only"}},
		{NamespacedName: types.NamespacedName{Namespace: "shop", Name: "web-get-only"}},
	}
	for name, got := range map[string][]reconcile.Request{
		"a change of the Waypoint infra/shared": r.policiesUsingWaypointsOf(ctx, &meshv1.Waypoint{ObjectMeta: metav1.ObjectMeta{Namespace: "infra", Name: "shared"}}),
		"an ACK of infra/gw's proxies":          r.policiesHeldBy(ctx, xdsserver.AckChange{Client: xdsserver.Client{Cluster: "waypoint/infra/gw"}}),
	} {
		slices.SortFunc(got, func(a, b reconcile.Request) int { return strings.Compare(a.String(), b.String()) })
		if !slices.Equal(got, both) {
			t.Errorf("%s requeues %v, want shop's policies %v", name, got, both)
		}
	}
}

// TestRouteStatusFollowsWaypointsOfOtherNamespaces: a route on a Service served by a
// waypoint of another namespace is Accepted (the waypoint, not its readiness, decides),
// and a change of that waypoint requeues it.
func TestRouteStatusFollowsWaypointsOfOtherNamespaces(t *testing.T) {
	c := newClient(crossNamespaceObjects()...)
	r := &RouteReconciler{Client: c, Lookup: lookup(c), Kind: "HTTPRoute"}
	ctx := context.Background()
	for name, want := range map[string]string{
		"web": "accepted for Service shop/web port(s) 80, whose traffic Waypoint infra/shared carries",
		"api": "accepted for Service shop/api port(s) 80, whose traffic Gateway infra/gw carries",
	} {
		key := types.NamespacedName{Namespace: "shop", Name: name}
		if _, err := r.Reconcile(ctx, reconcile.Request{NamespacedName: key}); err != nil {
			t.Fatal(err)
		}
		var route gatewayv1.HTTPRoute
		if err := c.Get(ctx, key, &route); err != nil {
			t.Fatal(err)
		}
		if len(route.Status.Parents) != 1 {
			t.Fatalf("route %s: parents %+v, want ours", name, route.Status.Parents)
		}
		accepted := meta.FindStatusCondition(route.Status.Parents[0].Conditions, string(gatewayv1.RouteConditionAccepted))
		if accepted == nil || accepted.Status != metav1.ConditionTrue || accepted.Message != want {
			t.Errorf("route %s: Accepted %+v, want True: %s", name, accepted, want)
		}
	}
	got := r.routesUsingWaypointsOf(ctx, &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "infra", Name: "gw"}})
	if len(got) != 2 {
		t.Errorf("a change of the Gateway infra/gw requeues %v, want both routes of shop", got)
	}
}

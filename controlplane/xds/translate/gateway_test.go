package translate

import (
	"reflect"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
)

// waypointGateway is an accepted Gateway of the waypoint class with one HBONE listener;
// edit modifies it.
func waypointGateway(name string, edit func(*gatewayv1.Gateway)) gatewayv1.Gateway {
	gw := gatewayv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: "infra", Name: name},
		Spec: gatewayv1.GatewaySpec{
			GatewayClassName: WaypointGatewayClass,
			Listeners:        []gatewayv1.Listener{{Name: "mesh", Port: 15008, Protocol: "HBONE"}},
		},
		Status: gatewayv1.GatewayStatus{Conditions: []metav1.Condition{
			{Type: string(gatewayv1.GatewayConditionAccepted), Status: metav1.ConditionTrue, Reason: "Accepted"},
		}},
	}
	if edit != nil {
		edit(&gw)
	}
	return gw
}

func allowedRoutes(from gatewayv1.FromNamespaces, selector *metav1.LabelSelector) func(*gatewayv1.Gateway) {
	return func(gw *gatewayv1.Gateway) {
		gw.Spec.Listeners[0].AllowedRoutes = &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{From: &from, Selector: selector}}
	}
}

func TestWaypointFromGateway(t *testing.T) {
	teams := &metav1.LabelSelector{MatchLabels: map[string]string{"team": "payments"}}
	for _, tc := range []struct {
		name        string
		gw          gatewayv1.Gateway
		wantOK      bool
		wantFor     meshv1.WaypointTrafficType
		wantAllowed *meshv1.WaypointAllowedNamespaces
		wantReady   *metav1.Condition
	}{
		{name: "defaults: service traffic, its own namespace", gw: waypointGateway("wp", nil), wantOK: true, wantFor: meshv1.WaypointForService},
		{name: "waypoint-for label", wantOK: true, wantFor: meshv1.WaypointForAll, gw: waypointGateway("wp", func(gw *gatewayv1.Gateway) {
			gw.Labels = map[string]string{meshv1.LabelWaypointFor: "all"}
		})},
		{name: "waypoint-for none", wantOK: true, wantFor: meshv1.WaypointForNone, gw: waypointGateway("wp", func(gw *gatewayv1.Gateway) {
			gw.Labels = map[string]string{meshv1.LabelWaypointFor: "none"}
		})},
		{name: "unknown waypoint-for value: service", wantOK: true, wantFor: meshv1.WaypointForService, gw: waypointGateway("wp", func(gw *gatewayv1.Gateway) {
			gw.Labels = map[string]string{meshv1.LabelWaypointFor: "Workload"}
		})},
		{name: "allowedRoutes from All", gw: waypointGateway("wp", allowedRoutes(gatewayv1.NamespacesFromAll, nil)),
			wantOK: true, wantFor: meshv1.WaypointForService, wantAllowed: &meshv1.WaypointAllowedNamespaces{From: meshv1.NamespacesFromAll}},
		{name: "allowedRoutes from a Selector", gw: waypointGateway("wp", allowedRoutes(gatewayv1.NamespacesFromSelector, teams)),
			wantOK: true, wantFor: meshv1.WaypointForService, wantAllowed: &meshv1.WaypointAllowedNamespaces{From: meshv1.NamespacesFromSelector, Selector: teams}},
		{name: "Selector without a selector: Same", gw: waypointGateway("wp", allowedRoutes(gatewayv1.NamespacesFromSelector, nil)),
			wantOK: true, wantFor: meshv1.WaypointForService},
		{name: "None: Same", gw: waypointGateway("wp", allowedRoutes(gatewayv1.NamespacesFromNone, nil)),
			wantOK: true, wantFor: meshv1.WaypointForService},
		{name: "Programmed becomes Ready", wantOK: true, wantFor: meshv1.WaypointForService,
			gw: waypointGateway("wp", func(gw *gatewayv1.Gateway) {
				gw.Status.Conditions = append(gw.Status.Conditions, metav1.Condition{Type: string(gatewayv1.GatewayConditionProgrammed),
					Status: metav1.ConditionFalse, Reason: "Pending", Message: "0/1 replicas available", ObservedGeneration: 3})
			}),
			wantReady: &metav1.Condition{Type: meshv1.WaypointConditionReady, Status: metav1.ConditionFalse, Reason: "Pending",
				Message: "0/1 replicas available", ObservedGeneration: 3}},
		{name: "the HBONE listener among others", wantOK: true, wantFor: meshv1.WaypointForService,
			wantAllowed: &meshv1.WaypointAllowedNamespaces{From: meshv1.NamespacesFromAll},
			gw: waypointGateway("wp", func(gw *gatewayv1.Gateway) {
				all := gatewayv1.NamespacesFromAll
				same := gatewayv1.NamespacesFromSame
				gw.Spec.Listeners = []gatewayv1.Listener{
					{Name: "http", Port: 80, Protocol: gatewayv1.HTTPProtocolType, AllowedRoutes: &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{From: &same}}},
					{Name: "mesh", Port: 15008, Protocol: "HBONE", AllowedRoutes: &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{From: &all}}},
				}
			})},
		{name: "another class", gw: waypointGateway("wp", func(gw *gatewayv1.Gateway) { gw.Spec.GatewayClassName = "istio-waypoint" })},
		{name: "not accepted yet", gw: waypointGateway("wp", func(gw *gatewayv1.Gateway) { gw.Status.Conditions = nil })},
		{name: "not accepted", gw: waypointGateway("wp", func(gw *gatewayv1.Gateway) {
			gw.Status.Conditions[0].Status, gw.Status.Conditions[0].Reason = metav1.ConditionFalse, "UnsupportedAddress"
		})},
		{name: "HBONE on another port", gw: waypointGateway("wp", func(gw *gatewayv1.Gateway) { gw.Spec.Listeners[0].Port = 15009 })},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wp, ok := WaypointFromGateway(&tc.gw)
			if ok != tc.wantOK {
				t.Fatalf("ok = %v, want %v", ok, tc.wantOK)
			}
			if !ok {
				return
			}
			if wp.Namespace != "infra" || wp.Name != "wp" || WaypointKind(wp) != "Gateway" {
				t.Errorf("read as %s %s/%s, want Gateway infra/wp", WaypointKind(wp), wp.Namespace, wp.Name)
			}
			if got := wp.Spec.EffectiveFor(); got != tc.wantFor {
				t.Errorf("for = %s, want %s", got, tc.wantFor)
			}
			if !reflect.DeepEqual(wp.Spec.AllowedNamespaces, tc.wantAllowed) {
				t.Errorf("allowedNamespaces = %+v, want %+v", wp.Spec.AllowedNamespaces, tc.wantAllowed)
			}
			var ready *metav1.Condition
			if len(wp.Status.Conditions) > 0 {
				ready = &wp.Status.Conditions[0]
			}
			if !reflect.DeepEqual(ready, tc.wantReady) {
				t.Errorf("Ready = %+v, want %+v", ready, tc.wantReady)
			}
		})
	}
}

// TestMergeWaypoints: Waypoints first; a Gateway that is a waypoint joins unless a
// Waypoint has its namespace and name; others are left out.
func TestMergeWaypoints(t *testing.T) {
	waypoints := []meshv1.Waypoint{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "infra", Name: "shared"}, Spec: meshv1.WaypointSpec{For: meshv1.WaypointForWorkload}},
	}
	gateways := []gatewayv1.Gateway{
		waypointGateway("shared", nil),
		waypointGateway("gw", nil),
		waypointGateway("other-class", func(gw *gatewayv1.Gateway) { gw.Spec.GatewayClassName = "istio" }),
		waypointGateway("gw", func(gw *gatewayv1.Gateway) { gw.Namespace = "shop" }),
	}
	var got []string
	for i, wp := range MergeWaypoints(waypoints, gateways) {
		got = append(got, WaypointKind(&wp)+" "+wp.Namespace+"/"+wp.Name+" for "+string(wp.Spec.EffectiveFor()))
		if i == 0 && wp.Spec.For != meshv1.WaypointForWorkload {
			t.Errorf("infra/shared is the Waypoint's (for: workload), got for: %s", wp.Spec.For)
		}
	}
	want := []string{"Waypoint infra/shared for workload", "Gateway infra/gw for service", "Gateway shop/gw for service"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("merged %q, want %q", got, want)
	}
}

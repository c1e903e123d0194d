package discovery

import (
	"context"
	"slices"
	"testing"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	xdsserver "github.com/ambientmesh/ambient-operator/controlplane/xds/server"
	"github.com/ambientmesh/ambient-operator/controlplane/xds/translate"
	"github.com/ambientmesh/ambient-operator/internal/meshscheme"
)

// acceptedGateway is a Gateway of the waypoint class that the operator accepted.
func acceptedGateway(ns, name string) *gatewayv1.Gateway {
	return &gatewayv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: gatewayv1.GatewaySpec{GatewayClassName: translate.WaypointGatewayClass,
			Listeners: []gatewayv1.Listener{{Name: "mesh", Port: 15008, Protocol: "HBONE"}}},
		Status: gatewayv1.GatewayStatus{Conditions: []metav1.Condition{{Type: string(gatewayv1.GatewayConditionAccepted),
			Status: metav1.ConditionTrue, Reason: "Accepted", LastTransitionTime: metav1.Now()}}},
	}
}

// gatewayCluster: shop uses the Gateway waypoint gw (its Service and proxy pod as the
// operator makes them); dup is both a Waypoint (for: workload) and a Gateway, and the
// Service stock names it.
func gatewayCluster(t *testing.T) client.Client {
	t.Helper()
	waypointObjects := func(name, ip string) []client.Object {
		l := map[string]string{meshv1.LabelWaypoint: name}
		return []client.Object{
			&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, Labels: l},
				Spec: corev1.ServiceSpec{Selector: l, ClusterIP: ip, Ports: []corev1.ServicePort{{Name: "tcp-hbone", Port: 15008}}}},
			&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name + "-1", Labels: l},
				Spec: corev1.PodSpec{ServiceAccountName: name}},
		}
	}
	objs := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{meshv1.LabelUseWaypoint: "gw"}}},
		acceptedGateway("shop", "gw"),
		acceptedGateway("shop", "dup"),
		&meshv1.Waypoint{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "dup"}, Spec: meshv1.WaypointSpec{For: meshv1.WaypointForWorkload}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, ClusterIP: "10.96.0.10", Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "stock", Labels: map[string]string{meshv1.LabelUseWaypoint: "dup"}},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "stock"}, ClusterIP: "10.96.0.11", Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}},
	}
	objs = append(objs, waypointObjects("gw", "10.96.0.50")...)
	objs = append(objs, waypointObjects("dup", "10.96.0.51")...)
	return fake.NewClientBuilder().WithScheme(meshscheme.New()).WithObjects(objs...).
		WithStatusSubresource(&gatewayv1.Gateway{}).
		WithIndex(&corev1.Service{}, IndexUseWaypointNamespace, crossNamespaceWaypoint).
		WithIndex(&corev1.Pod{}, IndexUseWaypointNamespace, crossNamespaceWaypoint).
		WithIndex(&corev1.Service{}, IndexServiceWaypoint, func(o client.Object) []string { return nonEmpty(o.GetLabels()[meshv1.LabelWaypoint]) }).
		WithIndex(&corev1.Pod{}, IndexPodWaypoint, func(o client.Object) []string { return nonEmpty(o.GetLabels()[meshv1.LabelWaypoint]) }).
		Build()
}

// TestGatewayWaypoints: with the Gateway CRD installed, a waypoint Gateway is routed to
// by ztunnel and gets its Envoy configuration, exactly as a Waypoint; a Waypoint of the
// same name wins; without the CRD, or once the Gateway is no longer accepted, it is none.
func TestGatewayWaypoints(t *testing.T) {
	c := gatewayCluster(t)
	ctx := context.Background()
	withCRD := reader{client: c, mesh: selectionMesh, gateways: true}
	pub := recordingPublisher{}
	services := &ServiceReconciler{reader: withCRD, publisher: pub}
	for _, name := range []string{"web", "stock"} {
		if _, err := services.Reconcile(ctx, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "shop", Name: name}}); err != nil {
			t.Fatal(err)
		}
	}
	web := pub[translate.ServiceNameFor(selectionMesh, "shop", "web")].(*pb.Service)
	if got, want := web.GetWaypoint(), (&pb.GatewayAddress{Address: "10.96.0.50", Identity: pb.SpiffeID("cluster.local", "shop", "gw")}); !proto.Equal(got, want) {
		t.Errorf("shop/web waypoint %v, want the Gateway's Service and identity %v", got, want)
	}
	if got := pub[translate.ServiceNameFor(selectionMesh, "shop", "stock")].(*pb.Service).GetWaypoint(); got != nil {
		t.Errorf("shop/stock waypoint %v, want none: the Waypoint dup (for: workload) wins over the Gateway dup", got)
	}

	waypoints := &recordingWaypoints{sets: map[types.NamespacedName]map[string]map[string]proto.Message{},
		contents: map[types.NamespacedName]xdsserver.WaypointContents{}}
	wr := &WaypointReconciler{reader: withCRD, publisher: waypoints}
	gw := types.NamespacedName{Namespace: "shop", Name: "gw"}
	if _, err := wr.Reconcile(ctx, reconcile.Request{NamespacedName: gw}); err != nil {
		t.Fatal(err)
	}
	if _, ok := waypoints.sets[gw][resourcev3.ListenerType]["web.shop.svc.cluster.local:80"]; !ok {
		t.Errorf("the Gateway waypoint's listeners %v, want web's", waypoints.sets[gw][resourcev3.ListenerType])
	}
	if !slices.Contains(services.servicesUsingWaypointsOf(ctx, acceptedGateway("shop", "gw")), reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "shop", Name: "web"}}) {
		t.Error("a change of the Gateway does not requeue Service shop/web")
	}
	all, err := withCRD.waypoints(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for i := range all {
		listed = append(listed, translate.WaypointKind(&all[i])+" "+all[i].Name)
	}
	if want := []string{"Waypoint dup", "Gateway gw"}; !slices.Equal(listed, want) {
		t.Errorf("waypoints %v, want %v", listed, want)
	}

	withoutCRD := reader{client: c, mesh: selectionMesh}
	if wp, err := withoutCRD.waypoint(ctx, gw); err != nil || wp != nil {
		t.Errorf("without the Gateway CRD: waypoint %v, %v; want none", wp, err)
	}

	var obj gatewayv1.Gateway
	if err := c.Get(ctx, gw, &obj); err != nil {
		t.Fatal(err)
	}
	obj.Status.Conditions[0].Status = metav1.ConditionFalse
	if err := c.Status().Update(ctx, &obj); err != nil {
		t.Fatal(err)
	}
	if _, err := wr.Reconcile(ctx, reconcile.Request{NamespacedName: gw}); err != nil {
		t.Fatal(err)
	}
	if res, ok := waypoints.sets[gw]; !ok || res != nil {
		t.Errorf("a Gateway no longer accepted: published %v, want everything removed", res)
	}
}

func TestWaypointGatewayChanged(t *testing.T) {
	edited := func(edit func(*gatewayv1.Gateway)) *gatewayv1.Gateway {
		gw := acceptedGateway("shop", "gw")
		edit(gw)
		return gw
	}
	otherClass := edited(func(gw *gatewayv1.Gateway) { gw.Spec.GatewayClassName = "istio" })
	for _, tc := range []struct {
		name     string
		old, new *gatewayv1.Gateway
		want     bool
	}{
		{"accepted", edited(func(gw *gatewayv1.Gateway) { gw.Status.Conditions = nil }), acceptedGateway("shop", "gw"), true},
		{"no longer accepted", acceptedGateway("shop", "gw"), edited(func(gw *gatewayv1.Gateway) { gw.Status.Conditions = nil }), true},
		{"waypoint-for label", acceptedGateway("shop", "gw"), edited(func(gw *gatewayv1.Gateway) {
			gw.Labels = map[string]string{meshv1.LabelWaypointFor: "all"}
		}), true},
		{"allowedRoutes", acceptedGateway("shop", "gw"), edited(func(gw *gatewayv1.Gateway) {
			all := gatewayv1.NamespacesFromAll
			gw.Spec.Listeners[0].AllowedRoutes = &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{From: &all}}
		}), true},
		{"Programmed", acceptedGateway("shop", "gw"), edited(func(gw *gatewayv1.Gateway) {
			gw.Status.Conditions = append(gw.Status.Conditions, metav1.Condition{Type: "Programmed", Status: metav1.ConditionTrue, Reason: "Programmed"})
		}), true},
		{"an unrelated annotation", acceptedGateway("shop", "gw"), edited(func(gw *gatewayv1.Gateway) {
			gw.Annotations = map[string]string{"note": "x"}
		}), false},
		{"another class", otherClass, edited(func(gw *gatewayv1.Gateway) {
			gw.Spec.GatewayClassName = "istio"
			gw.Labels = map[string]string{meshv1.LabelWaypointFor: "all"}
		}), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := WaypointGatewayChanged.Update(event.UpdateEvent{ObjectOld: tc.old, ObjectNew: tc.new}); got != tc.want {
				t.Errorf("update passes = %v, want %v", got, tc.want)
			}
		})
	}
	if !WaypointGatewayChanged.Create(event.CreateEvent{Object: acceptedGateway("shop", "gw")}) ||
		WaypointGatewayChanged.Create(event.CreateEvent{Object: otherClass}) {
		t.Error("create passes only a waypoint Gateway")
	}
	if !WaypointGatewayChanged.Delete(event.DeleteEvent{Object: acceptedGateway("shop", "gw")}) ||
		WaypointGatewayChanged.Delete(event.DeleteEvent{Object: otherClass}) {
		t.Error("delete passes only a waypoint Gateway")
	}
}

func TestNamespacesUsingWaypointsOf(t *testing.T) {
	c := crossNamespaceCluster(t)
	got, err := NamespacesUsingWaypointsOf(context.Background(), c, "infra")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if want := []string{"books", "infra", "shop"}; !slices.Equal(got, want) {
		t.Errorf("namespaces using infra's waypoints %v, want %v (its own, shop by its label, books by a Service's)", got, want)
	}
}

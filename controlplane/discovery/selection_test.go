package discovery

import (
	"context"
	"slices"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	xdsserver "github.com/ambientmesh/ambient-operator/controlplane/xds/server"
	"github.com/ambientmesh/ambient-operator/controlplane/xds/translate"
	"github.com/ambientmesh/ambient-operator/internal/meshscheme"
)

var selectionMesh = translate.Mesh{TrustDomain: "cluster.local", ClusterDomain: "cluster.local", RootNamespace: "ambient-system"}

// crossNamespaceCluster: infra/shared (for all, allows every namespace) used by the
// namespace shop and by one Service of books; infra/private (allows only infra) named by
// a Service of shop.
func crossNamespaceCluster(t *testing.T) client.Client {
	t.Helper()
	use := func(name string) map[string]string {
		return map[string]string{meshv1.LabelUseWaypoint: name, meshv1.LabelUseWaypointNamespace: "infra"}
	}
	service := func(ns, name, ip string, l map[string]string) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: l},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": name}, ClusterIP: ip, Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}
	}
	shopLabels := use("shared")
	shopLabels[meshv1.LabelDataplaneMode] = meshv1.DataplaneModeAmbient
	objs := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "infra"}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: shopLabels}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "books"}},
		&meshv1.Waypoint{ObjectMeta: metav1.ObjectMeta{Namespace: "infra", Name: "shared"},
			Spec: meshv1.WaypointSpec{For: meshv1.WaypointForAll, AllowedNamespaces: &meshv1.WaypointAllowedNamespaces{From: meshv1.NamespacesFromAll}}},
		&meshv1.Waypoint{ObjectMeta: metav1.ObjectMeta{Namespace: "infra", Name: "private"}},
		service("infra", "shared", "10.96.9.1", map[string]string{meshv1.LabelWaypoint: "shared"}),
		service("infra", "private", "10.96.9.2", map[string]string{meshv1.LabelWaypoint: "private"}),
		service("shop", "web", "10.96.1.10", nil),
		service("shop", "orders", "10.96.1.11", use("private")),
		service("books", "catalog", "10.96.2.10", use("shared")),
		service("books", "local", "10.96.2.11", nil),
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-1", Labels: map[string]string{"app": "web"}},
			Status: corev1.PodStatus{PodIP: "10.1.1.1"}},
	}
	return fake.NewClientBuilder().WithScheme(meshscheme.New()).WithObjects(objs...).
		WithIndex(&corev1.Service{}, IndexUseWaypointNamespace, crossNamespaceWaypoint).
		WithIndex(&corev1.Pod{}, IndexUseWaypointNamespace, crossNamespaceWaypoint).
		WithIndex(&corev1.Service{}, IndexServiceWaypoint, func(o client.Object) []string { return nonEmpty(o.GetLabels()[meshv1.LabelWaypoint]) }).
		WithIndex(&corev1.Pod{}, IndexPodWaypoint, func(o client.Object) []string { return nonEmpty(o.GetLabels()[meshv1.LabelWaypoint]) }).
		Build()
}

// TestWaypointServesOtherNamespaces: a waypoint that allows other namespaces gets
// listeners for their Services and pods that name it, and changes there requeue it.
func TestWaypointServesOtherNamespaces(t *testing.T) {
	c := crossNamespaceCluster(t)
	pub := &recordingWaypoints{sets: map[types.NamespacedName]map[string]map[string]proto.Message{},
		contents: map[types.NamespacedName]xdsserver.WaypointContents{}}
	r := &WaypointReconciler{reader: reader{client: c, mesh: selectionMesh}, publisher: pub}
	ctx := context.Background()
	for _, name := range []string{"shared", "private"} {
		if _, err := r.Reconcile(ctx, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "infra", Name: name}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		waypoint string
		want     []string
	}{
		{"shared", []string{"10.1.1.1:80", "catalog.books.svc.cluster.local:80", "web.shop.svc.cluster.local:80"}},
		{"private", nil}, // shop/orders names it, but it allows only infra
	} {
		var got []string
		for name, m := range pub.sets[types.NamespacedName{Namespace: "infra", Name: tc.waypoint}][resourcev3.ListenerType] {
			if _, ok := m.(*listenerv3.Listener); ok {
				got = append(got, name)
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("infra/%s listeners %v, want %v", tc.waypoint, got, tc.want)
		}
	}
	if got := pub.contents[types.NamespacedName{Namespace: "infra", Name: "shared"}].Services; !slices.Equal(got, []string{"books/catalog", "shop/web"}) {
		t.Errorf("recorded Services %v, want every served one as <namespace>/<name>", got)
	}

	shared := reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "infra", Name: "shared"}}
	for _, tc := range []struct {
		name string
		obj  client.Object
		want bool
	}{
		{"a backend pod in a namespace it serves", &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-2"}}, true},
		{"a route's namespace it serves", &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "books", Name: "other"}}, true},
		{"a namespace that starts naming it", &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "music",
			Labels: map[string]string{meshv1.LabelUseWaypoint: "shared", meshv1.LabelUseWaypointNamespace: "infra"}}}, true},
		{"a Service elsewhere that starts naming it", &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "music", Name: "radio",
			Labels: map[string]string{meshv1.LabelUseWaypoint: "shared", meshv1.LabelUseWaypointNamespace: "infra"}}}, true},
		{"an unrelated namespace's pod", &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "music", Name: "radio-1"}}, false},
	} {
		if got := slices.Contains(r.waypointsAffectedBy(ctx, tc.obj), shared); got != tc.want {
			t.Errorf("%s: requeues infra/shared = %v, want %v", tc.name, got, tc.want)
		}
	}
}

type recordingPublisher map[string]proto.Message

func (p recordingPublisher) Set(_, name string, m proto.Message) bool {
	p[name] = m
	return true
}

// TestWorkloadAPIUsesOtherNamespacesWaypoints runs the Service and Workload reconcilers:
// ztunnel is told to send shop's traffic to infra/shared, not to infra/private, which
// does not allow shop; a change of infra/shared requeues every Service and pod using it.
func TestWorkloadAPIUsesOtherNamespacesWaypoints(t *testing.T) {
	c := crossNamespaceCluster(t)
	ctx := context.Background()
	pub := recordingPublisher{}
	services := &ServiceReconciler{reader: reader{client: c, mesh: selectionMesh}, publisher: pub}
	workloads := &WorkloadReconciler{reader: reader{client: c, mesh: selectionMesh}, publisher: pub, uids: map[client.ObjectKey]string{}}
	for _, key := range []types.NamespacedName{{Namespace: "shop", Name: "web"}, {Namespace: "shop", Name: "orders"}, {Namespace: "books", Name: "catalog"}} {
		if _, err := services.Reconcile(ctx, reconcile.Request{NamespacedName: key}); err != nil {
			t.Fatal(err)
		}
	}
	var pod corev1.Pod
	if err := c.Get(ctx, types.NamespacedName{Namespace: "shop", Name: "web-1"}, &pod); err != nil {
		t.Fatal(err)
	}
	if _, err := workloads.Reconcile(ctx, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&pod)}); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		translate.ServiceNameFor(selectionMesh, "shop", "web"):      "10.96.9.1",
		translate.ServiceNameFor(selectionMesh, "shop", "orders"):   "",
		translate.ServiceNameFor(selectionMesh, "books", "catalog"): "10.96.9.1",
	} {
		if got := pub[name].(*pb.Service).GetWaypoint().GetAddress(); got != want {
			t.Errorf("%s: waypoint %q, want %q", name, got, want)
		}
	}
	if got := pub[string(pod.UID)].(*pb.Workload).GetWaypoint().GetAddress(); got != "10.96.9.1" {
		t.Errorf("shop/web-1: waypoint %q, want infra/shared's 10.96.9.1", got)
	}

	wp := &meshv1.Waypoint{ObjectMeta: metav1.ObjectMeta{Namespace: "infra", Name: "shared"}}
	for _, want := range []types.NamespacedName{{Namespace: "shop", Name: "web"}, {Namespace: "books", Name: "catalog"}} {
		if !slices.Contains(services.servicesUsingWaypointsOf(ctx, wp), reconcile.Request{NamespacedName: want}) {
			t.Errorf("a change of infra/shared does not requeue Service %s", want)
		}
	}
	if !slices.Contains(workloads.podsUsingWaypointsOf(ctx, wp), reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&pod)}) {
		t.Error("a change of infra/shared does not requeue pod shop/web-1")
	}
}

package discovery

import (
	"context"
	"slices"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	xdsserver "github.com/ambientmesh/ambient-operator/controlplane/xds/server"
	"github.com/ambientmesh/ambient-operator/controlplane/xds/translate"
	"github.com/ambientmesh/ambient-operator/internal/meshscheme"
)

type recordingWaypoints struct {
	sets     map[types.NamespacedName]map[string]map[string]proto.Message
	contents map[types.NamespacedName]xdsserver.WaypointContents
}

func (r *recordingWaypoints) Set(ns, name string, res map[string]map[string]proto.Message, contents xdsserver.WaypointContents) (int, error) {
	r.sets[types.NamespacedName{Namespace: ns, Name: name}] = res
	r.contents[types.NamespacedName{Namespace: ns, Name: name}] = contents
	return 0, nil
}

// TestWaypointReconcilerPublishesTheWaypointsResources runs the reconciler on a fake
// cache: the Waypoint's namespace (Service, route) becomes its Envoy resources, and a
// deleted Waypoint's resources are removed.
func TestWaypointReconcilerPublishesTheWaypointsResources(t *testing.T) {
	mesh := translate.Mesh{TrustDomain: "cluster.local", ClusterDomain: "cluster.local", RootNamespace: "ambient-system"}
	objs := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{meshv1.LabelUseWaypoint: "wp"}}},
		&meshv1.Waypoint{ObjectMeta: metav1.ObjectMeta{Name: "wp", Namespace: "shop"}},
		&corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, ClusterIP: "10.96.0.10",
				Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
		},
		&meshv1.MeshPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: "get-only", Namespace: "shop", Generation: 4},
			Spec: meshv1.MeshPolicySpec{
				TargetRefs: []meshv1.PolicyTargetReference{{Kind: meshv1.TargetKindService, Name: "web"}},
				Rules:      []meshv1.Rule{{To: []meshv1.Destination{{Methods: []string{"GET"}}}}},
			},
		},
		&gatewayv1.HTTPRoute{
			ObjectMeta: metav1.ObjectMeta{Name: "r", Namespace: "shop"},
			Spec: gatewayv1.HTTPRouteSpec{
				CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{
					Group: ptr.To(gatewayv1.Group("")), Kind: ptr.To(gatewayv1.Kind("Service")), Name: "web",
				}}},
				Rules: []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: gatewayv1.BackendRef{
					BackendObjectReference: gatewayv1.BackendObjectReference{Name: "web", Port: ptr.To(gatewayv1.PortNumber(80))},
				}}}}},
			},
		},
	}
	b := fake.NewClientBuilder().WithScheme(meshscheme.New())
	for _, o := range objs {
		b = b.WithObjects(o)
	}
	c := b.Build()
	pub := &recordingWaypoints{sets: map[types.NamespacedName]map[string]map[string]proto.Message{},
		contents: map[types.NamespacedName]xdsserver.WaypointContents{}}
	r := &WaypointReconciler{reader: reader{client: c, mesh: mesh}, publisher: pub, gatewayAPI: map[string]bool{"HTTPRoute": true}}
	key := types.NamespacedName{Namespace: "shop", Name: "wp"}
	if _, err := r.Reconcile(context.Background(), reconcile.Request{NamespacedName: key}); err != nil {
		t.Fatal(err)
	}
	rc, ok := pub.sets[key][resourcev3.RouteType]["web.shop.svc.cluster.local:80"].(*routev3.RouteConfiguration)
	if !ok {
		t.Fatalf("no RouteConfiguration for web:80 in %v", pub.sets[key])
	}
	if got := rc.GetVirtualHosts()[0].GetRoutes()[0].GetName(); got != "shop/r/0/0" {
		t.Fatalf("route %q, want the HTTPRoute's rule shop/r/0/0", got)
	}
	var policy meshv1.MeshPolicy
	if err := c.Get(context.Background(), types.NamespacedName{Namespace: "shop", Name: "get-only"}, &policy); err != nil {
		t.Fatal(err)
	}
	contents := pub.contents[key]
	if got := contents.Policies["shop/get-only"]; got != policy.Generation || !slices.Equal(contents.Services, []string{"shop/web"}) {
		t.Fatalf("recorded contents %+v, want policy shop/get-only at generation %d and Service shop/web", contents, policy.Generation)
	}

	if err := c.Delete(context.Background(), &meshv1.Waypoint{ObjectMeta: metav1.ObjectMeta{Name: "wp", Namespace: "shop"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Reconcile(context.Background(), reconcile.Request{NamespacedName: key}); err != nil {
		t.Fatal(err)
	}
	if res, ok := pub.sets[key]; !ok || res != nil {
		t.Fatalf("after delete published %v, want nil (remove everything)", res)
	}
}

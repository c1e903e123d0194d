package status

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controlplane/discovery"
	xdsserver "github.com/ambientmesh/ambient-operator/controlplane/xds/server"
	"github.com/ambientmesh/ambient-operator/controlplane/xds/translate"
	"github.com/ambientmesh/ambient-operator/internal/meshscheme"
)

var testMesh = translate.Mesh{TrustDomain: "cluster.local", ClusterDomain: "cluster.local", RootNamespace: "ambient-system"}

// fakeProxies stands in for the xDS server: what each waypoint was sent and holds, and
// what each node's ztunnel holds.
type fakeProxies struct {
	waypoints map[string]xdsserver.WaypointState
	ztunnels  map[string]map[string]map[string]string // node → type → name → version held
	published map[string]proto.Message                // "<type> <name>" → resource
	started   time.Time
}

func (f *fakeProxies) Waypoint(namespace, name string) xdsserver.WaypointState {
	return f.waypoints[namespace+"/"+name]
}

func (f *fakeProxies) ZTunnel(node string, want map[string]map[string]string) xdsserver.Sync {
	held, ok := f.ztunnels[node]
	if !ok {
		return xdsserver.Sync{}
	}
	for t, versions := range want {
		for n, v := range versions {
			if held[t][n] != v {
				return xdsserver.Sync{Connected: 1}
			}
		}
	}
	return xdsserver.Sync{Connected: 1, Synced: true}
}

func (f *fakeProxies) Published(typeURL, name string) (proto.Message, string) {
	m, ok := f.published[typeURL+" "+name]
	if !ok {
		return nil, ""
	}
	return m, xdsserver.ResourceVersion(m)
}

func (f *fakeProxies) WatchAcks(context.Context) <-chan xdsserver.AckChange { return nil }

func (f *fakeProxies) Started() time.Time { return f.started }

func newReconciler(t *testing.T, proxies *fakeProxies, objs ...client.Object) (*PolicyReconciler, client.Client) {
	t.Helper()
	c := newClient(objs...)
	return &PolicyReconciler{Client: c, Mesh: testMesh, Lookup: lookup(c), Proxies: proxies}, c
}

// newClient is a fake cache with the index the map functions use.
func newClient(objs ...client.Object) client.Client {
	return fake.NewClientBuilder().WithScheme(meshscheme.New()).WithObjects(objs...).
		WithStatusSubresource(&meshv1.MeshPolicy{}, &meshv1.Waypoint{}, &gatewayv1.Gateway{}, &gatewayv1.HTTPRoute{}).
		WithIndex(&corev1.Service{}, discovery.IndexUseWaypointNamespace, func(o client.Object) []string {
			if ref, ok := translate.UsedWaypoint(o.GetNamespace(), o.GetLabels(), nil); ok && ref.Namespace != o.GetNamespace() {
				return []string{ref.Namespace}
			}
			return nil
		}).Build()
}

// lookup resolves policy targets and waypoints as the control plane does, Gateways
// included.
func lookup(c client.Client) translate.TargetLookup {
	return discovery.NewTargetLookup(c, testMesh, map[string]bool{"Gateway": true, "HTTPRoute": true})
}

func reconcilePolicy(t *testing.T, r *PolicyReconciler, c client.Client, name string) (*meshv1.MeshPolicy, reconcile.Result) {
	t.Helper()
	key := client.ObjectKey{Namespace: "shop", Name: name}
	res, err := r.Reconcile(context.Background(), reconcile.Request{NamespacedName: key})
	if err != nil {
		t.Fatal(err)
	}
	var p meshv1.MeshPolicy
	if err := c.Get(context.Background(), key, &p); err != nil {
		t.Fatal(err)
	}
	return &p, res
}

func enforced(p *meshv1.MeshPolicy) string {
	c := meta.FindStatusCondition(p.Status.Conditions, meshv1.PolicyConditionEnforced)
	if c == nil {
		return ""
	}
	return string(c.Status) + "/" + c.Reason
}

// TestL7PolicyEnforcedOnlyWhenWaypointReadyAndSynced follows an L7 policy on a Service
// whose waypoint becomes Ready, is sent the policy's generation, then ACKs it.
func TestL7PolicyEnforcedOnlyWhenWaypointReadyAndSynced(t *testing.T) {
	policy := &meshv1.MeshPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "get-only", Generation: 1},
		Spec: meshv1.MeshPolicySpec{
			TargetRefs: []meshv1.PolicyTargetReference{{Kind: meshv1.TargetKindService, Name: "web"}},
			Rules:      []meshv1.Rule{{To: []meshv1.Destination{{Methods: []string{"GET"}}}}},
		},
	}
	wp := &meshv1.Waypoint{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "wp"}}
	proxies := &fakeProxies{waypoints: map[string]xdsserver.WaypointState{}}
	r, c := newReconciler(t, proxies,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{meshv1.LabelUseWaypoint: "wp"}}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}}, wp, policy)

	if p, _ := reconcilePolicy(t, r, c, "get-only"); enforced(p) != "False/WaypointNotReady" || len(p.Status.EnforcedBy) != 0 {
		t.Fatalf("no Ready condition: Enforced %s by %v, want False/WaypointNotReady by nobody", enforced(p), p.Status.EnforcedBy)
	}

	meta.SetStatusCondition(&wp.Status.Conditions, metav1.Condition{Type: meshv1.WaypointConditionReady, Status: metav1.ConditionTrue, Reason: meshv1.ReasonReady})
	if err := c.Status().Update(context.Background(), wp); err != nil {
		t.Fatal(err)
	}
	proxies.waypoints["shop/wp"] = xdsserver.WaypointState{Published: true,
		Contents: xdsserver.WaypointContents{Policies: map[string]int64{"shop/get-only": 1}, Services: []string{"shop/web"}},
		Sync:     xdsserver.Sync{Connected: 1}}
	if p, _ := reconcilePolicy(t, r, c, "get-only"); enforced(p) != "False/Pending" {
		t.Fatalf("Ready, sent, not ACKed: Enforced %s, want False/Pending", enforced(p))
	}

	proxies.waypoints["shop/wp"] = xdsserver.WaypointState{Published: true,
		Contents: xdsserver.WaypointContents{Policies: map[string]int64{"shop/get-only": 0}, Services: []string{"shop/web"}},
		Sync:     xdsserver.Sync{Connected: 1, Synced: true}}
	if p, _ := reconcilePolicy(t, r, c, "get-only"); enforced(p) != "False/Pending" {
		t.Fatalf("ACKed a configuration built from another generation: Enforced %s, want False/Pending", enforced(p))
	}

	proxies.waypoints["shop/wp"] = xdsserver.WaypointState{Published: true,
		Contents: xdsserver.WaypointContents{Policies: map[string]int64{"shop/get-only": 1}, Services: []string{"shop/web"}},
		Sync:     xdsserver.Sync{Connected: 1, Synced: true}}
	p, _ := reconcilePolicy(t, r, c, "get-only")
	if enforced(p) != "True/Enforced" || len(p.Status.EnforcedBy) != 1 || p.Status.EnforcedBy[0] != meshv1.EnforcedByWaypoint {
		t.Fatalf("Ready and ACKed: Enforced %s by %v, want True/Enforced by waypoint", enforced(p), p.Status.EnforcedBy)
	}

	rv := p.ResourceVersion
	if p, _ = reconcilePolicy(t, r, c, "get-only"); p.ResourceVersion != rv {
		t.Fatal("an unchanged status was written again")
	}
}

// TestL4PolicyNeedsTheNodesZTunnel: a selector policy is enforced once the ztunnel of the
// node running the selected pod holds its Authorization and the pod's Workload naming it.
func TestL4PolicyNeedsTheNodesZTunnel(t *testing.T) {
	policy := &meshv1.MeshPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "allow-frontend", Generation: 1},
		Spec: meshv1.MeshPolicySpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Rules:    []meshv1.Rule{{From: []meshv1.Source{{Namespaces: []string{"shop"}}}}},
		},
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-1", UID: "uid-1", Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{NodeName: "node-a"}, Status: corev1.PodStatus{Phase: corev1.PodRunning}}
	authz := translate.Authorization(testMesh, policy)
	authzName := pb.AuthorizationResourceName("shop", "allow-frontend")
	workload := &pb.Workload{Uid: "uid-1", Namespace: "shop", Name: "web-1", AuthorizationPolicies: []string{authzName}}
	proxies := &fakeProxies{published: map[string]proto.Message{
		pb.AuthorizationTypeURL + " " + authzName: authz,
		pb.WorkloadTypeURL + " uid-1":             workload,
	}}
	r, c := newReconciler(t, proxies,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{meshv1.LabelDataplaneMode: meshv1.DataplaneModeAmbient}}},
		pod, policy)

	if p, _ := reconcilePolicy(t, r, c, "allow-frontend"); enforced(p) != "False/Pending" {
		t.Fatalf("no ztunnel connected: Enforced %s, want False/Pending", enforced(p))
	}
	proxies.ztunnels = map[string]map[string]map[string]string{"node-a": {
		pb.AuthorizationTypeURL: {authzName: xdsserver.ResourceVersion(authz)},
	}}
	if p, _ := reconcilePolicy(t, r, c, "allow-frontend"); enforced(p) != "False/Pending" {
		t.Fatalf("the Authorization held, not the Workload naming it: Enforced %s, want False/Pending", enforced(p))
	}
	proxies.ztunnels["node-a"][pb.WorkloadTypeURL] = map[string]string{"uid-1": xdsserver.ResourceVersion(workload)}
	if p, _ := reconcilePolicy(t, r, c, "allow-frontend"); enforced(p) != "True/Enforced" {
		t.Fatalf("both held: Enforced %s, want True/Enforced", enforced(p))
	}
}

func TestReconnectGraceKeepsEnforcedRightAfterStart(t *testing.T) {
	policy := &meshv1.MeshPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "get-only", Generation: 1},
		Spec: meshv1.MeshPolicySpec{
			TargetRefs: []meshv1.PolicyTargetReference{{Kind: meshv1.TargetKindWaypoint, Name: "wp"}},
			Rules:      []meshv1.Rule{{To: []meshv1.Destination{{Methods: []string{"GET"}}}}},
		},
		Status: meshv1.MeshPolicyStatus{ObservedGeneration: 1, Conditions: []metav1.Condition{{Type: meshv1.PolicyConditionEnforced,
			Status: metav1.ConditionTrue, Reason: meshv1.ReasonEnforced, ObservedGeneration: 1, LastTransitionTime: metav1.Now()}}},
	}
	wp := &meshv1.Waypoint{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "wp"}, Status: meshv1.WaypointStatus{
		Conditions: []metav1.Condition{{Type: meshv1.WaypointConditionReady, Status: metav1.ConditionTrue, Reason: meshv1.ReasonReady, LastTransitionTime: metav1.Now()}}}}
	proxies := &fakeProxies{started: time.Now(), waypoints: map[string]xdsserver.WaypointState{}}
	r, c := newReconciler(t, proxies, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, wp, policy)
	r.ReconnectGrace = time.Minute

	p, res := reconcilePolicy(t, r, c, "get-only")
	if enforced(p) != "True/Enforced" || res.RequeueAfter <= 0 || res.RequeueAfter > time.Minute {
		t.Fatalf("within the grace: Enforced %s, requeue after %v; want True kept and a requeue within a minute", enforced(p), res.RequeueAfter)
	}
	proxies.started = time.Now().Add(-2 * time.Minute)
	if p, _ = reconcilePolicy(t, r, c, "get-only"); enforced(p) != "False/Pending" {
		t.Fatalf("after the grace: Enforced %s, want False/Pending", enforced(p))
	}
}

func TestMergeParentsKeepsOtherControllersEntries(t *testing.T) {
	theirs := gatewayv1.RouteParentStatus{ParentRef: gatewayv1.ParentReference{Name: "gw"}, ControllerName: "example.com/gateway"}
	oursOld := gatewayv1.RouteParentStatus{ParentRef: gatewayv1.ParentReference{Name: "gone"}, ControllerName: "ambientmesh.dev/waypoint-controller"}
	oursNew := gatewayv1.RouteParentStatus{ParentRef: gatewayv1.ParentReference{Name: "web"}, ControllerName: "ambientmesh.dev/waypoint-controller"}
	got := mergeParents([]gatewayv1.RouteParentStatus{oursOld, theirs}, []gatewayv1.RouteParentStatus{oursNew})
	if len(got) != 2 || got[0].ControllerName != theirs.ControllerName || got[1].ParentRef.Name != "web" {
		t.Fatalf("merged %+v, want theirs kept and only our current parent", got)
	}
	if !parentsEqual(got, mergeParents(got, []gatewayv1.RouteParentStatus{oursNew})) {
		t.Fatal("merging the same entries again is not a no-op")
	}
}

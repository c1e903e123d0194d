package discovery

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/diff"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controlplane/xds/translate"
	"github.com/ambientmesh/ambient-operator/controlplane/xds/waypoint"
	"github.com/ambientmesh/ambient-operator/internal/meshscheme"
)

var transformMesh = translate.Mesh{TrustDomain: "cluster.local", RootNamespace: "ambient-system", ClusterDomain: "cluster.local", ClusterID: translate.DefaultClusterID}

// The fields each transform may leave, as JSON paths ([] for any list item, * for any map
// key). A field a transform keeps that is not here fails the tests, and so does one that
// translation reads but the transform drops (the translations then differ).
var (
	keptMetaPaths = []string{"apiVersion", "kind", "metadata.name", "metadata.namespace", "metadata.uid", "metadata.resourceVersion"}
	keptPodPaths  = append(slices.Clone(keptMetaPaths), "metadata.labels.*",
		"metadata.ownerReferences[].apiVersion", "metadata.ownerReferences[].kind", "metadata.ownerReferences[].name",
		"metadata.ownerReferences[].uid", "metadata.ownerReferences[].controller", "metadata.ownerReferences[].blockOwnerDeletion",
		"metadata.deletionTimestamp", "spec.nodeName", "spec.serviceAccountName", "spec.hostNetwork",
		"spec.containers[].name", "spec.containers[].ports[].name", "spec.containers[].ports[].containerPort", "spec.containers[].ports[].protocol",
		"status.phase", "status.podIP", "status.podIPs[].ip", "status.conditions[].type", "status.conditions[].status")
	keptServicePaths = append(slices.Clone(keptMetaPaths), "metadata.labels.*",
		"spec.selector.*", "spec.type", "spec.clusterIP", "spec.clusterIPs[]",
		"spec.ports[].name", "spec.ports[].protocol", "spec.ports[].appProtocol", "spec.ports[].port", "spec.ports[].targetPort")
	keptNamespacePaths = append(slices.Clone(keptMetaPaths), "metadata.labels.*")
	keptNodePaths      = keptMetaPaths
)

// TestTransformPod: the control plane's view of a cluster — workload API resources, each
// waypoint's Envoy resources and route statuses, MeshPolicy targets and selected
// workloads, and what the CA and the status predicates read of pods — is the same whether
// the cache holds full objects or transformed ones, for each variant of a realistic pod.
func TestTransformPod(t *testing.T) {
	const reviews = "reviews-v1-5b7d6c8f9d-8kq4t"
	cases := []struct {
		name, namespace, pod string
		change               func(*corev1.Pod)
	}{
		{"ready pod of a Deployment, dual-stack, named ports", "shop", reviews, func(*corev1.Pod) {}},
		{"not ready", "shop", reviews, func(p *corev1.Pod) { setReady(p, corev1.ConditionFalse) }},
		{"terminating", "shop", reviews, func(p *corev1.Pod) { p.DeletionTimestamp = ptr.To(metav1.NewTime(time.Unix(1764500000, 0))) }},
		{"succeeded", "shop", reviews, func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }},
		{"failed", "shop", reviews, func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed }},
		{"host network", "shop", reviews, func(p *corev1.Pod) { p.Spec.HostNetwork = true }},
		{"not scheduled yet", "shop", reviews, func(p *corev1.Pod) {
			p.Spec.NodeName, p.Status.Phase, p.Status.PodIP, p.Status.PodIPs = "", corev1.PodPending, "", nil
			p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: "Unschedulable"}}
		}},
		{"opted out", "shop", reviews, func(p *corev1.Pod) { p.Labels[meshv1.LabelDataplaneMode] = meshv1.DataplaneModeNone }},
		{"own waypoint label opts out", "shop", reviews, func(p *corev1.Pod) { p.Labels[meshv1.LabelUseWaypoint] = meshv1.UseWaypointNone }},
		{"default service account", "shop", reviews, func(p *corev1.Pod) { p.Spec.ServiceAccountName, p.Spec.DeprecatedServiceAccount = "", "" }},
		{"no controller", "shop", reviews, func(p *corev1.Pod) { p.OwnerReferences = p.OwnerReferences[:1] }},
		{"canonical labels", "shop", reviews, func(p *corev1.Pod) {
			p.Labels[translate.LabelCanonicalName], p.Labels[translate.LabelCanonicalRevision] = "reviews-canonical", "r7"
		}},
		{"named port only in the second container, UDP port of that name in the first", "shop", reviews, func(p *corev1.Pod) {
			c := &p.Spec.Containers[0]
			c.Ports = slices.DeleteFunc(c.Ports, func(cp corev1.ContainerPort) bool { return cp.Name == "http" })
			c.Ports = append(c.Ports, corev1.ContainerPort{Name: "http", ContainerPort: 9081, Protocol: corev1.ProtocolUDP})
			p.Spec.Containers[1].Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: 9082, Protocol: corev1.ProtocolTCP}}
		}},
		{"no ports", "shop", reviews, func(p *corev1.Pod) { p.Spec.Containers[0].Ports = nil }},
		{"labelled as a waypoint's proxy", "shop", reviews, func(p *corev1.Pod) { p.Labels[meshv1.LabelWaypoint] = "wp" }},
		{"as envtest serves the bench's pods", "bench", "app-00001", func(*corev1.Pod) {}},
		{"a waypoint proxy", "shop", "wp-6d8f9c7b54-qx2vz", func(*corev1.Pod) {}},
		{"crash-looping, named by the app.kubernetes.io labels", "shop", "ratings-v2-7f9c5d6b8-zz9wm", func(*corev1.Pod) {}},
		{"of a StatefulSet, in a namespace using a waypoint of another", "frontend", "web-0", func(*corev1.Pod) {}},
	}
	cluster := loadCluster(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			full := cluster.deepCopy()
			tc.change(full.pod(t, tc.namespace, tc.pod))
			got := full.transformed(t)
			compareViews(t, full, got)
			assertOnlyKept(t, got.pod(t, tc.namespace, tc.pod), full.pod(t, tc.namespace, tc.pod), keptPodPaths)
		})
	}
}

// TestTransformService: as TestTransformPod, for variants of a realistic Service.
func TestTransformService(t *testing.T) {
	cases := []struct {
		name, service string
		change        func(*corev1.Service)
	}{
		{"dual-stack ClusterIP, named target port, appProtocol, UDP port", "reviews", func(*corev1.Service) {}},
		{"LoadBalancer with node ports and an ingress", "ratings", func(*corev1.Service) {}},
		{"headless", "db", func(*corev1.Service) {}},
		{"ExternalName", "payments", func(*corev1.Service) {}},
		{"the waypoint's own Service", "wp", func(*corev1.Service) {}},
		{"opts out of the namespace's waypoint", "reviews", func(s *corev1.Service) { s.Labels[meshv1.LabelUseWaypoint] = meshv1.UseWaypointNone }},
		{"named target port no pod has", "reviews", func(s *corev1.Service) { s.Spec.Ports[0].TargetPort.StrVal = "web" }},
		{"port protocol from the name, not appProtocol", "reviews", func(s *corev1.Service) {
			s.Spec.Ports[1].AppProtocol, s.Spec.Ports[1].Name = nil, "grpc-api"
		}},
		{"port without a name", "reviews", func(s *corev1.Service) {
			s.Spec.Ports = s.Spec.Ports[:1]
			s.Spec.Ports[0].Name = ""
		}},
		{"selector changed", "reviews", func(s *corev1.Service) { s.Spec.Selector = map[string]string{"app": "ratings"} }},
		{"no cluster IP yet", "reviews", func(s *corev1.Service) { s.Spec.ClusterIP, s.Spec.ClusterIPs = "", nil }},
		// The API server clears the cluster IPs of an ExternalName Service; translation
		// checks the type all the same.
		{"ExternalName with cluster IPs", "reviews", func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeExternalName }},
	}
	cluster := loadCluster(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			full := cluster.deepCopy()
			tc.change(full.service(t, "shop", tc.service))
			got := full.transformed(t)
			compareViews(t, full, got)
			assertOnlyKept(t, got.service(t, "shop", tc.service), full.service(t, "shop", tc.service), keptServicePaths)
		})
	}
}

// TestTransformNamespace: as TestTransformPod, for variants of realistic Namespaces.
func TestTransformNamespace(t *testing.T) {
	cases := []struct {
		name, namespace string
		change          func(*corev1.Namespace)
	}{
		{"enrolled, using a waypoint", "shop", func(*corev1.Namespace) {}},
		{"using a waypoint of another namespace", "frontend", func(*corev1.Namespace) {}},
		{"not allowed by the waypoint", "frontend", func(ns *corev1.Namespace) { delete(ns.Labels, "mesh-access") }},
		{"not enrolled", "shop", func(ns *corev1.Namespace) { delete(ns.Labels, meshv1.LabelDataplaneMode) }},
		{"no waypoint", "shop", func(ns *corev1.Namespace) { delete(ns.Labels, meshv1.LabelUseWaypoint) }},
		{"terminating", "shop", func(ns *corev1.Namespace) {
			ns.DeletionTimestamp, ns.Status.Phase = ptr.To(metav1.NewTime(time.Unix(1764500000, 0))), corev1.NamespaceTerminating
		}},
		{"the root namespace", "ambient-system", func(*corev1.Namespace) {}},
	}
	cluster := loadCluster(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			full := cluster.deepCopy()
			tc.change(full.namespace(t, tc.namespace))
			got := full.transformed(t)
			compareViews(t, full, got)
			assertOnlyKept(t, got.namespace(t, tc.namespace), full.namespace(t, tc.namespace), keptNamespacePaths)
		})
	}
}

// TestTransformNode: the control plane reads Nodes by name only (which connected
// ztunnels lag behind a trust bundle), and that is all a transformed Node keeps.
func TestTransformNode(t *testing.T) {
	full := &corev1.Node{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Node"},
		ObjectMeta: metav1.ObjectMeta{
			Name: "node-a", UID: "4c1d", ResourceVersion: "90211",
			Labels:        map[string]string{"kubernetes.io/hostname": "node-a", "topology.kubernetes.io/zone": "zone-1"},
			Annotations:   map[string]string{"node.alpha.kubernetes.io/ttl": "0", "volumes.kubernetes.io/controller-managed-attach-detach": "true"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubelet", Operation: metav1.ManagedFieldsOperationUpdate, Subresource: "status"}},
		},
		Spec: corev1.NodeSpec{PodCIDR: "10.1.0.0/24", PodCIDRs: []string{"10.1.0.0/24"}, ProviderID: "example://node-a"},
		Status: corev1.NodeStatus{
			Addresses:  []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.168.10.11"}},
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady"}},
			Images:     []corev1.ContainerImage{{Names: []string{"registry.example/shop/reviews:1.4.2"}, SizeBytes: 81234567}},
			NodeInfo:   corev1.NodeSystemInfo{KubeletVersion: "v1.35.4", OSImage: "Debian GNU/Linux 13"},
		},
	}
	out, err := TransformNode(full.DeepCopy())
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*corev1.Node)
	if got.Name != full.Name {
		t.Errorf("transformed Node is named %q, want %q", got.Name, full.Name)
	}
	assertOnlyKept(t, got, full, keptNodePaths)
}

// TestTransformsPassOtherObjects: a transform hands anything but its own kind back
// unchanged (a tombstone, another kind), and a transformed object again unchanged.
func TestTransformsPassOtherObjects(t *testing.T) {
	cluster := loadCluster(t)
	transforms := map[string]toolscache.TransformFunc{
		"pod": TransformPod, "service": TransformService, "namespace": TransformNamespace, "node": TransformNode,
	}
	others := []any{
		toolscache.DeletedFinalStateUnknown{Key: "shop/reviews", Obj: &cluster.Pods[0]},
		&meshv1.Waypoint{ObjectMeta: metav1.ObjectMeta{Name: "wp", Namespace: "shop"}},
		&metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: "x", Annotations: map[string]string{"a": "b"}}},
	}
	for name, transform := range transforms {
		for _, in := range others {
			out, err := transform(in)
			if err != nil {
				t.Fatalf("%s transform: %v", name, err)
			}
			if !equality.Semantic.DeepEqual(out, in) {
				t.Errorf("%s transform changed a %T:\n%s", name, in, diff.Diff(in, out))
			}
		}
	}
	once := cluster.transformed(t)
	twice := once.transformed(t)
	if !equality.Semantic.DeepEqual(once, twice) {
		t.Errorf("transforming transformed objects changed them:\n%s", diff.Diff(once, twice))
	}
}

// cluster is the cache's content: the kinds the transforms apply to, and the others
// translation reads.
type cluster struct {
	waypoint.State
}

func loadCluster(t testing.TB) cluster {
	t.Helper()
	f, err := os.Open("testdata/transform.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	objs, err := meshscheme.DecodeObjects(f)
	if err != nil {
		t.Fatal(err)
	}
	st, err := waypoint.StateOf(objs)
	if err != nil {
		t.Fatalf("testdata/transform.yaml: %v", err)
	}
	return cluster{st}
}

func (c cluster) deepCopy() cluster {
	var out cluster
	for i := range c.Namespaces {
		out.Namespaces = append(out.Namespaces, *c.Namespaces[i].DeepCopy())
	}
	for i := range c.Pods {
		out.Pods = append(out.Pods, *c.Pods[i].DeepCopy())
	}
	for i := range c.Services {
		out.Services = append(out.Services, *c.Services[i].DeepCopy())
	}
	for i := range c.Policies {
		out.Policies = append(out.Policies, *c.Policies[i].DeepCopy())
	}
	for i := range c.Waypoints {
		out.Waypoints = append(out.Waypoints, *c.Waypoints[i].DeepCopy())
	}
	for i := range c.HTTPRoutes {
		out.HTTPRoutes = append(out.HTTPRoutes, *c.HTTPRoutes[i].DeepCopy())
	}
	return out
}

// client is an in-memory client over c, which the reconcilers read as their cache.
func (c cluster) client(t *testing.T) client.Client {
	t.Helper()
	out, err := NewInMemoryClient(slices.Concat(ObjectsOf(c.Namespaces), ObjectsOf(c.Pods), ObjectsOf(c.Services),
		ObjectsOf(c.Policies), ObjectsOf(c.Waypoints), ObjectsOf(c.HTTPRoutes))...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// transformed is what the cache holds of c: Pods, Services and Namespaces through the
// transforms CacheByObject sets for their kinds, the other kinds whole.
func (c cluster) transformed(t *testing.T) cluster {
	t.Helper()
	out := c.deepCopy()
	for i := range out.Pods {
		out.Pods[i] = *cacheTransform(t, &out.Pods[i]).(*corev1.Pod)
	}
	for i := range out.Services {
		out.Services[i] = *cacheTransform(t, &out.Services[i]).(*corev1.Service)
	}
	for i := range out.Namespaces {
		out.Namespaces[i] = *cacheTransform(t, &out.Namespaces[i]).(*corev1.Namespace)
	}
	return out
}

// cacheTransform runs the transform CacheByObject sets for obj's kind.
func cacheTransform(t *testing.T, obj client.Object) any {
	t.Helper()
	for kind, opts := range CacheByObject() {
		if reflect.TypeOf(kind) == reflect.TypeOf(obj) {
			out, err := opts.Transform(obj)
			if err != nil {
				t.Fatal(err)
			}
			return out
		}
	}
	t.Fatalf("CacheByObject sets no transform for %T", obj)
	return nil
}

func (c cluster) pod(t testing.TB, namespace, name string) *corev1.Pod {
	t.Helper()
	for i := range c.Pods {
		if c.Pods[i].Namespace == namespace && c.Pods[i].Name == name {
			return &c.Pods[i]
		}
	}
	t.Fatalf("no pod %s/%s in testdata/transform.yaml", namespace, name)
	return nil
}

func (c cluster) service(t *testing.T, namespace, name string) *corev1.Service {
	t.Helper()
	for i := range c.Services {
		if c.Services[i].Namespace == namespace && c.Services[i].Name == name {
			return &c.Services[i]
		}
	}
	t.Fatalf("no Service %s/%s in testdata/transform.yaml", namespace, name)
	return nil
}

func (c cluster) namespace(t *testing.T, name string) *corev1.Namespace {
	t.Helper()
	for i := range c.Namespaces {
		if c.Namespaces[i].Name == name {
			return &c.Namespaces[i]
		}
	}
	t.Fatalf("no Namespace %s in testdata/transform.yaml", name)
	return nil
}

func setReady(p *corev1.Pod, status corev1.ConditionStatus) {
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == corev1.PodReady {
			p.Status.Conditions[i].Status = status
		}
	}
}

// compareViews fails the test when the control plane's view of got differs from its
// view of want.
func compareViews(t *testing.T, want, got cluster) {
	t.Helper()
	w, g := view(t, want), view(t, got)
	if w != g {
		t.Errorf("the control plane's view of the transformed objects differs from its view of the full objects:\n%s", lineDiff(w, g))
	}
}

// view renders, as JSON, everything the control plane derives from a cluster with the
// functions its reconcilers, status writers and CA call.
func view(t *testing.T, c cluster) string {
	t.Helper()
	cached := c.client(t)
	res, err := Translate(context.Background(), cached, transformMesh, nil)
	if err != nil {
		t.Fatal(err)
	}
	lookup := NewTargetLookup(cached, transformMesh, nil)
	out := map[string]any{
		"workloads":      protoValues(t, res.Workloads),
		"services":       protoValues(t, res.Services),
		"authorizations": protoValues(t, res.Authorizations),
	}
	namespaces := map[string]*corev1.Namespace{}
	for i := range c.Namespaces {
		namespaces[c.Namespaces[i].Name] = &c.Namespaces[i]
	}
	policies := map[string]any{}
	for i := range c.Policies {
		p := &c.Policies[i]
		var selected []string
		for _, pod := range translate.SelectedWorkloads(transformMesh, p, c.Pods, namespaces) {
			selected = append(selected, pod.Namespace+"/"+pod.Name+"@"+pod.Spec.NodeName)
		}
		policies[p.Namespace+"/"+p.Name] = map[string]any{"targets": translate.TargetStates(p, lookup), "selected": selected}
	}
	out["policies"] = policies
	waypoints := map[string]any{}
	for i := range c.Waypoints {
		wp := &c.Waypoints[i]
		built, err := waypoint.Build(transformMesh, wp, &c.State)
		if err != nil {
			t.Fatalf("waypoint %s: %v", wp.Name, err)
		}
		resources := map[string]any{}
		for typeURL, byName := range built.ByType() {
			resources[typeURL] = protoValues(t, byName)
		}
		var served []string
		for _, svc := range waypoint.ServedServices(wp, &c.State) {
			served = append(served, svc.Namespace+"/"+svc.Name)
		}
		for _, pod := range waypoint.ServedPods(wp, &c.State) {
			served = append(served, pod.Namespace+"/"+pod.Name)
		}
		waypoints[wp.Namespace+"/"+wp.Name] = map[string]any{"resources": resources, "served": served}
	}
	out["waypoints"] = waypoints
	routes := map[string]any{}
	for i := range c.HTTPRoutes {
		r := &c.HTTPRoutes[i]
		routes[r.Namespace+"/"+r.Name] = waypoint.HTTPRouteParentStatuses(r, &c.State, metav1.NewTime(time.Unix(0, 0)))
	}
	out["routeStatus"] = routes
	// What the rest of the control plane reads of pods directly: the CA (node, service
	// account and phase of the pods on a node; the node of a token's pod by name and
	// uid), the field indexes (node, waypoint labels) and the MeshPolicy status
	// predicate (node, phase, labels).
	pods := map[string]any{}
	for i := range c.Pods {
		p := &c.Pods[i]
		pods[p.Namespace+"/"+p.Name] = map[string]any{
			"uid": p.UID, "node": p.Spec.NodeName, "serviceAccount": p.Spec.ServiceAccountName, "phase": p.Status.Phase,
			"labels": p.Labels, "crossNamespaceWaypoint": crossNamespaceWaypoint(p),
			"enrolled": translate.IsEnrolled(p, namespaces[p.Namespace]), "telemetry": translate.PodTelemetry(p),
		}
	}
	out["pods"] = pods
	services := map[string]any{}
	for i := range c.Services {
		s := &c.Services[i]
		services[s.Namespace+"/"+s.Name] = map[string]any{"labels": s.Labels, "crossNamespaceWaypoint": crossNamespaceWaypoint(s)}
	}
	out["serviceIndexes"] = services
	raw, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

func protoValues[M proto.Message](t *testing.T, in map[string]M) map[string]any {
	t.Helper()
	out := map[string]any{}
	for name, m := range in {
		raw, err := protojson.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			t.Fatal(err)
		}
		out[name] = v
	}
	return out
}

// assertOnlyKept fails the test when got holds a field outside kept, or when full (the
// object before the transform) had nothing to drop, which would make the check moot.
func assertOnlyKept(t *testing.T, got, full any, kept []string) {
	t.Helper()
	gotPaths, fullPaths := fieldPaths(t, got), fieldPaths(t, full)
	for _, p := range gotPaths {
		if !slices.Contains(kept, p) {
			t.Errorf("the transformed object keeps %s", p)
		}
	}
	dropped := 0
	for _, p := range fullPaths {
		if !slices.Contains(gotPaths, p) {
			dropped++
		}
	}
	if dropped == 0 {
		t.Errorf("nothing was dropped: the test object has only kept fields (%v)", fullPaths)
	}
}

// fieldPaths lists the set fields of an object as JSON paths: list items as [], map keys
// of labels and selectors as *, leaving out zero values (encoding/json writes those of
// fields without omitempty, and of structs, as "", 0, false, null or {}).
func fieldPaths(t *testing.T, obj any) []string {
	t.Helper()
	raw, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	set := map[string]bool{}
	var walk func(path string, v any)
	walk = func(path string, v any) {
		if v == nil || v == "" || v == 0.0 || v == false {
			return
		}
		switch x := v.(type) {
		case map[string]any:
			for k, child := range x {
				if strings.HasSuffix(path, ".labels") || strings.HasSuffix(path, ".annotations") || strings.HasSuffix(path, ".selector") {
					k = "*"
				}
				walk(strings.TrimPrefix(path+"."+k, "."), child)
			}
		case []any:
			for _, child := range x {
				walk(path+"[]", child)
			}
		default:
			set[path] = true
		}
	}
	walk("", v)
	out := make([]string, 0, len(set))
	for p := range set {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// lineDiff shows the lines of b that differ from a's, with their neighbours.
func lineDiff(a, b string) string {
	return diff.Diff(strings.Split(a, "\n"), strings.Split(b, "\n"))
}

// BenchmarkCachedPodBytes reports the heap a cached pod takes (heap-B/pod), as the
// informer decodes it from protobuf, whole and through TransformPod: the pod of a running
// Deployment in testdata/transform.yaml, and the pod of test/controlplane/bench there (one
// container, Pending without status).
func BenchmarkCachedPodBytes(b *testing.B) {
	c := loadCluster(b)
	pods := map[string]*corev1.Pod{
		"deployment": c.pod(b, "shop", "reviews-v1-5b7d6c8f9d-8kq4t"),
		"bench":      c.pod(b, "bench", "app-00001"),
	}
	for name, pod := range pods {
		raw, err := pod.Marshal()
		if err != nil {
			b.Fatal(err)
		}
		for _, transform := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/transformed=%v", name, transform), func(b *testing.B) {
				const n = 1000
				cached := make([]any, n)
				before := liveHeap()
				for range b.N {
					for i := range cached {
						var obj any = &corev1.Pod{}
						if err := obj.(*corev1.Pod).Unmarshal(raw); err != nil {
							b.Fatal(err)
						}
						if transform {
							obj, _ = TransformPod(obj)
						}
						cached[i] = obj
					}
				}
				b.ReportMetric(float64(liveHeap()-before)/n, "heap-B/pod")
				runtime.KeepAlive(cached)
			})
		}
	}
}

// liveHeap is the heap in use after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

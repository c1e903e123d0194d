package translate_test

// The golden tests translate with the code the control plane runs: the objects go into an
// in-memory client with the cache's indexes, and the discovery reconcilers read them from
// it (discovery.Translate). An external test package, since discovery imports translate.

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controlplane/discovery"
	"github.com/ambientmesh/ambient-operator/controlplane/xds/translate"
	"github.com/ambientmesh/ambient-operator/internal/meshscheme"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/ from the current output")

var testMesh = translate.TestMesh

// gatewayAPI: the Gateway CRD is installed, so the cases' Gateways of the waypoint class
// are waypoints.
var gatewayAPI = map[string]bool{"Gateway": true}

// TestGolden translates each testdata/<case>.yaml (cluster objects) and compares the
// workload API resources and MeshPolicy statuses with testdata/<case>.golden.yaml.
func TestGolden(t *testing.T) {
	inputs, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ran := 0
	for _, in := range inputs {
		if strings.HasSuffix(in, ".golden.yaml") {
			continue
		}
		ran++
		name := strings.TrimSuffix(filepath.Base(in), ".yaml")
		t.Run(name, func(t *testing.T) {
			compareGolden(t, filepath.Join("testdata", name+".golden.yaml"), render(t, loadCluster(t, in)))
		})
	}
	if ran == 0 {
		t.Fatal("no golden cases under testdata/")
	}
}

func compareGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run `go test ./controlplane/xds/translate -update` to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s (rerun with -update if the change is intended):\n--- got\n%s", path, got)
	}
}

// render is the golden form: resources as protojson (field names as in the .proto),
// keyed by xDS resource name, plus each policy's status reasons, its targets resolved as
// the status writer resolves them (discovery.NewTargetLookup).
func render(t *testing.T, c client.Client) []byte {
	t.Helper()
	res := translateAll(t, c)
	doc := map[string]any{
		"workloads":      protoMap(t, res.Workloads),
		"services":       protoMap(t, res.Services),
		"authorizations": protoMap(t, res.Authorizations),
	}
	lookup := discovery.NewTargetLookup(c, testMesh, gatewayAPI)
	var policies meshv1.MeshPolicyList
	list(t, c, &policies)
	statuses := map[string]any{}
	for i := range policies.Items {
		p := &policies.Items[i]
		targets := translate.TargetStates(p, lookup)
		s := translate.PolicyStatus(p, targets, enforcedEverywhere(t, c, p, targets, lookup), metav1.NewTime(time.Unix(0, 0)))
		conds := []string{}
		for _, c := range s.Conditions {
			conds = append(conds, c.Type+"="+string(c.Status)+"/"+c.Reason+": "+c.Message)
		}
		statuses[p.Namespace+"/"+p.Name] = map[string]any{"enforcedBy": s.EnforcedBy, "conditions": conds}
	}
	doc["policyStatus"] = statuses
	out, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func translateAll(t *testing.T, c client.Client) discovery.Resources {
	t.Helper()
	res, err := discovery.Translate(context.Background(), c, testMesh, gatewayAPI)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func list(t *testing.T, c client.Client, l client.ObjectList) {
	t.Helper()
	if err := c.List(context.Background(), l); err != nil {
		t.Fatal(err)
	}
}

// enforcedEverywhere is the Enforcement of a cluster whose proxies are Ready and hold
// everything, so the golden statuses show what translation alone decides (the table
// tests in status_test.go cover proxies that lag).
func enforcedEverywhere(t *testing.T, c client.Client, p *meshv1.MeshPolicy, targets []translate.TargetState, lookup translate.TargetLookup) translate.Enforcement {
	synced := translate.ProxySync{Connected: 1, Synced: true}
	var enf translate.Enforcement
	seen := map[string]bool{}
	for _, t := range targets {
		if t.Waypoint.Name != "" && !seen[t.Waypoint.String()] {
			seen[t.Waypoint.String()] = true
			enf.Waypoints = append(enf.Waypoints, translate.WaypointEnforcement{Waypoint: t.Waypoint, Sent: true, Proxies: synced,
				Kind:  translate.WaypointKind(lookup.Waypoint(t.Waypoint.Namespace, t.Waypoint.Name)),
				Ready: &metav1.Condition{Type: meshv1.WaypointConditionReady, Status: metav1.ConditionTrue}})
		}
	}
	var pods corev1.PodList
	var nsList corev1.NamespaceList
	list(t, c, &pods)
	list(t, c, &nsList)
	namespaces := map[string]*corev1.Namespace{}
	for i := range nsList.Items {
		namespaces[nsList.Items[i].Name] = &nsList.Items[i]
	}
	selected := translate.SelectedWorkloads(testMesh, p, pods.Items, namespaces)
	enf.Workloads = len(selected)
	for _, pod := range selected {
		if !seen["node/"+pod.Spec.NodeName] {
			seen["node/"+pod.Spec.NodeName] = true
			enf.Nodes = append(enf.Nodes, translate.NodeEnforcement{Node: pod.Spec.NodeName, Sent: true, Proxies: synced})
		}
	}
	return enf
}

func protoMap[M proto.Message](t *testing.T, in map[string]M) map[string]any {
	t.Helper()
	out := map[string]any{}
	for name, m := range in {
		out[name] = protoValue(t, m)
	}
	return out
}

func protoValue(t *testing.T, m proto.Message) any {
	t.Helper()
	raw, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// loadCluster decodes a multi-document YAML file of cluster objects into an in-memory
// client; pods without a uid get one, as the API server gives it.
func loadCluster(t *testing.T, path string) client.Client {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	objs, err := meshscheme.DecodeObjects(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	for _, o := range objs {
		if _, isPod := o.(*corev1.Pod); isPod && o.GetUID() == "" {
			o.SetUID(types.UID("uid-" + o.GetNamespace() + "-" + o.GetName()))
		}
	}
	c, err := discovery.NewInMemoryClient(objs...)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c
}

// TestGoldenEnrollmentMoves relabels pods in and out of the mesh and checks, against a
// golden file, exactly which resources change: only the moved pods' Workloads.
func TestGoldenEnrollmentMoves(t *testing.T) {
	c := loadCluster(t, "testdata/enrollment.yaml")
	pod := func(ns, name string) client.Object {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	}
	steps := []struct {
		name   string
		obj    client.Object
		change func(labels map[string]string)
	}{
		{"opt web-2 out with the pod label", pod("shop", "web-2"), func(l map[string]string) {
			l[meshv1.LabelDataplaneMode] = meshv1.DataplaneModeNone
		}},
		{"opt batch-1 in with the pod label", pod("batch", "batch-1"), func(l map[string]string) {
			l[meshv1.LabelDataplaneMode] = meshv1.DataplaneModeAmbient
		}},
		{"unlabel the shop namespace", &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, func(l map[string]string) {
			delete(l, meshv1.LabelDataplaneMode)
		}},
		{"relabel web-1 so the Service no longer selects it", pod("shop", "web-1"), func(l map[string]string) { l["app"] = "other" }},
	}
	var out bytes.Buffer
	prev := translateAll(t, c)
	for _, step := range steps {
		relabel(t, c, step.obj, step.change)
		next := translateAll(t, c)
		out.WriteString("# " + step.name + "\n")
		body, err := yaml.Marshal(map[string]any{"changed": diffNames(prev, next)})
		if err != nil {
			t.Fatal(err)
		}
		out.Write(body)
		prev = next
	}
	compareGolden(t, "testdata/enrollment.moves.golden.txt", out.Bytes())
}

// relabel changes the labels of obj (named by its key) in c.
func relabel(t *testing.T, c client.Client, obj client.Object, change func(map[string]string)) {
	t.Helper()
	ctx := context.Background()
	if err := c.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
		t.Fatal(err)
	}
	labels := obj.GetLabels()
	if labels == nil {
		labels = map[string]string{}
	}
	change(labels)
	obj.SetLabels(labels)
	if err := c.Update(ctx, obj); err != nil {
		t.Fatal(err)
	}
}

func diffNames(a, b discovery.Resources) map[string][]string {
	out := map[string][]string{}
	add := func(kind string, names []string) {
		if len(names) > 0 {
			out[kind] = names
		}
	}
	add("workloads", changed(a.Workloads, b.Workloads))
	add("services", changed(a.Services, b.Services))
	add("authorizations", changed(a.Authorizations, b.Authorizations))
	return out
}

func changed[M proto.Message](a, b map[string]M) []string {
	var out []string
	for name, m := range b {
		if old, ok := a[name]; !ok || !proto.Equal(old, m) {
			out = append(out, name)
		}
	}
	for name := range a {
		if _, ok := b[name]; !ok {
			out = append(out, name+" (removed)")
		}
	}
	sort.Strings(out)
	return out
}

package translate

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"io"
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
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/internal/meshscheme"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/ from the current output")

var testMesh = Mesh{TrustDomain: "cluster.local", RootNamespace: "ambient-system", ClusterDomain: "cluster.local", ClusterID: DefaultClusterID}

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
			st := loadState(t, in)
			compareGolden(t, filepath.Join("testdata", name+".golden.yaml"), render(t, st))
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
// keyed by xDS resource name, plus each policy's status reasons.
func render(t *testing.T, st State) []byte {
	t.Helper()
	res := Snapshot(testMesh, st)
	doc := map[string]any{
		"workloads":      protoMap(t, res.Workloads),
		"services":       protoMap(t, res.Services),
		"authorizations": protoMap(t, res.Authorizations),
	}
	statuses := map[string]any{}
	for i := range st.Policies {
		p := &st.Policies[i]
		targets := TargetStates(p, st)
		s := PolicyStatus(p, targets, enforcedEverywhere(p, targets, st), metav1.NewTime(time.Unix(0, 0)))
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

// enforcedEverywhere is the Enforcement of a cluster whose proxies are Ready and hold
// everything, so the golden statuses show what translation alone decides (the table
// tests in status_test.go cover proxies that lag).
func enforcedEverywhere(p *meshv1.MeshPolicy, targets []TargetState, st State) Enforcement {
	synced := ProxySync{Connected: 1, Synced: true}
	var enf Enforcement
	seen := map[string]bool{}
	for _, t := range targets {
		if t.Waypoint.Name != "" && !seen[t.Waypoint.String()] {
			seen[t.Waypoint.String()] = true
			enf.Waypoints = append(enf.Waypoints, WaypointEnforcement{Waypoint: t.Waypoint, Sent: true, Proxies: synced,
				Kind:  WaypointKind(st.Waypoint(t.Waypoint.Namespace, t.Waypoint.Name)),
				Ready: &metav1.Condition{Type: meshv1.WaypointConditionReady, Status: metav1.ConditionTrue}})
		}
	}
	namespaces := map[string]*corev1.Namespace{}
	for i := range st.Namespaces {
		namespaces[st.Namespaces[i].Name] = &st.Namespaces[i]
	}
	pods := SelectedWorkloads(testMesh, p, st.Pods, namespaces)
	enf.Workloads = len(pods)
	for _, pod := range pods {
		if !seen["node/"+pod.Spec.NodeName] {
			seen["node/"+pod.Spec.NodeName] = true
			enf.Nodes = append(enf.Nodes, NodeEnforcement{Node: pod.Spec.NodeName, Sent: true, Proxies: synced})
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

// loadState decodes a multi-document YAML file of cluster objects.
func loadState(t *testing.T, path string) State {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	decoder := serializer.NewCodecFactory(meshscheme.New()).UniversalDeserializer()
	reader := utilyaml.NewYAMLReader(bufio.NewReader(f))
	var st State
	var gateways []gatewayv1.Gateway
	for {
		doc, err := reader.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		obj, _, err := decoder.Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if gw, ok := obj.(*gatewayv1.Gateway); ok {
			gateways = append(gateways, *gw)
			continue
		}
		addObject(t, &st, obj)
	}
	// Gateways become waypoints as the control plane reads them.
	st.Waypoints = MergeWaypoints(st.Waypoints, gateways)
	return st
}

func addObject(t *testing.T, st *State, obj runtime.Object) {
	t.Helper()
	switch o := obj.(type) {
	case *corev1.Namespace:
		st.Namespaces = append(st.Namespaces, *o)
	case *corev1.Pod:
		if o.UID == "" {
			o.UID = types.UID("uid-" + o.Namespace + "-" + o.Name)
		}
		st.Pods = append(st.Pods, *o)
	case *corev1.Service:
		st.Services = append(st.Services, *o)
	case *meshv1.MeshPolicy:
		st.Policies = append(st.Policies, *o)
	case *meshv1.Waypoint:
		st.Waypoints = append(st.Waypoints, *o)
	default:
		t.Fatalf("unexpected object %T", obj)
	}
}

// TestGoldenEnrollmentMoves relabels pods in and out of the mesh and checks, against a
// golden file, exactly which resources change: only the moved pods' Workloads.
func TestGoldenEnrollmentMoves(t *testing.T) {
	base := loadState(t, "testdata/enrollment.yaml")
	steps := []struct {
		name   string
		mutate func(*State)
	}{
		{"opt web-2 out with the pod label", func(st *State) {
			podByName(t, st, "shop", "web-2").Labels[meshv1.LabelDataplaneMode] = meshv1.DataplaneModeNone
		}},
		{"opt batch-1 in with the pod label", func(st *State) {
			podByName(t, st, "batch", "batch-1").Labels[meshv1.LabelDataplaneMode] = meshv1.DataplaneModeAmbient
		}},
		{"unlabel the shop namespace", func(st *State) { delete(nsByName(t, st, "shop").Labels, meshv1.LabelDataplaneMode) }},
		{"relabel web-1 so the Service no longer selects it", func(st *State) { podByName(t, st, "shop", "web-1").Labels["app"] = "other" }},
	}
	var out bytes.Buffer
	prev := Snapshot(testMesh, base)
	cur := base
	for _, step := range steps {
		cur = deepCopyState(cur)
		step.mutate(&cur)
		next := Snapshot(testMesh, cur)
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

func diffNames(a, b Resources) map[string][]string {
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

func deepCopyState(st State) State {
	var out State
	for i := range st.Namespaces {
		out.Namespaces = append(out.Namespaces, *st.Namespaces[i].DeepCopy())
	}
	for i := range st.Pods {
		out.Pods = append(out.Pods, *st.Pods[i].DeepCopy())
	}
	for i := range st.Services {
		out.Services = append(out.Services, *st.Services[i].DeepCopy())
	}
	for i := range st.Policies {
		out.Policies = append(out.Policies, *st.Policies[i].DeepCopy())
	}
	for i := range st.Waypoints {
		out.Waypoints = append(out.Waypoints, *st.Waypoints[i].DeepCopy())
	}
	return out
}

func podByName(t *testing.T, st *State, ns, name string) *corev1.Pod {
	for i := range st.Pods {
		if st.Pods[i].Namespace == ns && st.Pods[i].Name == name {
			if st.Pods[i].Labels == nil {
				st.Pods[i].Labels = map[string]string{}
			}
			return &st.Pods[i]
		}
	}
	t.Fatalf("no pod %s/%s", ns, name)
	return nil
}

func nsByName(t *testing.T, st *State, name string) *corev1.Namespace {
	if ns := st.Namespace(name); ns != nil {
		return ns
	}
	t.Fatalf("no namespace %s", name)
	return nil
}

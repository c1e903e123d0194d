package waypoint

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambientmesh/ambient-operator/controlplane/xds/translate"
	"github.com/ambientmesh/ambient-operator/internal/meshscheme"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/ from the current output")

var testMesh = Mesh{TrustDomain: "cluster.local", RootNamespace: "ambient-system", ClusterDomain: "cluster.local", ClusterID: translate.DefaultClusterID}

// TestGolden builds, for every testdata/<case>.yaml (cluster objects), the resources of
// each Waypoint in it and the status of each route, and compares them with
// testdata/<case>.golden.json. Every resource must pass ValidateAll (Build checks it).
func TestGolden(t *testing.T) {
	inputs, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(inputs) == 0 {
		t.Fatal("no golden cases under testdata/")
	}
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".yaml")
		t.Run(name, func(t *testing.T) {
			st := loadState(t, in)
			compareGolden(t, filepath.Join("testdata", name+".golden.json"), render(t, &st))
		})
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
		t.Fatalf("%v (run `go test ./controlplane/xds/waypoint -update` to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s (rerun with -update if the change is intended):\n--- got\n%s", path, got)
	}
}

// render is the golden form: per waypoint, its resources by type and name as protojson
// (field names as in the .proto); per route, its parent statuses.
func render(t *testing.T, st *State) []byte {
	t.Helper()
	doc := map[string]any{}
	waypoints := map[string]any{}
	for i := range st.Waypoints {
		wp := &st.Waypoints[i]
		res, err := Build(testMesh, wp, st)
		if err != nil {
			t.Fatalf("Build(%s): %v", wp.Name, err)
		}
		byType := map[string]any{}
		for typeURL, byName := range res.ByType() {
			if len(byName) == 0 {
				continue
			}
			out := map[string]any{}
			for name, m := range byName {
				out[name] = protoValue(t, m)
			}
			byType[shortType(typeURL)] = out
		}
		waypoints[wp.Namespace+"/"+wp.Name] = byType
	}
	doc["waypoints"] = waypoints
	statuses := map[string]any{}
	now := metav1.NewTime(time.Unix(0, 0))
	for i := range st.HTTPRoutes {
		r := &st.HTTPRoutes[i]
		statuses["HTTPRoute "+r.Namespace+"/"+r.Name] = conditionLines(HTTPRouteParentStatuses(r, st, now))
	}
	for i := range st.GRPCRoutes {
		r := &st.GRPCRoutes[i]
		statuses["GRPCRoute "+r.Namespace+"/"+r.Name] = conditionLines(GRPCRouteParentStatuses(r, st, now))
	}
	if len(statuses) > 0 {
		doc["routeStatus"] = statuses
	}
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(out, '\n')
}

func conditionLines(parents []gatewayv1.RouteParentStatus) map[string][]string {
	out := map[string][]string{}
	for _, p := range parents {
		key := string(p.ParentRef.Name)
		if p.ParentRef.Namespace != nil {
			key = string(*p.ParentRef.Namespace) + "/" + key
		}
		if p.ParentRef.Port != nil {
			key += ":" + strconv.Itoa(int(*p.ParentRef.Port))
		}
		for _, c := range p.Conditions {
			out[key] = append(out[key], c.Type+"="+string(c.Status)+"/"+c.Reason+": "+c.Message)
		}
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
func loadState(t testing.TB, path string) State {
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
	st, err := StateOf(objs)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	sort.SliceStable(st.Waypoints, func(i, j int) bool { return st.Waypoints[i].Name < st.Waypoints[j].Name })
	return st
}

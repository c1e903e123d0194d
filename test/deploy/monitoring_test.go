package deploy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	meshmanifests "github.com/ambientmesh/ambient-operator/controllers/ambientmesh/manifests"
	wpmanifests "github.com/ambientmesh/ambient-operator/controllers/waypoint/manifests"
	"github.com/ambientmesh/ambient-operator/internal/meshconfig"
)

// podMonitorSpec is the part of a Prometheus Operator PodMonitor the mesh's
// monitors use.
type podMonitorSpec struct {
	NamespaceSelector struct {
		Any bool `json:"any"`
	} `json:"namespaceSelector"`
	Selector            metav1.LabelSelector `json:"selector"`
	PodMetricsEndpoints []struct {
		Port string `json:"port"`
		Path string `json:"path"`
	} `json:"podMetricsEndpoints"`
}

// meshPodTemplates renders, with the operator's own manifests packages, the pod
// template of every mesh workload, keyed by the workload's name.
func meshPodTemplates(t *testing.T) map[string]corev1.PodTemplateSpec {
	t.Helper()
	mesh := &meshv1alpha1.AmbientMesh{ObjectMeta: metav1.ObjectMeta{Name: meshv1alpha1.MeshName, UID: "mesh-uid"}}
	objs, err := meshmanifests.Render(meshmanifests.Input{Mesh: mesh, Versions: meshmanifests.Uniform("0.1.0")})
	if err != nil {
		t.Fatal(err)
	}
	wpObjs, err := wpmanifests.Render(wpmanifests.Input{
		Proxy: wpmanifests.Proxy{Name: "waypoint", Namespace: "shop", Owner: metav1.OwnerReference{
			APIVersion: "mesh.ambientmesh.dev/v1alpha1", Kind: "Waypoint", Name: "waypoint", UID: "wp-uid"}},
		Mesh: mesh, Version: "0.1.0",
	})
	if err != nil {
		t.Fatal(err)
	}
	templates := map[string]corev1.PodTemplateSpec{}
	for _, o := range append(objs, wpObjs...) {
		switch w := o.(type) {
		case *appsv1.DaemonSet:
			templates[w.Name] = w.Spec.Template
		case *appsv1.Deployment:
			templates[w.Name] = w.Spec.Template
		}
	}
	for _, name := range []string{meshmanifests.ZTunnelName, meshmanifests.CNIName, meshmanifests.ControlPlaneName, "waypoint"} {
		if _, ok := templates[name]; !ok {
			t.Fatalf("the manifests render no workload %s", name)
		}
	}
	return templates
}

// containerPort is the number of the named port of the template's containers; 0 when
// no container has it.
func containerPort(tmpl corev1.PodTemplateSpec, name string) int32 {
	for _, c := range tmpl.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == name {
				return p.ContainerPort
			}
		}
	}
	return 0
}

// config/prometheus's PodMonitors select exactly the pods they are named after, in any
// namespace, by the labels the operator's manifests put on them, and scrape a port
// those pods declare, at the path the component serves its metrics on.
func TestPrometheusComponentSelectsTheMeshPods(t *testing.T) {
	templates := meshPodTemplates(t)
	want := map[string]struct {
		workload string
		port     int32
		path     string
	}{
		"ambientmesh-ztunnel":      {meshmanifests.ZTunnelName, meshv1alpha1.PortMetrics, "/stats/prometheus"},
		"ambientmesh-waypoint":     {"waypoint", wpmanifests.PortMetrics, "/stats/prometheus"},
		"ambientmesh-controlplane": {meshmanifests.ControlPlaneName, meshconfig.ControlPlaneMonitoringPort, "/metrics"},
	}
	monitors := render(t, "config/prometheus")
	if len(monitors) != len(want) {
		t.Fatalf("config/prometheus renders %d objects, want the %d PodMonitors", len(monitors), len(want))
	}
	for _, obj := range monitors {
		t.Run(obj.GetName(), func(t *testing.T) {
			w, ok := want[obj.GetName()]
			if obj.GetKind() != "PodMonitor" || obj.GetAPIVersion() != "monitoring.coreos.com/v1" || !ok {
				t.Fatalf("unexpected %s %s %s", obj.GetAPIVersion(), obj.GetKind(), obj.GetName())
			}
			spec := decodeSpec(t, obj)
			if !spec.NamespaceSelector.Any {
				t.Error("namespaceSelector.any is not true: the mesh's namespace is configurable and waypoints live in the applications' namespaces")
			}
			selector, err := metav1.LabelSelectorAsSelector(&spec.Selector)
			if err != nil || selector.Empty() {
				t.Fatalf("selector %v: %v (empty: %v)", spec.Selector, err, selector.Empty())
			}
			var selected []string
			for name, tmpl := range templates {
				if selector.Matches(labels.Set(tmpl.Labels)) {
					selected = append(selected, name)
				}
			}
			slices.Sort(selected)
			if !slices.Equal(selected, []string{w.workload}) {
				t.Errorf("selector %s selects the pods of %v, want only %s's", selector, selected, w.workload)
			}
			if len(spec.PodMetricsEndpoints) != 1 {
				t.Fatalf("%d podMetricsEndpoints, want 1", len(spec.PodMetricsEndpoints))
			}
			ep := spec.PodMetricsEndpoints[0]
			if got := containerPort(templates[w.workload], ep.Port); got != w.port {
				t.Errorf("port %q is %d in %s's pod template, want the metrics port %d", ep.Port, got, w.workload, w.port)
			}
			if ep.Path != w.path {
				t.Errorf("path %q, want %q", ep.Path, w.path)
			}
		})
	}
}

// Used as documented, from a kustomization that sets the monitoring namespace, the
// component puts its PodMonitors there.
func TestPrometheusComponentComposes(t *testing.T) {
	dir := t.TempDir()
	rel, err := filepath.Rel(dir, filepath.Join(repoRoot(t), "config", "prometheus"))
	if err != nil {
		t.Fatal(err)
	}
	kustomization := "namespace: monitoring\ncomponents:\n- " + rel + "\n"
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(kustomization), 0o644); err != nil {
		t.Fatal(err)
	}
	objs := render(t, dir)
	if len(objs) != 3 {
		t.Fatalf("%d objects, want 3 PodMonitors", len(objs))
	}
	for _, o := range objs {
		if o.GetNamespace() != "monitoring" {
			t.Errorf("%s %s is in namespace %q, want monitoring", o.GetKind(), o.GetName(), o.GetNamespace())
		}
	}
}

func decodeSpec(t *testing.T, obj *unstructured.Unstructured) podMonitorSpec {
	t.Helper()
	raw, err := json.Marshal(obj.Object["spec"])
	if err != nil {
		t.Fatal(err)
	}
	var spec podMonitorSpec
	if err := json.Unmarshal(raw, &spec); err != nil {
		t.Fatalf("spec of %s: %v", obj.GetName(), err)
	}
	return spec
}

package manifests

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
)

// container is the one container of the component's Deployment or DaemonSet.
func container(t *testing.T, objs []client.Object, name string) corev1.Container {
	t.Helper()
	for _, o := range objs {
		if o.GetName() != name {
			continue
		}
		switch w := o.(type) {
		case *appsv1.Deployment:
			return w.Spec.Template.Spec.Containers[0]
		case *appsv1.DaemonSet:
			return w.Spec.Template.Spec.Containers[0]
		}
	}
	t.Fatalf("no Deployment or DaemonSet named %s", name)
	return corev1.Container{}
}

func envValue(c corev1.Container, name string) (string, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value, true
		}
	}
	return "", false
}

func TestRenderedResources(t *testing.T) {
	custom := &corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m"), corev1.ResourceMemory: resource.MustParse("300Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("2Gi")},
	}
	requestsOnly := &corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("200Mi")}}
	components := []struct {
		workload string
		spec     func(*meshv1alpha1.AmbientMesh) *meshv1alpha1.ComponentSpec
		// the defaults: requests and the memory limit; GOMEMLIMIT is 90% of the limit in bytes
		cpu, memory, limit, goMemLimit string
	}{
		{ControlPlaneName, func(m *meshv1alpha1.AmbientMesh) *meshv1alpha1.ComponentSpec {
			return &m.Spec.ControlPlane.ComponentSpec
		},
			"100m", "128Mi", "1Gi", "966367642"},
		{ZTunnelName, func(m *meshv1alpha1.AmbientMesh) *meshv1alpha1.ComponentSpec { return &m.Spec.ZTunnel.ComponentSpec },
			"100m", "128Mi", "1Gi", "966367642"},
		{CNIName, func(m *meshv1alpha1.AmbientMesh) *meshv1alpha1.ComponentSpec { return &m.Spec.CNI.ComponentSpec },
			"50m", "64Mi", "256Mi", "241591911"},
	}
	for _, comp := range components {
		t.Run(comp.workload+"/defaults", func(t *testing.T) {
			c := container(t, render(t, testMesh(), Uniform("0.1.0")), comp.workload)
			want := corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(comp.cpu), corev1.ResourceMemory: resource.MustParse(comp.memory)},
				Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse(comp.limit)},
			}
			if !equalResources(c.Resources, want) {
				t.Errorf("resources %v, want %v", c.Resources, want)
			}
			if _, ok := c.Resources.Limits[corev1.ResourceCPU]; ok {
				t.Errorf("a CPU limit is set: %v", c.Resources.Limits)
			}
			if got, _ := envValue(c, EnvGoMemoryLimit); got != comp.goMemLimit {
				t.Errorf("GOMEMLIMIT = %q, want %s (90%% of %s)", got, comp.goMemLimit, comp.limit)
			}
		})
		t.Run(comp.workload+"/the user's resources replace the defaults", func(t *testing.T) {
			m := testMesh()
			comp.spec(m).Resources = custom
			c := container(t, render(t, m, Uniform("0.1.0")), comp.workload)
			if !equalResources(c.Resources, *custom) {
				t.Errorf("resources %v, want the user's %v", c.Resources, *custom)
			}
			if got, _ := envValue(c, EnvGoMemoryLimit); got != "1932735284" {
				t.Errorf("GOMEMLIMIT = %q, want 1932735284 (90%% of the user's 2Gi)", got)
			}
		})
		t.Run(comp.workload+"/no memory limit, no GOMEMLIMIT", func(t *testing.T) {
			m := testMesh()
			comp.spec(m).Resources = requestsOnly
			c := container(t, render(t, m, Uniform("0.1.0")), comp.workload)
			if len(c.Resources.Limits) != 0 {
				t.Errorf("limits %v, want none (the user set requests only)", c.Resources.Limits)
			}
			if got, ok := envValue(c, EnvGoMemoryLimit); ok {
				t.Errorf("GOMEMLIMIT = %q without a memory limit", got)
			}
		})
	}
}

func equalResources(a, b corev1.ResourceRequirements) bool {
	same := func(x, y corev1.ResourceList) bool {
		if len(x) != len(y) {
			return false
		}
		for name, q := range x {
			if other, ok := y[name]; !ok || q.Cmp(other) != 0 {
				return false
			}
		}
		return true
	}
	return same(a.Requests, b.Requests) && same(a.Limits, b.Limits)
}

func TestGoMemoryLimitEnv(t *testing.T) {
	limit := func(q string) corev1.ResourceRequirements {
		return corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse(q)}}
	}
	for _, tc := range []struct {
		name      string
		resources corev1.ResourceRequirements
		want      string // "" for no variable
	}{
		{"512Mi", limit("512Mi"), "483183821"},
		{"decimal units", limit("1G"), "900000000"},
		{"a fraction of a byte rounds up first", limit("1.5"), "2"},
		{"the largest quantity does not overflow", limit("9223372036854775807"), "8301034833169298227"},
		{"zero", limit("0"), ""},
		{"no limit", corev1.ResourceRequirements{}, ""},
		{"only a CPU limit", corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := GoMemoryLimitEnv(tc.resources)
			switch {
			case tc.want == "" && len(env) != 0:
				t.Errorf("got %v, want no variable", env)
			case tc.want != "" && (len(env) != 1 || env[0].Name != "GOMEMLIMIT" || env[0].Value != tc.want):
				t.Errorf("got %v, want GOMEMLIMIT=%s", env, tc.want)
			}
		})
	}
}

package manifests

import (
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/internal/meshconfig"
)

func testInput() Input {
	mesh := &meshv1alpha1.AmbientMesh{}
	mesh.Name = meshv1alpha1.MeshName
	return Input{
		Proxy: Proxy{Name: "wp", Namespace: "shop", Owner: metav1.OwnerReference{
			APIVersion: "mesh.ambientmesh.dev/v1alpha1", Kind: "Waypoint", Name: "wp", UID: "wp-uid",
			Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
		}},
		Mesh:       mesh,
		Version:    "v0.2.0",
		MeshConfig: "trustDomain: cluster.local\n",
		CARoot:     "-----BEGIN CERTIFICATE-----\n",
	}
}

func render(t *testing.T, in Input) []client.Object {
	t.Helper()
	objs, err := Render(in)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func find[T client.Object](t *testing.T, objs []client.Object) T {
	t.Helper()
	for _, o := range objs {
		if typed, ok := o.(T); ok {
			return typed
		}
	}
	var zero T
	t.Fatalf("no %T rendered", zero)
	return zero
}

func kinds(objs []client.Object) []string {
	var out []string
	for _, o := range objs {
		out = append(out, o.GetObjectKind().GroupVersionKind().Kind+"/"+o.GetNamespace()+"/"+o.GetName())
	}
	return out
}

func TestRenderObjectSet(t *testing.T) {
	tests := []struct {
		name  string
		proxy func(*Proxy)
		want  []string
	}{
		{
			name: "one replica: no disruption budget, no autoscaler",
			want: []string{"ConfigMap/shop/wp", "ServiceAccount/shop/wp", "Deployment/shop/wp", "Service/shop/wp"},
		},
		{
			name:  "two replicas get a disruption budget",
			proxy: func(p *Proxy) { p.Replicas = ptr.To(int32(2)) },
			want:  []string{"ConfigMap/shop/wp", "ServiceAccount/shop/wp", "Deployment/shop/wp", "Service/shop/wp", "PodDisruptionBudget/shop/wp"},
		},
		{
			name:  "autoscaling from one replica gets an autoscaler only",
			proxy: func(p *Proxy) { p.Autoscaling = &meshv1alpha1.WaypointAutoscaling{MaxReplicas: 3} },
			want:  []string{"ConfigMap/shop/wp", "ServiceAccount/shop/wp", "Deployment/shop/wp", "Service/shop/wp", "HorizontalPodAutoscaler/shop/wp"},
		},
		{
			name: "autoscaling from two replicas gets both",
			proxy: func(p *Proxy) {
				p.Autoscaling = &meshv1alpha1.WaypointAutoscaling{MinReplicas: ptr.To(int32(2)), MaxReplicas: 3}
			},
			want: []string{"ConfigMap/shop/wp", "ServiceAccount/shop/wp", "Deployment/shop/wp", "Service/shop/wp",
				"PodDisruptionBudget/shop/wp", "HorizontalPodAutoscaler/shop/wp"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := testInput()
			if tt.proxy != nil {
				tt.proxy(&in.Proxy)
			}
			objs := render(t, in)
			if got := kinds(objs); !slices.Equal(got, tt.want) {
				t.Fatalf("rendered %v, want %v", got, tt.want)
			}
			for _, o := range objs {
				ref := metav1.GetControllerOf(o)
				if ref == nil || ref.UID != "wp-uid" || !ptr.Deref(ref.BlockOwnerDeletion, false) {
					t.Errorf("%s: controller reference %+v, want the Waypoint blocking deletion", o.GetName(), ref)
				}
				if o.GetLabels()[meshv1alpha1.LabelWaypoint] != "wp" || o.GetLabels()["ambientmesh.dev/mesh"] != "default" {
					t.Errorf("%s: labels %v lack the waypoint and mesh labels", o.GetName(), o.GetLabels())
				}
			}
		})
	}
}

func TestRenderRefusesIncompleteInput(t *testing.T) {
	for name, mutate := range map[string]func(*Input){
		"no mesh":    func(in *Input) { in.Mesh = nil },
		"no version": func(in *Input) { in.Version = "" },
		"no owner":   func(in *Input) { in.Proxy.Owner = metav1.OwnerReference{} },
	} {
		in := testInput()
		mutate(&in)
		if _, err := Render(in); err == nil {
			t.Errorf("%s: rendered without error", name)
		}
	}
}

// The command line is the contract with cmd/waypoint.
func TestArgs(t *testing.T) {
	in := testInput()
	in.Mesh.Spec.Waypoint.LogLevel = meshv1alpha1.LogLevelDebug
	want := []string{
		"--mesh-config=/etc/ambientmesh/config/mesh.yaml",
		"--namespace=$(POD_NAMESPACE)",
		"--pod-name=$(POD_NAME)",
		"--name=wp",
		"--service-account=$(SERVICE_ACCOUNT)",
		"--ca-root-file=/var/run/secrets/ambientmesh/ca/root-cert.pem",
		"--token-file=/var/run/secrets/ambientmesh/tokens/ambientmesh-ca-token",
		"--log-level=debug",
	}
	d := find[*appsv1.Deployment](t, render(t, in))
	if got := d.Spec.Template.Spec.Containers[0].Args; !slices.Equal(got, want) {
		t.Errorf("args\n got %q\nwant %q", got, want)
	}
	if got := Args(&meshv1alpha1.AmbientMesh{}, "x"); got[len(got)-1] != "--log-level=info" {
		t.Errorf("default log level: %q", got[len(got)-1])
	}
}

// Every file the args name is mounted from the right source.
func TestDeploymentMountsWhatTheArgsName(t *testing.T) {
	d := find[*appsv1.Deployment](t, render(t, testInput()))
	pod := d.Spec.Template.Spec
	c := pod.Containers[0]
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	mountedFile := func(path string) (corev1.Volume, string) {
		for _, m := range c.VolumeMounts {
			if rest, ok := strings.CutPrefix(path, m.MountPath+"/"); ok {
				if !m.ReadOnly {
					t.Errorf("%s is mounted writable", m.MountPath)
				}
				return volumes[m.Name], rest
			}
		}
		t.Fatalf("nothing mounted at %s", path)
		return corev1.Volume{}, ""
	}

	v, file := mountedFile(MeshConfigFile)
	if v.ConfigMap == nil || v.ConfigMap.Name != "wp" || v.ConfigMap.Items[0].Key != meshconfig.ConfigMapKey || v.ConfigMap.Items[0].Path != file {
		t.Errorf("mesh config volume %+v does not put the ConfigMap's %s at %s", v, meshconfig.ConfigMapKey, MeshConfigFile)
	}
	v, file = mountedFile(CARootFile)
	if v.ConfigMap == nil || v.ConfigMap.Items[0].Key != ConfigMapKeyCARoot || v.ConfigMap.Items[0].Path != file {
		t.Errorf("CA volume %+v does not put the CA bundle at %s", v, CARootFile)
	}
	v, file = mountedFile(TokenFile)
	if v.Projected == nil {
		t.Fatalf("token volume %+v is not projected", v)
	}
	tok := v.Projected.Sources[0].ServiceAccountToken
	if tok == nil || tok.Audience != meshconfig.CAAudience || tok.Path != file {
		t.Errorf("token projection %+v, want audience %s at %s", tok, meshconfig.CAAudience, file)
	}

	cm := find[*corev1.ConfigMap](t, render(t, testInput()))
	if cm.Data[ConfigMapKeyMesh] != testInput().MeshConfig || cm.Data[ConfigMapKeyCARoot] != testInput().CARoot {
		t.Errorf("ConfigMap data %v does not copy the mesh config and the CA", cm.Data)
	}
}

func TestDeploymentPod(t *testing.T) {
	d := find[*appsv1.Deployment](t, render(t, testInput()))
	pod := d.Spec.Template
	c := pod.Spec.Containers[0]
	if c.Image != "ghcr.io/ambientmesh/waypoint:0.2.0" {
		t.Errorf("image %s", c.Image)
	}
	if pod.Labels[meshv1alpha1.LabelDataplaneMode] != meshv1alpha1.DataplaneModeNone {
		t.Error("waypoint pods must opt out of ztunnel capture")
	}
	if pod.Labels[meshv1alpha1.LabelWaypoint] != "wp" || pod.Labels["app.kubernetes.io/version"] != "0.2.0" {
		t.Errorf("pod labels %v", pod.Labels)
	}
	if d.Spec.Selector.MatchLabels[meshv1alpha1.LabelWaypoint] != "wp" || len(d.Spec.Selector.MatchLabels) != 1 {
		t.Errorf("selector %v must be the waypoint label only (never the version)", d.Spec.Selector.MatchLabels)
	}
	if pod.Spec.ServiceAccountName != "wp" || ptr.Deref(pod.Spec.AutomountServiceAccountToken, true) {
		t.Error("the pod runs as the waypoint's service account without an API token")
	}
	var ports []int32
	for _, p := range c.Ports {
		ports = append(ports, p.ContainerPort)
	}
	if !slices.Equal(ports, []int32{15008, 15020, 15021}) {
		t.Errorf("container ports %v, want 15008, 15020, 15021 (admin 15000 is localhost only)", ports)
	}
	probe := c.ReadinessProbe.HTTPGet
	if probe == nil || probe.Path != "/healthz/ready" || probe.Port.IntVal != 15021 {
		t.Errorf("readiness probe %+v", c.ReadinessProbe)
	}
	var env []string
	for _, e := range c.Env {
		if e.ValueFrom != nil {
			env = append(env, e.Name+"="+e.ValueFrom.FieldRef.FieldPath)
		} else {
			env = append(env, e.Name+"="+e.Value)
		}
	}
	if !slices.Equal(env, []string{"POD_NAME=metadata.name", "POD_NAMESPACE=metadata.namespace", "SERVICE_ACCOUNT=spec.serviceAccountName", "GOMEMLIMIT=483183821"}) {
		t.Errorf("env %v", env)
	}
	sc := c.SecurityContext
	if ptr.Deref(sc.Privileged, true) || ptr.Deref(sc.AllowPrivilegeEscalation, true) || !ptr.Deref(sc.ReadOnlyRootFilesystem, false) ||
		!ptr.Deref(sc.RunAsNonRoot, false) || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
		t.Errorf("security context %+v is not unprivileged", sc)
	}
	if *d.Spec.Replicas != 1 {
		t.Errorf("replicas %d, want 1 by default", *d.Spec.Replicas)
	}
}

func TestService(t *testing.T) {
	svc := find[*corev1.Service](t, render(t, testInput()))
	var ports []int32
	for _, p := range svc.Spec.Ports {
		ports = append(ports, p.Port)
	}
	if !slices.Equal(ports, []int32{15008, 15021}) {
		t.Errorf("service ports %v, want 15008 and 15021", ports)
	}
	if svc.Spec.Selector[meshv1alpha1.LabelWaypoint] != "wp" || svc.Labels[meshv1alpha1.LabelWaypoint] != "wp" {
		t.Errorf("the control plane finds the Service by its waypoint label: %v / %v", svc.Labels, svc.Spec.Selector)
	}
}

func TestReplicasAndAutoscaling(t *testing.T) {
	in := testInput()
	in.Proxy.Replicas = ptr.To(int32(3))
	objs := render(t, in)
	if d := find[*appsv1.Deployment](t, objs); *d.Spec.Replicas != 3 {
		t.Errorf("replicas %d, want 3", *d.Spec.Replicas)
	}
	pdb := find[*policyv1.PodDisruptionBudget](t, objs)
	if pdb.Spec.MinAvailable.IntVal != 1 || pdb.Spec.Selector.MatchLabels[meshv1alpha1.LabelWaypoint] != "wp" {
		t.Errorf("PDB %+v", pdb.Spec)
	}

	in = testInput()
	in.Proxy.Autoscaling = &meshv1alpha1.WaypointAutoscaling{MaxReplicas: 5, TargetCPUUtilizationPercentage: ptr.To(int32(60))}
	objs = render(t, in)
	if d := find[*appsv1.Deployment](t, objs); d.Spec.Replicas != nil {
		t.Errorf("with autoscaling the Deployment must leave replicas to the HPA, has %d", *d.Spec.Replicas)
	}
	hpa := find[*autoscalingv2.HorizontalPodAutoscaler](t, objs)
	if hpa.Spec.ScaleTargetRef.Kind != "Deployment" || hpa.Spec.ScaleTargetRef.Name != "wp" ||
		*hpa.Spec.MinReplicas != 1 || hpa.Spec.MaxReplicas != 5 ||
		hpa.Spec.Metrics[0].Resource.Name != corev1.ResourceCPU || *hpa.Spec.Metrics[0].Resource.Target.AverageUtilization != 60 {
		t.Errorf("HPA %+v", hpa.Spec)
	}
}

func TestResources(t *testing.T) {
	resources := func(cpu, memoryLimit string) *corev1.ResourceRequirements {
		r := &corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu)}}
		if memoryLimit != "" {
			r.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse(memoryLimit)}
		}
		return r
	}
	tests := []struct {
		name             string
		own, meshDefault *corev1.ResourceRequirements
		wantCPU          string
		wantMemoryLimit  string // "" for none
		wantGoMemLimit   string // "" for no GOMEMLIMIT
	}{
		{"built-in default", nil, nil, "100m", "512Mi", "483183821"},
		{"mesh default", nil, resources("200m", "1Gi"), "200m", "1Gi", "966367642"},
		{"the waypoint's own wins", resources("300m", "256Mi"), resources("200m", "1Gi"), "300m", "256Mi", "241591911"},
		{"the waypoint's own without a memory limit", resources("300m", ""), resources("200m", "1Gi"), "300m", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := testInput()
			in.Proxy.Resources = tt.own
			in.Mesh.Spec.Waypoint.Resources = tt.meshDefault
			c := find[*appsv1.Deployment](t, render(t, in)).Spec.Template.Spec.Containers[0]
			if got := c.Resources.Requests[corev1.ResourceCPU]; got.String() != tt.wantCPU {
				t.Errorf("cpu request %s, want %s", got.String(), tt.wantCPU)
			}
			gotLimit, hasLimit := c.Resources.Limits[corev1.ResourceMemory]
			switch {
			case tt.wantMemoryLimit == "" && hasLimit:
				t.Errorf("memory limit %s, want none", gotLimit.String())
			case tt.wantMemoryLimit != "" && gotLimit.String() != tt.wantMemoryLimit:
				t.Errorf("memory limit %q, want %s", gotLimit.String(), tt.wantMemoryLimit)
			}
			var goMemLimit []string
			for _, e := range c.Env {
				if e.Name == "GOMEMLIMIT" {
					goMemLimit = append(goMemLimit, e.Value)
				}
			}
			want := []string{tt.wantGoMemLimit}
			if tt.wantGoMemLimit == "" {
				want = nil
			}
			if !slices.Equal(goMemLimit, want) {
				t.Errorf("GOMEMLIMIT %q, want %q (90%% of the memory limit)", goMemLimit, want)
			}
		})
	}
}

func TestImageOverride(t *testing.T) {
	in := testInput()
	in.Mesh.Spec.Waypoint.Image = "registry.example.com/waypoint:dev"
	c := find[*appsv1.Deployment](t, render(t, in)).Spec.Template.Spec.Containers[0]
	if c.Image != "registry.example.com/waypoint:dev" {
		t.Errorf("image %s, want the spec.waypoint.image override", c.Image)
	}
}

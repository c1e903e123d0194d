package manifests

import (
	"slices"
	"strings"
	"testing"
	"time"

	cmv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/internal/meshconfig"
)

func testMesh() *meshv1alpha1.AmbientMesh {
	m := &meshv1alpha1.AmbientMesh{}
	m.Name = meshv1alpha1.MeshName
	m.UID = "uid-1"
	return m
}

func render(t *testing.T, m *meshv1alpha1.AmbientMesh, v Versions) []client.Object {
	t.Helper()
	objs, err := Render(Input{Mesh: m, Versions: v})
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func find[T client.Object](t *testing.T, objs []client.Object, name string) T {
	t.Helper()
	for _, o := range objs {
		if typed, ok := o.(T); ok && o.GetName() == name {
			return typed
		}
	}
	var zero T
	t.Fatalf("no %T named %s", zero, name)
	return zero
}

func TestRenderObjectSet(t *testing.T) {
	objs := render(t, testMesh(), Uniform("0.1.0"))
	var got []string
	for _, o := range objs {
		got = append(got, o.GetObjectKind().GroupVersionKind().Kind+"/"+o.GetNamespace()+"/"+o.GetName())
		if !metav1.IsControlledBy(o, testMesh()) {
			t.Errorf("%s is not controlled by the mesh", o.GetName())
		}
		if o.GetLabels()[LabelManagedBy] != ManagedByValue || o.GetLabels()[LabelMesh] != "default" {
			t.Errorf("%s lacks the tracking labels: %v", o.GetName(), o.GetLabels())
		}
	}
	want := []string{
		"ConfigMap/ambient-system/ambientmesh-config",
		"Issuer/ambient-system/ambientmesh-selfsigned",
		"Certificate/ambient-system/ambientmesh-root-ca",
		"Issuer/ambient-system/ambientmesh-ca",
		"Certificate/ambient-system/ambientmesh-controlplane-tls",
		"ServiceAccount/ambient-system/ambientmesh-controlplane",
		"ServiceAccount/ambient-system/ztunnel",
		"ServiceAccount/ambient-system/ambientmesh-cni",
		"ClusterRole//ambientmesh-controlplane",
		"ClusterRoleBinding//ambientmesh-controlplane",
		"Role/ambient-system/ambientmesh-controlplane",
		"RoleBinding/ambient-system/ambientmesh-controlplane",
		"ClusterRole//ambientmesh-cni",
		"ClusterRoleBinding//ambientmesh-cni",
		"Role/ambient-system/ambientmesh-cni",
		"RoleBinding/ambient-system/ambientmesh-cni",
		"Service/ambient-system/ambientmesh-controlplane",
		"Deployment/ambient-system/ambientmesh-controlplane",
		"PodDisruptionBudget/ambient-system/ambientmesh-controlplane",
		"DaemonSet/ambient-system/ambientmesh-cni",
		"DaemonSet/ambient-system/ztunnel",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("rendered objects:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestRenderExternalIssuerDropsTheChain(t *testing.T) {
	m := testMesh()
	m.Spec.Identity.IssuerRef = &meshv1alpha1.IssuerReference{Name: "corp-ca", Kind: "ClusterIssuer", Group: "cert-manager.io"}
	objs := render(t, m, Uniform("0.1.0"))
	for _, o := range objs {
		if _, ok := o.(*cmv1.Issuer); ok {
			t.Errorf("issuer %s rendered although issuerRef is set", o.GetName())
		}
	}
	cert := find[*cmv1.Certificate](t, objs, ControlPlaneTLSName)
	if cert.Spec.IssuerRef.Name != "corp-ca" || cert.Spec.IssuerRef.Kind != "ClusterIssuer" {
		t.Errorf("control plane certificate issuer = %+v", cert.Spec.IssuerRef)
	}
	cfg, err := meshconfig.Parse([]byte(find[*corev1.ConfigMap](t, objs, meshconfig.ConfigMapName).Data[meshconfig.ConfigMapKey]))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Identity.Issuer != (meshconfig.IssuerRef{Name: "corp-ca", Kind: "ClusterIssuer", Group: "cert-manager.io"}) {
		t.Errorf("mesh config issuer = %+v", cfg.Identity.Issuer)
	}
}

func TestZTunnelDaemonSet(t *testing.T) {
	m := testMesh()
	m.Spec.ZTunnel.DrainPeriod = &metav1.Duration{Duration: 45 * time.Second}
	ds := find[*appsv1.DaemonSet](t, render(t, m, Uniform("0.2.0")), ZTunnelName)
	pod := ds.Spec.Template.Spec
	c := pod.Containers[0]
	if ds.Spec.UpdateStrategy.Type != appsv1.OnDeleteDaemonSetStrategyType {
		t.Errorf("update strategy = %s, want OnDelete (the operator drives nodes)", ds.Spec.UpdateStrategy.Type)
	}
	if got := c.SecurityContext.Capabilities.Add; !slices.Equal(got, []corev1.Capability{"NET_ADMIN", "SYS_ADMIN", "NET_RAW"}) {
		t.Errorf("capabilities = %v", got)
	}
	if *pod.TerminationGracePeriodSeconds != 45 {
		t.Errorf("terminationGracePeriodSeconds = %d, want the drain period 45", *pod.TerminationGracePeriodSeconds)
	}
	if c.ReadinessProbe.HTTPGet.Port.IntValue() != 15021 || c.ReadinessProbe.HTTPGet.Path != ReadinessPath {
		t.Errorf("readiness probe = %+v", c.ReadinessProbe.HTTPGet)
	}
	if a := ds.Spec.Template.Annotations; a["prometheus.io/port"] != "15020" || a["prometheus.io/scrape"] != "true" {
		t.Errorf("prometheus annotations = %v", a)
	}
	if c.Image != "ghcr.io/ambientmesh/ztunnel:0.2.0" || ds.Spec.Template.Labels[LabelVersion] != "0.2.0" {
		t.Errorf("image %s, version label %s", c.Image, ds.Spec.Template.Labels[LabelVersion])
	}
	var handoff, token bool
	for _, v := range pod.Volumes {
		if v.HostPath != nil && v.HostPath.Path == meshconfig.HandoffDir {
			handoff = true
		}
		if v.Projected != nil && v.Projected.Sources[0].ServiceAccountToken.Audience == meshconfig.CAAudience {
			token = true
		}
	}
	if !handoff || !token {
		t.Errorf("hand-off hostPath %v, CA-audience token %v", handoff, token)
	}
	if !slices.Contains(c.Args, "--drain-period=45s") {
		t.Errorf("args %v lack the drain period", c.Args)
	}
}

func TestCNIDaemonSet(t *testing.T) {
	m := testMesh()
	m.Spec.CNI.BinDir = "/home/kubernetes/bin"
	ds := find[*appsv1.DaemonSet](t, render(t, m, Uniform("0.1.0")), CNIName)
	pod := ds.Spec.Template.Spec
	if !pod.HostNetwork || pod.PriorityClassName != "system-node-critical" || !*pod.Containers[0].SecurityContext.Privileged {
		t.Errorf("hostNetwork %v, priority %q, privileged %v", pod.HostNetwork, pod.PriorityClassName, *pod.Containers[0].SecurityContext.Privileged)
	}
	paths := map[string]bool{}
	for _, v := range pod.Volumes {
		if v.HostPath != nil {
			paths[v.HostPath.Path] = true
		}
	}
	for _, p := range []string{"/home/kubernetes/bin", "/etc/cni/net.d", "/var/run/netns", meshconfig.RunDir} {
		if !paths[p] {
			t.Errorf("no hostPath %s in %v", p, paths)
		}
	}
}

func TestTemplateHashFollowsTheTemplate(t *testing.T) {
	m := testMesh()
	hash := func(v string) string {
		return find[*appsv1.DaemonSet](t, render(t, m, Uniform(v)), ZTunnelName).Spec.Template.Annotations[AnnotationTemplateHash]
	}
	if first, again := hash("0.1.0"), hash("0.1.0"); first != again { // two renders of the same mesh
		t.Fatal("hash is not stable")
	}
	if hash("0.1.0") == hash("0.2.0") {
		t.Fatal("hash does not change with the version")
	}
	before := hash("0.1.0")
	m.Spec.ZTunnel.LogLevel = meshv1alpha1.LogLevelDebug
	if hash("0.1.0") == before {
		t.Fatal("hash does not change with the log level")
	}
}

func TestRBACHasNoWildcards(t *testing.T) {
	for _, o := range render(t, testMesh(), Uniform("0.1.0")) {
		var rules []rbacv1.PolicyRule
		switch r := o.(type) {
		case *rbacv1.ClusterRole:
			rules = r.Rules
		case *rbacv1.Role:
			rules = r.Rules
		}
		for _, rule := range rules {
			for _, s := range slices.Concat(rule.APIGroups, rule.Resources, rule.Verbs) {
				if strings.Contains(s, "*") {
					t.Errorf("%s grants a wildcard: %+v", o.GetName(), rule)
				}
			}
		}
	}
}

func TestRenderNeedsVersions(t *testing.T) {
	if _, err := Render(Input{Mesh: testMesh(), Versions: Versions{ControlPlane: "0.1.0"}}); err == nil {
		t.Fatal("Render accepted a missing version")
	}
}

func TestImageOverride(t *testing.T) {
	m := testMesh()
	m.Spec.ControlPlane.Image = "registry.example/cp:dev"
	d := find[*appsv1.Deployment](t, render(t, m, Uniform("0.1.0")), ControlPlaneName)
	if d.Spec.Template.Spec.Containers[0].Image != "registry.example/cp:dev" {
		t.Fatalf("image = %s", d.Spec.Template.Spec.Containers[0].Image)
	}
}

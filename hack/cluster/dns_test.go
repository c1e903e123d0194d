package main

import (
	"net"
	"runtime/debug"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

// corednsObjects renders the addon and decodes every document as the
// apiserver's typed objects would be: a field in the wrong place fails here.
func corednsObjects(t *testing.T, image string) []runtime.Object {
	t.Helper()
	manifest, err := corednsManifest(image)
	if err != nil {
		t.Fatal(err)
	}
	var objs []runtime.Object
	for doc := range strings.SplitSeq(manifest, "\n---\n") {
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(doc), nil, nil)
		if err != nil {
			t.Fatalf("%v in:\n%s", err, doc)
		}
		objs = append(objs, obj)
	}
	return objs
}

func findObject[T runtime.Object](t *testing.T, objs []runtime.Object) T {
	t.Helper()
	for _, o := range objs {
		if typed, ok := o.(T); ok {
			return typed
		}
	}
	var zero T
	t.Fatalf("no %T in the addon", zero)
	return zero
}

// The kube-dns Service sits at the fixed address kubelets give pods, and
// selects the CoreDNS pods, which run the imported image as non-root.
func TestCorednsManifestService(t *testing.T) {
	image := corednsImageRef("v1.15.0")
	objs := corednsObjects(t, image)
	if len(objs) != 6 {
		t.Errorf("%d objects, want ServiceAccount, ClusterRole, binding, ConfigMap, Deployment, Service", len(objs))
	}
	svc := findObject[*corev1.Service](t, objs)
	_, services, _ := net.ParseCIDR(serviceCIDR)
	if svc.Name != "kube-dns" || svc.Namespace != "kube-system" || svc.Spec.ClusterIP != clusterDNSIP || !services.Contains(net.ParseIP(clusterDNSIP)) {
		t.Errorf("service %s/%s at %s; want kube-system/kube-dns at %s in %s", svc.Namespace, svc.Name, svc.Spec.ClusterIP, clusterDNSIP, serviceCIDR)
	}
	var protocols []corev1.Protocol
	for _, p := range svc.Spec.Ports {
		if p.Port == 53 {
			protocols = append(protocols, p.Protocol)
		}
	}
	if !slices.Contains(protocols, corev1.ProtocolUDP) || !slices.Contains(protocols, corev1.ProtocolTCP) {
		t.Errorf("service ports %+v: want 53 over UDP and TCP", svc.Spec.Ports)
	}

	d := findObject[*appsv1.Deployment](t, objs)
	pod := d.Spec.Template
	for k, v := range svc.Spec.Selector {
		if pod.Labels[k] != v {
			t.Errorf("service selector %v does not select the pod labels %v", svc.Spec.Selector, pod.Labels)
		}
	}
	c := pod.Spec.Containers[0]
	if c.Image != image || c.ImagePullPolicy != corev1.PullNever {
		t.Errorf("image %s (%s), want the imported %s, never pulled", c.Image, c.ImagePullPolicy, image)
	}
	if sc := pod.Spec.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0 {
		t.Errorf("pod security context %+v: want non-root", sc)
	}
	if pod.Spec.DNSPolicy != corev1.DNSDefault {
		t.Errorf("dnsPolicy %s: CoreDNS must resolve through the node, not itself", pod.Spec.DNSPolicy)
	}
	if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/ready" || p.HTTPGet.Port.IntValue() != 8181 {
		t.Errorf("readiness probe %+v: want the ready plugin, GET :8181/ready", p)
	}
	if p := c.LivenessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/health" || p.HTTPGet.Port.IntValue() != 8080 {
		t.Errorf("liveness probe %+v: want the health plugin, GET :8080/health", p)
	}
}

// CoreDNS may read exactly what its kubernetes plugin watches: no
// wildcards, no writes.
func TestCorednsManifestRBAC(t *testing.T) {
	objs := corednsObjects(t, corednsImageRef("v1.15.0"))
	role := findObject[*rbacv1.ClusterRole](t, objs)
	granted := map[string]bool{}
	for _, r := range role.Rules {
		for _, list := range [][]string{r.APIGroups, r.Resources, r.Verbs} {
			if slices.Contains(list, "*") {
				t.Errorf("rule %+v has a wildcard", r)
			}
		}
		if slices.ContainsFunc(r.Verbs, func(v string) bool { return v != "list" && v != "watch" }) {
			t.Errorf("rule %+v: want list and watch only", r)
		}
		for _, res := range r.Resources {
			granted[res] = true
		}
	}
	for _, res := range []string{"services", "endpointslices", "namespaces"} {
		if !granted[res] {
			t.Errorf("ClusterRole does not grant %s", res)
		}
	}
	binding := findObject[*rbacv1.ClusterRoleBinding](t, objs)
	d := findObject[*appsv1.Deployment](t, objs)
	if binding.RoleRef.Name != role.Name || len(binding.Subjects) != 1 || binding.Subjects[0].Name != d.Spec.Template.Spec.ServiceAccountName {
		t.Errorf("binding %+v does not bind %s to the pod's service account %s", binding, role.Name, d.Spec.Template.Spec.ServiceAccountName)
	}
}

// The Corefile serves the cluster domain from the API and loads every
// plugin the probes rely on.
func TestCorednsManifestCorefile(t *testing.T) {
	cm := findObject[*corev1.ConfigMap](t, corednsObjects(t, corednsImageRef("v1.15.0")))
	corefile := cm.Data["Corefile"]
	for _, want := range []string{".:53 {", "kubernetes " + clusterDomain + " in-addr.arpa ip6.arpa", "ready", "health", "forward . /etc/resolv.conf", "cache", "loop"} {
		if !strings.Contains(corefile, want) {
			t.Errorf("Corefile lacks %q:\n%s", want, corefile)
		}
	}
	if strings.Contains(corefile, "{{") {
		t.Errorf("Corefile has an unrendered field:\n%s", corefile)
	}
}

// Every kubelet points pods at the kube-dns Service and the cluster domain.
func TestKubeletConfigClusterDNS(t *testing.T) {
	data, err := kubeletConfig(newNode("/state", 1), settingsFor(hostFacts{}), pki{dir: "/state/pki", kubeconfigDir: "/state/kubeconfig"})
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		ClusterDNS    []string `json:"clusterDNS"`
		ClusterDomain string   `json:"clusterDomain"`
	}
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.ClusterDNS, []string{clusterDNSIP}) || cfg.ClusterDomain != clusterDomain {
		t.Errorf("clusterDNS %v, clusterDomain %q; want [%s] and %s", cfg.ClusterDNS, cfg.ClusterDomain, clusterDNSIP, clusterDomain)
	}
}

func TestModuleVersion(t *testing.T) {
	info := &debug.BuildInfo{Deps: []*debug.Module{
		{Path: "github.com/miekg/dns", Version: "v1.1.73"},
		{Path: corednsModule, Version: "v1.15.0"},
	}}
	if got := moduleVersion(info, corednsModule); got != "v1.15.0" {
		t.Errorf("version %q, want v1.15.0", got)
	}
	info.Deps[1].Replace = &debug.Module{Path: corednsModule, Version: "v1.14.7"}
	if got := moduleVersion(info, corednsModule); got != "v1.14.7" {
		t.Errorf("replaced: version %q, want the replacement's v1.14.7", got)
	}
	if got := moduleVersion(&debug.BuildInfo{}, corednsModule); got != "" {
		t.Errorf("not a dependency: version %q, want none", got)
	}
}

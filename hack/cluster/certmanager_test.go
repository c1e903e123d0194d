package main

import (
	"bufio"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// certManagerObjects are the addon's objects, each decoded strictly into
// its Go type, so a misspelt field fails here rather than being dropped by
// the API server.
type certManagerObjects struct {
	namespaces      []corev1.Namespace
	serviceAccounts []corev1.ServiceAccount
	clusterRoles    []rbacv1.ClusterRole
	bindings        []rbacv1.ClusterRoleBinding
	deployments     []appsv1.Deployment
}

func parseCertManagerManifest(t *testing.T, manifest string) certManagerObjects {
	t.Helper()
	var objs certManagerObjects
	reader := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(manifest)))
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatal(err)
		}
		var meta struct{ Kind string }
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			t.Fatal(err)
		}
		var target any
		switch meta.Kind {
		case "":
			continue // only comments
		case "Namespace":
			target = appendNew(&objs.namespaces)
		case "ServiceAccount":
			target = appendNew(&objs.serviceAccounts)
		case "ClusterRole":
			target = appendNew(&objs.clusterRoles)
		case "ClusterRoleBinding":
			target = appendNew(&objs.bindings)
		case "Deployment":
			target = appendNew(&objs.deployments)
		default:
			t.Fatalf("unexpected kind %q in the addon", meta.Kind)
		}
		if err := yaml.UnmarshalStrict(doc, target); err != nil {
			t.Fatalf("%s: %v\n%s", meta.Kind, err, doc)
		}
	}
}

// appendNew appends a zero value and returns a pointer to it.
func appendNew[T any](list *[]T) *T {
	*list = append(*list, *new(T))
	return &(*list)[len(*list)-1]
}

func TestCertManagerManifestParses(t *testing.T) {
	manifest, err := certManagerManifest("v1.20.3")
	if err != nil {
		t.Fatal(err)
	}
	objs := parseCertManagerManifest(t, manifest)
	if len(objs.namespaces) != 1 || objs.namespaces[0].Name != certManagerNamespace {
		t.Errorf("namespaces %v: want only %s", objs.namespaces, certManagerNamespace)
	}
	images := map[string]string{}
	for _, d := range objs.deployments {
		if d.Namespace != certManagerNamespace || len(d.Spec.Template.Spec.Containers) != 1 {
			t.Fatalf("deployment %s/%s: want one container in %s", d.Namespace, d.Name, certManagerNamespace)
		}
		container := d.Spec.Template.Spec.Containers[0]
		images[d.Name] = container.Image
		if container.ImagePullPolicy != corev1.PullNever {
			t.Errorf("deployment %s: imagePullPolicy %q: the image is imported, never pulled", d.Name, container.ImagePullPolicy)
		}
		if container.LivenessProbe == nil || container.ReadinessProbe == nil {
			t.Errorf("deployment %s: want a liveness and a readiness probe", d.Name)
		}
		if !slices.ContainsFunc(objs.serviceAccounts, func(sa corev1.ServiceAccount) bool {
			return sa.Name == d.Spec.Template.Spec.ServiceAccountName && sa.Namespace == d.Namespace
		}) {
			t.Errorf("deployment %s: service account %q is not in the addon", d.Name, d.Spec.Template.Spec.ServiceAccountName)
		}
	}
	want := map[string]string{
		"cert-manager":            "localhost/ambient-cluster/cert-manager-controller:v1.20.3",
		"cert-manager-cainjector": "localhost/ambient-cluster/cert-manager-cainjector:v1.20.3",
	}
	if len(images) != len(want) || images["cert-manager"] != want["cert-manager"] || images["cert-manager-cainjector"] != want["cert-manager-cainjector"] {
		t.Errorf("deployments and images %v, want %v", images, want)
	}
	checkBindings(t, objs)
}

// checkBindings: every binding names a ClusterRole and service account of
// the addon, and every ClusterRole is bound.
func checkBindings(t *testing.T, objs certManagerObjects) {
	t.Helper()
	bound := map[string]bool{}
	for _, b := range objs.bindings {
		bound[b.RoleRef.Name] = true
		if b.RoleRef.Kind != "ClusterRole" || !slices.ContainsFunc(objs.clusterRoles, func(r rbacv1.ClusterRole) bool { return r.Name == b.RoleRef.Name }) {
			t.Errorf("binding %s: role %s %q is not in the addon", b.Name, b.RoleRef.Kind, b.RoleRef.Name)
		}
		for _, s := range b.Subjects {
			if s.Kind != rbacv1.ServiceAccountKind || !slices.ContainsFunc(objs.serviceAccounts, func(sa corev1.ServiceAccount) bool {
				return sa.Name == s.Name && sa.Namespace == s.Namespace
			}) {
				t.Errorf("binding %s: subject %s %s/%s is not a service account of the addon", b.Name, s.Kind, s.Namespace, s.Name)
			}
		}
	}
	for _, r := range objs.clusterRoles {
		if !bound[r.Name] {
			t.Errorf("ClusterRole %s is bound to nothing", r.Name)
		}
	}
}

// No rule grants with a wildcard: not all verbs, resources, API groups or
// subresources ("pods/*"), nor non-resource URLs.
func TestCertManagerManifestHasNoWildcardRBAC(t *testing.T) {
	manifest, err := certManagerManifest("v1.20.3")
	if err != nil {
		t.Fatal(err)
	}
	objs := parseCertManagerManifest(t, manifest)
	if len(objs.clusterRoles) == 0 {
		t.Fatal("no ClusterRole in the addon")
	}
	for _, role := range objs.clusterRoles {
		if role.AggregationRule != nil {
			t.Errorf("ClusterRole %s aggregates other roles", role.Name)
		}
		for i, rule := range role.Rules {
			if len(rule.Verbs) == 0 || len(rule.Resources) == 0 || len(rule.NonResourceURLs) > 0 {
				t.Errorf("ClusterRole %s rule %d: want verbs on resources, no non-resource URLs: %+v", role.Name, i, rule)
			}
			for _, field := range [][]string{rule.Verbs, rule.Resources, rule.APIGroups, rule.ResourceNames} {
				for _, v := range field {
					if strings.Contains(v, "*") {
						t.Errorf("ClusterRole %s rule %d: wildcard %q in %+v", role.Name, i, v, rule)
					}
				}
			}
		}
	}
}

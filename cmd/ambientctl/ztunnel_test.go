package main

import (
	"context"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controllers/ambientmesh/manifests"
	"github.com/ambientmesh/ambient-operator/internal/meshscheme"
)

// ztunnelPodOn is a pod as the ztunnel DaemonSet makes it on node.
func ztunnelPodOn(name, node string, ready, deleting bool) corev1.Pod {
	p := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ambient-system"}, Spec: corev1.PodSpec{NodeName: node}}
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}
	if deleting {
		p.DeletionTimestamp = &metav1.Time{}
		p.Finalizers = []string{"test"} // the fake client keeps a deleting object only with a finalizer
	}
	return p
}

func TestPickZtunnel(t *testing.T) {
	pods := []corev1.Pod{
		ztunnelPodOn("ztunnel-a", "n1", true, false),
		ztunnelPodOn("ztunnel-old", "n2", true, true), // being replaced during a rollout
		ztunnelPodOn("ztunnel-new", "n2", true, false),
		ztunnelPodOn("ztunnel-c", "n3", false, false),
	}
	cases := []struct {
		name, node, pod string
		want            string // the pod chosen, or
		err             string // the start of the error
	}{
		{name: "by node", node: "n1", want: "ztunnel-a"},
		{name: "by node, the new pod of a rollout", node: "n2", want: "ztunnel-new"},
		{name: "by node, not ready is still asked", node: "n3", want: "ztunnel-c"},
		{name: "by name", pod: "ztunnel-old", want: "ztunnel-old"},
		{name: "by name and its node", node: "n2", pod: "ztunnel-old", want: "ztunnel-old"},
		{name: "a node without ztunnel", node: "n4",
			err: "no ztunnel pod on node n4; there are: ztunnel-a on n1, ztunnel-c on n3, ztunnel-new on n2, ztunnel-old on n2"},
		{name: "an unknown name", pod: "ztunnel-z", err: "no ztunnel pod named ztunnel-z; there are:"},
		{name: "a name on another node", node: "n1", pod: "ztunnel-c", err: "no ztunnel pod named ztunnel-c on node n1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := pickZtunnel(pods, tc.node, tc.pod)
			if tc.err != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q...", err, tc.err)
				}
				return
			}
			if err != nil || got.Name != tc.want {
				t.Fatalf("got %q (%v), want %q", got.Name, err, tc.want)
			}
		})
	}
}

// TestZtunnelPodFindsTheDaemonSetsPods lists pods labelled as the operator renders the
// ztunnel DaemonSet's template, next to pods that must not be chosen.
func TestZtunnelPodFindsTheDaemonSetsPods(t *testing.T) {
	mesh := &meshv1alpha1.AmbientMesh{ObjectMeta: metav1.ObjectMeta{Name: "default"}}
	objs, err := manifests.Render(manifests.Input{Mesh: mesh, Versions: manifests.Uniform("0.1.0")})
	if err != nil {
		t.Fatal(err)
	}
	var template map[string]string
	for _, o := range objs {
		if ds, ok := o.(*appsv1.DaemonSet); ok && ds.Name == manifests.ZTunnelName {
			template = ds.Spec.Template.Labels
		}
	}
	if template == nil {
		t.Fatal("no ztunnel DaemonSet rendered")
	}
	labelled := func(p corev1.Pod, labels map[string]string, namespace string) client.Object {
		p.Labels, p.Namespace = labels, namespace
		return &p
	}
	otherMesh := map[string]string{}
	for k, v := range template {
		otherMesh[k] = v
	}
	otherMesh[manifests.LabelMesh] = "other"
	cl := fake.NewClientBuilder().WithScheme(meshscheme.New()).WithObjects(
		labelled(ztunnelPodOn("ztunnel-n1", "n1", true, false), template, mesh.Spec.InstallNamespace()),
		labelled(ztunnelPodOn("cni-n2", "n2", true, false), map[string]string{manifests.LabelName: manifests.CNIName}, mesh.Spec.InstallNamespace()),
		labelled(ztunnelPodOn("ztunnel-elsewhere", "n2", true, false), template, "default"),
		labelled(ztunnelPodOn("ztunnel-other-mesh", "n2", true, false), otherMesh, mesh.Spec.InstallNamespace()),
	).Build()

	ctx := context.Background()
	got, err := ztunnelPod(ctx, cl, "default", mesh.Spec.InstallNamespace(), "n1", "")
	if err != nil || got.Name != "ztunnel-n1" {
		t.Fatalf("node n1: got %q (%v), want ztunnel-n1", got.Name, err)
	}
	if _, err := ztunnelPod(ctx, cl, "default", mesh.Spec.InstallNamespace(), "n2", ""); err == nil ||
		!strings.Contains(err.Error(), "no ztunnel pod on node n2; there are: ztunnel-n1 on n1") {
		t.Fatalf("node n2 has only a CNI pod, another namespace's and another mesh's ztunnel: %v", err)
	}
	if _, err := ztunnelPod(ctx, cl, "default", "elsewhere", "n1", ""); err == nil ||
		!strings.Contains(err.Error(), "no ztunnel pods in namespace elsewhere") || !strings.Contains(err.Error(), "--via netns") {
		t.Fatalf("an empty namespace: %v", err)
	}
}

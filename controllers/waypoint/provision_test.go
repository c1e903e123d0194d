package waypoint

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
)

func TestMeshChangeMatters(t *testing.T) {
	base := &meshv1alpha1.AmbientMesh{}
	base.Status.Version = "0.1.0"
	base.Status.Components.ZTunnel.Version = "0.1.0"
	tests := []struct {
		name   string
		change func(*meshv1alpha1.AmbientMesh)
		want   bool
	}{
		{"a status write that proxies do not read", func(m *meshv1alpha1.AmbientMesh) {
			m.Status.Phase = meshv1alpha1.MeshPhaseUpgrading
			m.Status.Components.CNI.Ready = 3
		}, false},
		{"the mesh becomes ready", func(m *meshv1alpha1.AmbientMesh) { m.Status.Version = "0.2.0" }, true},
		{"ztunnel rolled out a version", func(m *meshv1alpha1.AmbientMesh) { m.Status.Components.ZTunnel.Version = "" }, true},
		{"waypoint defaults", func(m *meshv1alpha1.AmbientMesh) {
			m.Spec.Waypoint.Resources = &corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")}}
		}, true},
		{"upgrade paused", func(m *meshv1alpha1.AmbientMesh) { m.Spec.Upgrade.Paused = ptr.To(true) }, true},
		{"deletion", func(m *meshv1alpha1.AmbientMesh) { m.DeletionTimestamp = &metav1.Time{Time: now} }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cur := base.DeepCopy()
			tt.change(cur)
			if got := meshChangeMatters(base, cur); got != tt.want {
				t.Errorf("meshChangeMatters = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestClusterIPs(t *testing.T) {
	svc := &corev1.Service{Spec: corev1.ServiceSpec{ClusterIP: "10.0.0.1", ClusterIPs: []string{"10.0.0.1", "fd00::1"}}}
	if got := clusterIPs(svc); len(got) != 2 {
		t.Errorf("dual stack: %v", got)
	}
	if got := clusterIPs(&corev1.Service{Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone}}); len(got) != 0 {
		t.Errorf("headless: %v", got)
	}
}

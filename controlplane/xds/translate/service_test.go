package translate

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestServiceVIPs pins the one definition of a Service's VIPs that ztunnel's Services
// and the waypoint's listeners both use.
func TestServiceVIPs(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec corev1.ServiceSpec
		want []string
	}{
		{"dual-stack", corev1.ServiceSpec{ClusterIP: "10.0.0.1", ClusterIPs: []string{"10.0.0.1", "fd00::1"}}, []string{"10.0.0.1", "fd00::1"}},
		{"clusterIP only (older objects)", corev1.ServiceSpec{ClusterIP: "10.0.0.1"}, []string{"10.0.0.1"}},
		{"headless", corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, ClusterIPs: []string{corev1.ClusterIPNone}}, nil},
		{"headless clusterIP only", corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone}, nil},
		{"empty entries skipped", corev1.ServiceSpec{ClusterIPs: []string{"", "10.0.0.2"}}, []string{"10.0.0.2"}},
		{"none", corev1.ServiceSpec{}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ServiceVIPs(&corev1.Service{Spec: tc.spec}); !slices.Equal(got, tc.want) {
				t.Errorf("ServiceVIPs = %q, want %q", got, tc.want)
			}
		})
	}
}

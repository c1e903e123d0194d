package translate

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func TestPodTelemetry(t *testing.T) {
	deploymentPod := func(labels map[string]string) *corev1.Pod {
		l := map[string]string{"pod-template-hash": "7d9f8"}
		for k, v := range labels {
			l[k] = v
		}
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "reviews-v2-7d9f8-x2k4p", Labels: l,
			OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "reviews-v2-7d9f8", Controller: ptr.To(true)}}}}
	}
	for _, tc := range []struct {
		name string
		pod  *corev1.Pod
		want WorkloadTelemetry
	}{
		{"no labels: the workload's name and latest",
			deploymentPod(nil),
			WorkloadTelemetry{Workload: "reviews-v2", CanonicalName: "reviews-v2", CanonicalRevision: "latest"}},
		{"app and version",
			deploymentPod(useLabels("app", "reviews", "version", "v2")),
			WorkloadTelemetry{Workload: "reviews-v2", CanonicalName: "reviews", CanonicalRevision: "v2", App: "reviews", Version: "v2"}},
		{"app.kubernetes.io labels fill in for app and version",
			deploymentPod(useLabels(LabelK8sName, "reviews", LabelK8sVersion, "2.1")),
			WorkloadTelemetry{Workload: "reviews-v2", CanonicalName: "reviews", CanonicalRevision: "2.1", App: "reviews", Version: "2.1"}},
		{"app.kubernetes.io labels win for the canonical names, app and version for app and version",
			deploymentPod(useLabels("app", "rev", "version", "v2", LabelK8sName, "reviews", LabelK8sVersion, "2.1")),
			WorkloadTelemetry{Workload: "reviews-v2", CanonicalName: "reviews", CanonicalRevision: "2.1", App: "rev", Version: "v2"}},
		{"the canonical labels win over all others",
			deploymentPod(useLabels(LabelCanonicalName, "reviews-svc", LabelCanonicalRevision, "blue",
				"app", "rev", "version", "v2", LabelK8sName, "reviews", LabelK8sVersion, "2.1")),
			WorkloadTelemetry{Workload: "reviews-v2", CanonicalName: "reviews-svc", CanonicalRevision: "blue", App: "rev", Version: "v2"}},
		{"an empty label counts as absent",
			deploymentPod(useLabels(LabelCanonicalName, "", "app", "", LabelK8sName, "reviews", "version", "")),
			WorkloadTelemetry{Workload: "reviews-v2", CanonicalName: "reviews", CanonicalRevision: "latest", App: "reviews"}},
		{"a bare pod is its own workload",
			&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "debug"}},
			WorkloadTelemetry{Workload: "debug", CanonicalName: "debug", CanonicalRevision: "latest"}},
		{"a StatefulSet's pod reports the StatefulSet",
			&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "db-0", Labels: useLabels("app", "db"),
				OwnerReferences: []metav1.OwnerReference{{Kind: "StatefulSet", Name: "db", Controller: ptr.To(true)}}}},
			WorkloadTelemetry{Workload: "db", CanonicalName: "db", CanonicalRevision: "latest", App: "db"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := PodTelemetry(tc.pod); got != tc.want {
				t.Errorf("PodTelemetry =\n  %+v\nwant\n  %+v", got, tc.want)
			}
		})
	}
}

func TestWorkloadCarriesTelemetryAndClusterID(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "reviews-v2-x", Namespace: "shop", UID: "u1", Labels: useLabels("app", "reviews", "version", "v2")},
		Status:     corev1.PodStatus{PodIP: "10.0.0.5"},
	}
	w := Workload(Mesh{TrustDomain: "cluster.local", ClusterDomain: "cluster.local", ClusterID: "east"}, PodInputs{Pod: pod})
	if w.GetCanonicalName() != "reviews" || w.GetCanonicalRevision() != "v2" || w.GetApp() != "reviews" ||
		w.GetVersion() != "v2" || w.GetClusterId() != "east" {
		t.Errorf("Workload telemetry fields: canonical %q/%q app %q version %q cluster %q; want reviews/v2 reviews v2 east",
			w.GetCanonicalName(), w.GetCanonicalRevision(), w.GetApp(), w.GetVersion(), w.GetClusterId())
	}
}

package translate

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// DefaultClusterID is the cluster name telemetry reports when none is configured:
// Istio's default, so that dashboards filtering on source_cluster/destination_cluster
// keep working.
const DefaultClusterID = "Kubernetes"

// The pod labels telemetry names a workload by, in Istio's order of preference.
const (
	LabelCanonicalName     = "service.istio.io/canonical-name"
	LabelCanonicalRevision = "service.istio.io/canonical-revision"
	LabelK8sName           = "app.kubernetes.io/name"
	LabelK8sVersion        = "app.kubernetes.io/version"
	LabelApp               = "app"
	LabelVersion           = "version"
)

// defaultCanonicalRevision is Istio's revision of a pod with no version label.
const defaultCanonicalRevision = "latest"

// WorkloadTelemetry is how Istio's metrics name a pod's workload.
type WorkloadTelemetry struct {
	// Workload is the owning workload's name (a Deployment's name for its pods).
	Workload string
	// CanonicalName and CanonicalRevision are Istio's canonical service and revision;
	// never empty.
	CanonicalName, CanonicalRevision string
	// App and Version are the app and version labels; empty when the pod has neither
	// they nor their app.kubernetes.io/ counterparts.
	App, Version string
}

// PodTelemetry derives a pod's telemetry names from its labels and owner, as Istio does:
// the canonical name falls back to the workload's name, the canonical revision to
// "latest".
func PodTelemetry(pod *corev1.Pod) WorkloadTelemetry {
	workload := WorkloadName(pod)
	return WorkloadTelemetry{
		Workload:          workload,
		CanonicalName:     firstLabel(pod.Labels, workload, LabelCanonicalName, LabelK8sName, LabelApp),
		CanonicalRevision: firstLabel(pod.Labels, defaultCanonicalRevision, LabelCanonicalRevision, LabelK8sVersion, LabelVersion),
		App:               firstLabel(pod.Labels, "", LabelApp, LabelK8sName),
		Version:           firstLabel(pod.Labels, "", LabelVersion, LabelK8sVersion),
	}
}

// firstLabel is the value of the first of keys with a non-empty value, else def.
func firstLabel(labels map[string]string, def string, keys ...string) string {
	for _, k := range keys {
		if v := labels[k]; v != "" {
			return v
		}
	}
	return def
}

// WorkloadName names the pod's workload for telemetry: its controller's name, where a
// ReplicaSet's pods report their Deployment (the ReplicaSet name minus the
// pod-template-hash suffix); the pod's own name without a controller.
func WorkloadName(pod *corev1.Pod) string {
	for _, ref := range pod.OwnerReferences {
		if ref.Controller == nil || !*ref.Controller {
			continue
		}
		if hash := pod.Labels["pod-template-hash"]; ref.Kind == "ReplicaSet" && hash != "" {
			return strings.TrimSuffix(ref.Name, "-"+hash)
		}
		return ref.Name
	}
	return pod.Name
}

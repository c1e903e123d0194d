package agent

import (
	corev1 "k8s.io/api/core/v1"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
)

// Decision is whether a pod should be captured, and why (for logs, events
// and the annotation).
type Decision struct {
	Enroll bool
	Reason string
}

// Decide is the enrollment policy: the pod's own dataplane-mode label wins
// ("ambient" in, "none" out), then its namespace's; host-network pods and
// pods that are finished or going away are never captured. ns may be nil
// (namespace not known yet).
func Decide(ns *corev1.Namespace, pod *corev1.Pod) Decision {
	switch {
	case pod == nil:
		return Decision{Reason: "pod is gone"}
	case pod.Spec.HostNetwork:
		return Decision{Reason: "pod uses the host network"}
	case pod.DeletionTimestamp != nil:
		return Decision{Reason: "pod is terminating"}
	case pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed:
		return Decision{Reason: "pod has finished"}
	}
	switch pod.Labels[meshv1.LabelDataplaneMode] {
	case meshv1.DataplaneModeAmbient:
		return Decision{Enroll: true, Reason: "pod label " + meshv1.LabelDataplaneMode + "=ambient"}
	case meshv1.DataplaneModeNone:
		return Decision{Reason: "pod label " + meshv1.LabelDataplaneMode + "=none"}
	}
	if ns != nil && ns.Labels[meshv1.LabelDataplaneMode] == meshv1.DataplaneModeAmbient {
		return Decision{Enroll: true, Reason: "namespace label " + meshv1.LabelDataplaneMode + "=ambient"}
	}
	return Decision{Reason: "neither the pod nor its namespace is labeled " + meshv1.LabelDataplaneMode + "=ambient"}
}

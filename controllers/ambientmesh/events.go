package ambientmesh

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
)

// recordTransitions emits one event per condition whose status or reason
// changed, so `kubectl events` tells the story of an install or upgrade
// without an event on every pass.
func (r *Reconciler) recordTransitions(before, after *meshv1alpha1.AmbientMesh) {
	for _, c := range after.Status.Conditions {
		old := meta.FindStatusCondition(before.Status.Conditions, c.Type)
		if old != nil && old.Status == c.Status && old.Reason == c.Reason {
			continue
		}
		eventType := corev1.EventTypeNormal
		if c.Status == metav1.ConditionFalse && isProblem(c) {
			eventType = corev1.EventTypeWarning
		}
		r.event(after, eventType, c.Reason, "Status", "%s=%s: %s", c.Type, c.Status, c.Message)
	}
}

// isProblem: reasons that ask the user to act (not progress or "up to date").
func isProblem(c metav1.Condition) bool {
	switch c.Reason {
	case meshv1alpha1.ReasonInstalling, meshv1alpha1.ReasonUpToDate, meshv1alpha1.ReasonDeleting,
		meshv1alpha1.ReasonUpgradeInProgress, meshv1alpha1.ReasonComponentsNotReady:
		return false
	}
	return true
}

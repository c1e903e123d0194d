package ambientmesh

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/internal/versions"
)

// identityState is the verdict on the certificate issuer.
type identityState struct {
	Ready   bool
	Reason  string
	Message string
}

// observation is what one reconcile pass learned; status is computed from
// it by pure functions below.
type observation struct {
	// Observed is false when the pass failed before reading the cluster.
	Observed bool
	Cluster  clusterState
	Plan     versionPlan
	Nodes    nodePlan
	Identity identityState
	// Err is the pass's error, surfaced as ApplyFailed.
	Err error
	// Deleting describes the uninstall step while the mesh is being deleted.
	Deleting string
}

// computeStatus derives the whole status from the previous status (for
// condition transition times and the last completed version) and this
// pass's observation. now is injected so tests control time.
func computeStatus(mesh *meshv1alpha1.AmbientMesh, obs observation, now time.Time) meshv1alpha1.AmbientMeshStatus {
	prev := mesh.Status
	st := meshv1alpha1.AmbientMeshStatus{
		ObservedGeneration: mesh.Generation,
		TrustDomain:        mesh.Spec.EffectiveTrustDomain(),
		Version:            prev.Version,
		Conditions:         append([]metav1.Condition(nil), prev.Conditions...),
	}
	set := func(c metav1.Condition) {
		c.ObservedGeneration = mesh.Generation
		c.LastTransitionTime = metav1.NewTime(now)
		meta.SetStatusCondition(&st.Conditions, c)
	}
	if obs.Deleting != "" {
		st.Phase = meshv1alpha1.MeshPhaseDeleting
		set(condition(meshv1alpha1.MeshConditionReady, false, meshv1alpha1.ReasonDeleting, obs.Deleting))
		return st
	}
	if !obs.Observed {
		st.Phase = prev.Phase
		st.Components = prev.Components
		st.Upgrade = prev.Upgrade
		set(condition(meshv1alpha1.MeshConditionReady, false, meshv1alpha1.ReasonApplyFailed, errMessage(obs.Err)))
		return st
	}
	everReady := prev.Version != ""
	cs := obs.Cluster
	st.Components = meshv1alpha1.ComponentsStatus{
		ControlPlane: componentStatus(cs.ControlPlane),
		CNI:          componentStatus(cs.CNI),
		ZTunnel:      componentStatus(cs.ZTunnel),
	}
	st.Components.ZTunnel.Updated = obs.Nodes.Updated

	components := []metav1.Condition{
		componentCondition(meshv1alpha1.MeshConditionControlPlaneReady, "control plane", "replicas", cs.ControlPlane, everReady),
		componentCondition(meshv1alpha1.MeshConditionCNIReady, "CNI agent", "nodes", cs.CNI, everReady),
		componentCondition(meshv1alpha1.MeshConditionZTunnelReady, "ztunnel", "nodes", cs.ZTunnel, everReady),
		identityCondition(obs.Identity),
	}
	for _, c := range components {
		set(c)
	}
	upgrading := upgradingCondition(obs)
	set(upgrading)
	ready := readyCondition(obs, components, upgrading)
	set(ready)

	st.Upgrade = upgradeStatus(obs.Plan, cs, obs.Nodes)
	if upgrading.Status == metav1.ConditionFalse {
		st.Upgrade = nil
	}
	switch {
	case ready.Status == metav1.ConditionTrue:
		st.Version = obs.Plan.Target
	case obs.Plan.Upgrading():
		st.Version = obs.Plan.Installed
	}
	st.Phase = phase(ready, upgrading, everReady || st.Version != "", obs)
	return st
}

func phase(ready, upgrading metav1.Condition, everReady bool, obs observation) meshv1alpha1.MeshPhase {
	switch {
	case upgrading.Status == metav1.ConditionTrue:
		return meshv1alpha1.MeshPhaseUpgrading
	case ready.Status == metav1.ConditionTrue:
		return meshv1alpha1.MeshPhaseReady
	case !everReady && obs.Err == nil && obs.Plan.Refused == nil:
		return meshv1alpha1.MeshPhaseInstalling
	default:
		return meshv1alpha1.MeshPhaseDegraded
	}
}

func condition(t string, ok bool, reason, msg string) metav1.Condition {
	status := metav1.ConditionFalse
	if ok {
		status = metav1.ConditionTrue
	}
	return metav1.Condition{Type: t, Status: status, Reason: reason, Message: msg}
}

func componentStatus(w workloadState) meshv1alpha1.ComponentStatus {
	cs := meshv1alpha1.ComponentStatus{Desired: w.Desired, Ready: w.Ready, Updated: w.Updated}
	if w.RolledOut {
		cs.Version = w.Version
	}
	return cs
}

// componentCondition: True when every desired pod is ready. Before the mesh
// was ever ready a missing or unready component is Installing, after that
// NotReady, which needs the user's attention.
func componentCondition(t, name, unit string, w workloadState, everReady bool) metav1.Condition {
	notReady := meshv1alpha1.ReasonNotReady
	if !everReady {
		notReady = meshv1alpha1.ReasonInstalling
	}
	switch {
	case !w.Exists:
		return condition(t, false, notReady, name+" is not created yet")
	case w.Stalled != "":
		return condition(t, false, meshv1alpha1.ReasonNotReady, fmt.Sprintf("%s: %d/%d %s ready; %s", name, w.Ready, w.Desired, unit, w.Stalled))
	case w.Desired == 0:
		return condition(t, false, notReady, fmt.Sprintf("%s: no %s scheduled yet; check the component's nodeSelector and tolerations", name, unit))
	case w.Ready < w.Desired:
		return condition(t, false, notReady, fmt.Sprintf("%s: %d/%d %s ready; see `kubectl get pods -l %s=%s`", name, w.Ready, w.Desired, unit, "app.kubernetes.io/component", componentLabelValue(t)))
	default:
		return condition(t, true, meshv1alpha1.ReasonReady, fmt.Sprintf("%s: %d/%d %s ready", name, w.Ready, w.Desired, unit))
	}
}

func componentLabelValue(conditionType string) string {
	switch conditionType {
	case meshv1alpha1.MeshConditionControlPlaneReady:
		return "controlplane"
	case meshv1alpha1.MeshConditionCNIReady:
		return "cni"
	default:
		return "ztunnel"
	}
}

func identityCondition(id identityState) metav1.Condition {
	if id.Reason == "" {
		return condition(meshv1alpha1.MeshConditionIdentityReady, false, meshv1alpha1.ReasonInstalling, "the certificate issuer is not checked yet")
	}
	return condition(meshv1alpha1.MeshConditionIdentityReady, id.Ready, id.Reason, id.Message)
}

// upgradingCondition shows a version change (or a ztunnel template change,
// which is also rolled out node by node) and its progress.
func upgradingCondition(obs observation) metav1.Condition {
	const t = meshv1alpha1.MeshConditionUpgrading
	p := obs.Plan
	if p.Refused != nil {
		return condition(t, false, refusalReason(p.Refused), p.Refused.Error())
	}
	rollingNodes := p.Installed != "" && !obs.Nodes.Done()
	if !p.Upgrading() && !rollingNodes {
		return condition(t, false, meshv1alpha1.ReasonUpToDate, "every component runs "+p.Target)
	}
	progress := upgradeProgress(obs)
	switch {
	case obs.Nodes.Failed != "":
		return condition(t, true, meshv1alpha1.ReasonUpgradeFailed,
			"stopped at "+obs.Nodes.Failed+"; fix that node (kubectl describe pod) and the upgrade resumes; "+progress)
	case obs.Cluster.ControlPlane.Stalled != "" && upgradeStep(p, obs.Cluster) == meshv1alpha1.UpgradeStepControlPlane:
		return condition(t, true, meshv1alpha1.ReasonUpgradeFailed, "stopped at the control plane: "+obs.Cluster.ControlPlane.Stalled)
	case p.Paused:
		return condition(t, true, meshv1alpha1.ReasonUpgradePaused, "paused by spec.upgrade.paused; "+progress)
	default:
		return condition(t, true, meshv1alpha1.ReasonUpgradeInProgress, progress)
	}
}

// upgradeProgress is the human summary, e.g. "0.1.0 → 0.2.0, ztunnel: 3/10 nodes (replacing node-4)"
// or "0.1.0 → 0.2.0, waypoints: 1/2 updated (next: shop/waypoint)".
func upgradeProgress(obs observation) string {
	p, cs := obs.Plan, obs.Cluster
	head := p.Installed + " → " + p.Target + ", "
	if !p.Upgrading() {
		head = "configuration change, "
	}
	switch upgradeStep(p, cs) {
	case meshv1alpha1.UpgradeStepControlPlane:
		return head + fmt.Sprintf("control plane: %d/%d replicas", cs.ControlPlane.Updated, cs.ControlPlane.Desired)
	case meshv1alpha1.UpgradeStepCNI:
		return head + fmt.Sprintf("CNI agent: %d/%d nodes", cs.CNI.Updated, cs.CNI.Desired)
	case meshv1alpha1.UpgradeStepWaypoints:
		behind := waypointsBehind(cs.Waypoints, p.Target)
		return head + fmt.Sprintf("waypoints: %d/%d updated (next: %s)", len(cs.Waypoints)-len(behind), len(cs.Waypoints), behind[0])
	}
	msg := head + fmt.Sprintf("ztunnel: %d/%d nodes", obs.Nodes.Updated, obs.Nodes.Total)
	if obs.Nodes.Transition != "" {
		msg += " (replacing " + obs.Nodes.Transition + ")"
	}
	return msg
}

func readyCondition(obs observation, components []metav1.Condition, upgrading metav1.Condition) metav1.Condition {
	const t = meshv1alpha1.MeshConditionReady
	switch {
	case obs.Err != nil:
		return condition(t, false, meshv1alpha1.ReasonApplyFailed, errMessage(obs.Err))
	case obs.Plan.Refused != nil:
		return condition(t, false, refusalReason(obs.Plan.Refused), obs.Plan.Refused.Error())
	case upgrading.Reason == meshv1alpha1.ReasonUpgradeFailed:
		return condition(t, false, meshv1alpha1.ReasonUpgradeFailed, upgrading.Message)
	}
	var notReady []string
	for _, c := range components {
		if c.Status != metav1.ConditionTrue {
			notReady = append(notReady, c.Type+" ("+c.Message+")")
		}
	}
	if len(notReady) > 0 {
		return condition(t, false, meshv1alpha1.ReasonComponentsNotReady, "not ready: "+strings.Join(notReady, "; "))
	}
	if upgrading.Status == metav1.ConditionTrue {
		return condition(t, false, upgrading.Reason, upgrading.Message)
	}
	// Ready pods are not enough: each workload controller must also report
	// every pod on the current template at the target version.
	for _, w := range []struct {
		name string
		w    workloadState
	}{{"control plane", obs.Cluster.ControlPlane}, {"CNI agent", obs.Cluster.CNI}, {"ztunnel", obs.Cluster.ZTunnel}} {
		if !rolledOutAt(w.w, obs.Plan.Target) {
			return condition(t, false, meshv1alpha1.ReasonComponentsNotReady,
				fmt.Sprintf("%s: %d/%d pods run the current template of %s", w.name, w.w.Updated, w.w.Desired, obs.Plan.Target))
		}
	}
	return condition(t, true, meshv1alpha1.ReasonReady, "mesh "+obs.Plan.Target+" is ready")
}

func refusalReason(err error) string {
	if errors.Is(err, versions.ErrSkew) {
		return meshv1alpha1.ReasonVersionSkew
	}
	return meshv1alpha1.ReasonUnsupportedVersion
}

// errMessage bounds an error for a condition message (the API allows 32768).
func errMessage(err error) string {
	if err == nil {
		return "unknown error"
	}
	const maxLen = 1024
	msg := err.Error()
	if len(msg) > maxLen {
		msg = msg[:maxLen] + "…"
	}
	return msg
}

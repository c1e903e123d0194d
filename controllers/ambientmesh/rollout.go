package ambientmesh

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/types"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controllers/ambientmesh/manifests"
	"github.com/ambientmesh/ambient-operator/internal/versions"
)

// The rollout is decided by pure functions of what the cluster shows, never
// of what the operator remembers: a restarted operator reads the same
// objects and takes the same decision, so it resumes an upgrade where it
// stopped without replacing a node twice.

// workloadState is what the controller reads of one component's workload.
type workloadState struct {
	Exists bool
	// Version is the version label of the pod template.
	Version string
	// Desired, Ready and Updated count pods (Deployment replicas or nodes).
	Desired, Ready, Updated int32
	// RolledOut: the workload controller has seen the current template and
	// every desired pod runs it and is ready.
	RolledOut bool
	// Stalled explains why a rollout stopped progressing (empty if it did not).
	Stalled string
}

// ztunnelPod is what the node-by-node upgrade needs of one ztunnel pod.
type ztunnelPod struct {
	Name        string
	UID         types.UID
	Node        string
	Version     string
	Hash        string
	Ready       bool
	Terminating bool
	Created     time.Time
}

// waypointDeployment is a waypoint proxy's Deployment. The Waypoint and
// Gateway controllers render it; the rollout only reads its version.
type waypointDeployment struct {
	// Key is namespace/name.
	Key     string
	Version string
}

// clusterState is everything the rollout decisions read.
type clusterState struct {
	ControlPlane workloadState
	CNI          workloadState
	ZTunnel      workloadState
	// ZTunnelPods are the ztunnel pods scheduled to a node.
	ZTunnelPods []ztunnelPod
	// Waypoints are the waypoint proxies' Deployments, sorted by Key.
	Waypoints []waypointDeployment
}

// versionPlan says which version each component is rendered at.
type versionPlan struct {
	Target string
	// Installed is the oldest version any component runs; empty on a fresh install.
	Installed string
	Versions  manifests.Versions
	// Refused is set when the target cannot be installed from Installed.
	Refused error
	// Paused: spec.upgrade.paused holds components at their current version.
	Paused bool
}

// Upgrading reports whether a version change is being rolled out (or held).
func (p versionPlan) Upgrading() bool {
	return p.Refused == nil && p.Installed != "" && p.Installed != p.Target
}

// installedVersion is the oldest version found on the component workloads,
// ztunnel pods and waypoint proxies, or "" when none exists.
func installedVersion(cs clusterState) string {
	var found []string
	for _, w := range []workloadState{cs.ControlPlane, cs.CNI, cs.ZTunnel} {
		if w.Exists && w.Version != "" {
			found = append(found, w.Version)
		}
	}
	for _, p := range cs.ZTunnelPods {
		if p.Version != "" {
			found = append(found, p.Version)
		}
	}
	for _, w := range cs.Waypoints {
		if w.Version != "" {
			found = append(found, w.Version)
		}
	}
	if len(found) == 0 {
		return ""
	}
	return slices.MinFunc(found, versions.Compare)
}

// planVersions moves components to target in order: the control plane
// first; the CNI agent once the control plane runs target and is ready;
// ztunnel once the CNI agent is too. A refused or paused upgrade keeps every
// component at the version it runs (a deleted one is recreated at the oldest
// installed version).
func planVersions(target string, paused bool, cs clusterState) versionPlan {
	target = versions.Normalize(target)
	p := versionPlan{Target: target, Installed: installedVersion(cs), Paused: paused}
	fallback := p.Installed
	if fallback == "" {
		fallback = target
	}
	current := func(w workloadState) string {
		if w.Exists && w.Version != "" {
			return w.Version
		}
		return fallback
	}
	p.Versions = manifests.Versions{ControlPlane: current(cs.ControlPlane), CNI: current(cs.CNI), ZTunnel: current(cs.ZTunnel)}
	if err := versions.Check(p.Installed, target); err != nil {
		p.Refused = err
		if p.Installed == "" {
			p.Versions = manifests.Versions{}
		}
		return p
	}
	if paused && p.Upgrading() {
		return p
	}
	p.Versions.ControlPlane = target
	if rolledOutAt(cs.ControlPlane, target) {
		p.Versions.CNI = target
		if rolledOutAt(cs.CNI, target) {
			p.Versions.ZTunnel = target
		}
	}
	return p
}

func rolledOutAt(w workloadState, version string) bool {
	return w.Exists && w.Version == version && w.RolledOut
}

// nodePlan is the decision of the node-by-node ztunnel replacement.
type nodePlan struct {
	// Rolling: some ztunnel pod (running or terminating) still has an
	// outdated template, so a rollout is in progress.
	Rolling bool
	// Updated and Total count nodes whose ztunnel runs the current template.
	Updated, Total int32
	// Transition names the node whose ztunnel is being replaced (or a
	// description when its pod is not created yet).
	Transition string
	// Delete is the next outdated pod to delete, when no node is in transition.
	Delete *ztunnelPod
	// Failed names the node whose new ztunnel did not become ready in time.
	Failed string
	// RecheckAfter is when the Failed decision may change without any event.
	RecheckAfter time.Duration
}

// Done reports whether no ztunnel pod runs an outdated template.
func (n nodePlan) Done() bool { return !n.Rolling }

// planZTunnelNodes picks the next node whose ztunnel to replace. At most one
// node is in transition: a pod being deleted, a node waiting for its new pod,
// or a new pod not ready yet all hold the rollout. A new pod that is not
// ready within timeout stops the rollout and names its node. Outdated pods
// are replaced in node-name order so the progress is predictable. With no
// outdated pod there is no rollout: an unready pod is then a plain
// readiness problem (ZTunnelReady), not an upgrade step.
func planZTunnelNodes(pods []ztunnelPod, desiredHash string, desiredNodes int32, timeout time.Duration, now time.Time) nodePlan {
	plan := nodePlan{Total: max(desiredNodes, int32(len(pods)))}
	var outdated, fresh []ztunnelPod
	live := int32(0)
	for _, p := range pods {
		if p.Hash != desiredHash {
			plan.Rolling = true
		}
		switch {
		case p.Terminating:
			if p.Hash != desiredHash {
				plan.Transition = p.Node
			}
		case p.Hash != desiredHash:
			live++
			outdated = append(outdated, p)
		case !p.Ready:
			live++
			fresh = append(fresh, p)
		default:
			live++
			plan.Updated++
		}
	}
	if !plan.Rolling {
		return plan
	}
	for _, p := range fresh {
		plan.Transition = p.Node
		if waited := now.Sub(p.Created); waited >= timeout {
			plan.Failed = fmt.Sprintf("node %s: the new ztunnel pod %s is not ready after %s", p.Node, p.Name, waited.Round(time.Second))
		} else {
			plan.RecheckAfter = timeout - waited
		}
	}
	if plan.Transition != "" || len(outdated) == 0 {
		return plan
	}
	if live < desiredNodes {
		plan.Transition = fmt.Sprintf("waiting for %d ztunnel pod(s) to be created", desiredNodes-live)
		return plan
	}
	slices.SortFunc(outdated, func(a, b ztunnelPod) int { return strings.Compare(a.Node, b.Node) })
	plan.Delete = &outdated[0]
	return plan
}

// upgradeStatus is status.upgrade, or nil when no upgrade is in progress.
func upgradeStatus(p versionPlan, cs clusterState, nodes nodePlan) *meshv1alpha1.UpgradeStatus {
	if !p.Upgrading() && nodes.Done() {
		return nil
	}
	if !p.Upgrading() && p.Installed == "" {
		return nil
	}
	st := &meshv1alpha1.UpgradeStatus{
		FromVersion:  p.Installed,
		ToVersion:    p.Target,
		Step:         upgradeStep(p, cs),
		NodesUpdated: nodes.Updated,
		NodesTotal:   nodes.Total,
	}
	if st.Step == meshv1alpha1.UpgradeStepZTunnel {
		st.Node = nodes.Transition
		if nodes.Delete != nil && st.Node == "" {
			st.Node = nodes.Delete.Node
		}
	}
	return st
}

// upgradeStep is the first component not yet running the target. The
// waypoint controllers move a waypoint once ztunnel runs the target on
// every node (status.components.ztunnel.version), so Waypoints comes last.
func upgradeStep(p versionPlan, cs clusterState) meshv1alpha1.UpgradeComponent {
	switch {
	case !rolledOutAt(cs.ControlPlane, p.Target):
		return meshv1alpha1.UpgradeStepControlPlane
	case !rolledOutAt(cs.CNI, p.Target):
		return meshv1alpha1.UpgradeStepCNI
	case rolledOutAt(cs.ZTunnel, p.Target) && len(waypointsBehind(cs.Waypoints, p.Target)) > 0:
		return meshv1alpha1.UpgradeStepWaypoints
	default:
		return meshv1alpha1.UpgradeStepZTunnel
	}
}

// waypointsBehind are the waypoint proxies whose template is not at target
// yet. A waypoint counts as updated once its template is: its own Ready
// condition reports the rollout, so one broken waypoint does not hold the
// mesh's upgrade.
func waypointsBehind(waypoints []waypointDeployment, target string) []string {
	var behind []string
	for _, w := range waypoints {
		if w.Version != target {
			behind = append(behind, w.Key)
		}
	}
	return behind
}

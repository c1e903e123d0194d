package translate

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
)

// TargetState is what the cluster says about one of a MeshPolicy's targetRefs.
type TargetState struct {
	Ref meshv1.PolicyTargetReference
	// Exists is false when the referenced object is missing (or, for a Namespace, names
	// another namespace than the policy's).
	Exists bool
	// Waypoint is the existing waypoint that carries the target's traffic, possibly of
	// another namespace (see CarryingWaypoint); zero when none does.
	Waypoint types.NamespacedName
}

// Enforcement is what the proxies that must enforce a MeshPolicy hold of it: the status
// writer gathers it from the Waypoints' conditions and the xDS server's ACKs.
type Enforcement struct {
	// Waypoints: one entry per distinct Waypoint that TargetStates names (policies with
	// targetRefs).
	Waypoints []WaypointEnforcement
	// Workloads counts the workloads a policy without targetRefs selects
	// (SelectedWorkloads).
	Workloads int
	// Nodes: the ztunnel of each node that runs one of them.
	Nodes []NodeEnforcement
}

// WaypointEnforcement is one waypoint's part in enforcing a policy.
type WaypointEnforcement struct {
	Waypoint types.NamespacedName
	// Kind defines the waypoint: "Waypoint" or "Gateway" (WaypointKind); messages name it.
	Kind string
	// Ready is the waypoint's Ready condition (written by the operator; a Gateway's
	// Programmed); nil when absent.
	Ready *metav1.Condition
	// Sent: the waypoint's published configuration was built from this generation of the
	// policy, and serves every target of the policy that uses this waypoint.
	Sent    bool
	Proxies ProxySync
}

// NodeEnforcement is the part of one node's ztunnel.
type NodeEnforcement struct {
	Node string
	// Sent: what the ztunnel needs is published (the policy's Authorization, and the
	// selected workloads' Workloads naming it or carrying its mtls mode).
	Sent    bool
	Proxies ProxySync
}

// ProxySync is what the connected proxies of a waypoint, or a node's ztunnel, hold of
// the configuration that contains the policy.
type ProxySync struct {
	// Connected counts proxies with an open xDS stream.
	Connected int
	// Synced: at least one is connected and every connected one ACKed that configuration.
	Synced bool
	// LastNack quotes a connected proxy's last rejection, if it has not ACKed since.
	LastNack string
}

// PolicyStatus computes the status the control plane reports on a MeshPolicy. conditions
// carry the policy's generation; transition times come from the previous conditions when
// the status did not change, so an unchanged policy is not rewritten.
func PolicyStatus(p *meshv1.MeshPolicy, targets []TargetState, enf Enforcement, now metav1.Time) meshv1.MeshPolicyStatus {
	st := meshv1.MeshPolicyStatus{ObservedGeneration: p.Generation}
	accepted := acceptedCondition(p, targets)
	enforced, by := enforcedCondition(p, targets, enf)
	st.EnforcedBy = by
	for _, c := range []metav1.Condition{accepted, enforced} {
		c.ObservedGeneration = p.Generation
		c.LastTransitionTime = now
		if old := meta.FindStatusCondition(p.Status.Conditions, c.Type); old != nil && old.Status == c.Status {
			c.LastTransitionTime = old.LastTransitionTime
		}
		st.Conditions = append(st.Conditions, c)
	}
	return st
}

func acceptedCondition(p *meshv1.MeshPolicy, targets []TargetState) metav1.Condition {
	c := metav1.Condition{Type: meshv1.PolicyConditionAccepted}
	if p.Spec.Selector != nil {
		if _, err := metav1.LabelSelectorAsSelector(p.Spec.Selector); err != nil {
			c.Status, c.Reason = metav1.ConditionFalse, meshv1.ReasonInvalid
			c.Message = fmt.Sprintf("spec.selector: %v", err)
			return c
		}
	}
	var missing []string
	for _, t := range targets {
		if !t.Exists {
			missing = append(missing, fmt.Sprintf("%s %q", t.Ref.Kind, t.Ref.Name))
		}
	}
	if len(missing) > 0 {
		c.Status, c.Reason = metav1.ConditionFalse, meshv1.ReasonTargetNotFound
		c.Message = "spec.targetRefs: not found in namespace " + p.Namespace + ": " + strings.Join(missing, ", ")
		return c
	}
	c.Status, c.Reason, c.Message = metav1.ConditionTrue, meshv1.ReasonAccepted, "the policy is valid and translated"
	return c
}

func enforcedCondition(p *meshv1.MeshPolicy, targets []TargetState, enf Enforcement) (metav1.Condition, []meshv1.EnforcementPoint) {
	if len(p.Spec.TargetRefs) == 0 {
		return ztunnelEnforced(p, enf)
	}
	return waypointEnforced(p, targets, enf)
}

// maxListed bounds the proxies a message names.
const maxListed = 5

// ztunnelEnforced: a policy without targetRefs is enforced by the ztunnels of the nodes
// that run the workloads it selects.
func ztunnelEnforced(p *meshv1.MeshPolicy, enf Enforcement) (metav1.Condition, []meshv1.EnforcementPoint) {
	c := metav1.Condition{Type: meshv1.PolicyConditionEnforced, Status: metav1.ConditionFalse}
	var problems []string
	for _, n := range enf.Nodes {
		if msg := nodeProblem(n); msg != "" {
			problems = append(problems, msg)
		}
	}
	var by []meshv1.EnforcementPoint
	if len(problems) < len(enf.Nodes) {
		by = []meshv1.EnforcementPoint{meshv1.EnforcedByZTunnel}
	}
	switch {
	case p.HasL7Rules():
		c.Reason = meshv1.ReasonNoWaypoint
		c.Message = "rules with methods, paths, hosts or when are L7 and ztunnel cannot check them: " +
			"ALLOW/AUDIT rules with them match nothing, DENY rules with them deny on their ports and sources alone; " +
			"to enforce them, attach the policy to a Waypoint or Service with targetRefs"
	case enf.Workloads == 0:
		c.Reason = meshv1.ReasonNoWorkloads
		c.Message = "no workload in the mesh " + selectionOf(p) + ", so no ztunnel enforces the policy yet"
	case len(problems) > 0:
		c.Reason = meshv1.ReasonPending
		c.Message = fmt.Sprintf("not yet enforced on %d of the %d node(s) running the %d selected workload(s): %s",
			len(problems), len(enf.Nodes), enf.Workloads, listed(problems))
	default:
		c.Status, c.Reason = metav1.ConditionTrue, meshv1.ReasonEnforced
		c.Message = fmt.Sprintf("the ztunnels of the %d node(s) running the %d selected workload(s) ACKed it", len(enf.Nodes), enf.Workloads)
	}
	return c, by
}

func selectionOf(p *meshv1.MeshPolicy) string {
	if p.Spec.Selector != nil {
		return "matches spec.selector in namespace " + p.Namespace
	}
	return "runs in namespace " + p.Namespace + " (or, for a policy in the mesh namespace, anywhere)"
}

func nodeProblem(n NodeEnforcement) string {
	switch {
	case !n.Sent:
		return fmt.Sprintf("node %s: the configuration is not published yet", n.Node)
	case n.Proxies.Synced:
		return ""
	case n.Proxies.Connected == 0:
		return fmt.Sprintf("node %s: its ztunnel is not connected to the control plane", n.Node)
	case n.Proxies.LastNack != "":
		return fmt.Sprintf("node %s: its ztunnel rejected the configuration: %q", n.Node, n.Proxies.LastNack)
	}
	return fmt.Sprintf("node %s: its ztunnel has not ACKed it yet", n.Node)
}

// waypointEnforced: a policy with targetRefs is enforced by the waypoints that carry its
// targets' traffic, once each is Ready and has ACKed the configuration that contains it.
func waypointEnforced(p *meshv1.MeshPolicy, targets []TargetState, enf Enforcement) (metav1.Condition, []meshv1.EnforcementPoint) {
	c := metav1.Condition{Type: meshv1.PolicyConditionEnforced, Status: metav1.ConditionFalse}
	var unserved []string
	for _, t := range targets {
		if t.Waypoint.Name == "" {
			unserved = append(unserved, fmt.Sprintf("%s %q", t.Ref.Kind, t.Ref.Name))
		}
	}
	var notReady, pending, enforcing []string
	for _, w := range enf.Waypoints {
		ready, msg := waypointProblem(p.Namespace, w)
		switch {
		case !ready:
			notReady = append(notReady, msg)
		case msg != "":
			pending = append(pending, msg)
		default:
			enforcing = append(enforcing, waypointLabel(p.Namespace, w))
		}
	}
	var by []meshv1.EnforcementPoint
	if len(enforcing) > 0 {
		by = []meshv1.EnforcementPoint{meshv1.EnforcedByWaypoint}
	}
	switch {
	case p.Spec.EffectiveAction() == meshv1.ActionAudit:
		c.Reason, by = meshv1.ReasonUnsupported, nil
		c.Message = "waypoints do not apply AUDIT policies (they change no decision); " +
			"to audit L4 traffic at ztunnel, use a policy without targetRefs"
	case len(unserved) > 0:
		c.Reason = meshv1.ReasonNoWaypoint
		c.Message = "no waypoint carries the traffic of " + strings.Join(unserved, ", ") +
			", so the policy is not enforced there; create a Waypoint and label the target with " +
			meshv1.LabelUseWaypoint + "=<name>"
	case len(notReady) > 0:
		c.Reason = meshv1.ReasonWaypointNotReady
		c.Message = listed(append(notReady, pending...))
	case len(pending) > 0:
		c.Reason = meshv1.ReasonPending
		c.Message = listed(pending)
	default:
		c.Status, c.Reason = metav1.ConditionTrue, meshv1.ReasonEnforced
		c.Message = "enforced by " + strings.Join(enforcing, ", ") +
			": Ready, and every connected proxy ACKed the configuration that contains this generation"
	}
	return c, by
}

// waypointProblem says why a waypoint does not enforce the policy of namespace ("" when
// it does); ready is false when the reason is the waypoint's readiness.
func waypointProblem(namespace string, w WaypointEnforcement) (ready bool, problem string) {
	name := waypointLabel(namespace, w)
	switch {
	case w.Ready == nil && w.Kind == "Gateway":
		return false, fmt.Sprintf("%s reports no Programmed condition yet", name)
	case w.Ready == nil:
		return false, fmt.Sprintf("%s reports no Ready condition yet", name)
	case w.Ready.Status != metav1.ConditionTrue && w.Kind == "Gateway":
		return false, fmt.Sprintf("%s is not Programmed (%s: %s)", name, w.Ready.Reason, w.Ready.Message)
	case w.Ready.Status != metav1.ConditionTrue:
		return false, fmt.Sprintf("%s is not Ready (%s: %s)", name, w.Ready.Reason, w.Ready.Message)
	case !w.Sent:
		return true, fmt.Sprintf("%s has not been sent this generation of the policy yet", name)
	case w.Proxies.Synced:
		return true, ""
	case w.Proxies.Connected == 0:
		return true, fmt.Sprintf("no proxy of %s is connected to the control plane", name)
	case w.Proxies.LastNack != "":
		return true, fmt.Sprintf("%s rejected its configuration: %q", name, w.Proxies.LastNack)
	}
	return true, fmt.Sprintf("%s has not ACKed the configuration that contains this generation yet", name)
}

// waypointLabel names a waypoint in a message about a policy of namespace: Waypoint "wp",
// Gateway "wp", or with its namespace when it is another one (Waypoint "infra/shared").
func waypointLabel(namespace string, w WaypointEnforcement) string {
	kind, name := w.Kind, w.Waypoint.Name
	if kind == "" {
		kind = "Waypoint"
	}
	if w.Waypoint.Namespace != namespace {
		name = w.Waypoint.String()
	}
	return fmt.Sprintf("%s %q", kind, name)
}

// listed joins problems, naming at most maxListed.
func listed(problems []string) string {
	if len(problems) <= maxListed {
		return strings.Join(problems, "; ")
	}
	return strings.Join(problems[:maxListed], "; ") + fmt.Sprintf("; and %d more", len(problems)-maxListed)
}

// SelectedWorkloads are the pods whose traffic ztunnel checks against a policy without
// targetRefs: running, enrolled, scheduled pods (waypoint pods terminate HBONE
// themselves) that its selector matches in its namespace, or every one of its namespace,
// or, for a policy in the mesh namespace without selector, of the mesh. namespaces maps
// names to Namespaces (for enrollment).
func SelectedWorkloads(mesh Mesh, p *meshv1.MeshPolicy, pods []corev1.Pod, namespaces map[string]*corev1.Namespace) []*corev1.Pod {
	if len(p.Spec.TargetRefs) > 0 {
		return nil
	}
	meshWide := p.Spec.Selector == nil && p.Namespace == mesh.RootNamespace
	var out []*corev1.Pod
	for i := range pods {
		pod := &pods[i]
		if pod.Spec.NodeName == "" || !IsWorkloadPod(pod) || IsWaypointPod(pod) || !IsEnrolled(pod, namespaces[pod.Namespace]) {
			continue
		}
		switch {
		case meshWide:
		case pod.Namespace != p.Namespace:
			continue
		case p.Spec.Selector != nil && !selects(p.Spec.Selector, pod):
			continue
		}
		out = append(out, pod)
	}
	return out
}

// TargetLookup finds the objects a MeshPolicy's targetRefs may name; nil when missing.
// Waypoint finds Waypoints and waypoint Gateways alike (a Waypoint first, see
// MergeWaypoints).
type TargetLookup interface {
	Service(namespace, name string) *corev1.Service
	Waypoint(namespace, name string) *meshv1.Waypoint
	Namespace(name string) *corev1.Namespace
}

// TargetStates resolves a MeshPolicy's targetRefs: whether each exists, and which
// waypoint (if any, of any namespace) carries its traffic, as ztunnel routing decides it.
func TargetStates(p *meshv1.MeshPolicy, lookup TargetLookup) []TargetState {
	var out []TargetState
	ns := lookup.Namespace(p.Namespace)
	for _, ref := range p.Spec.TargetRefs {
		t := TargetState{Ref: ref}
		switch ref.Kind {
		case meshv1.TargetKindWaypoint:
			if lookup.Waypoint(p.Namespace, ref.Name) != nil {
				t.Exists, t.Waypoint = true, types.NamespacedName{Namespace: p.Namespace, Name: ref.Name}
			}
		case meshv1.TargetKindService:
			if svc := lookup.Service(p.Namespace, ref.Name); svc != nil {
				t.Exists = true
				if svc.Labels[meshv1.LabelWaypoint] == "" { // a waypoint's own Service uses none
					t.Waypoint = CarryingWaypoint(lookup, p.Namespace, svc.Labels, ns, meshv1.WaypointForService)
				}
			}
		case meshv1.TargetKindNamespace:
			if ref.Name == p.Namespace && ns != nil {
				t.Exists = true
				t.Waypoint = CarryingWaypoint(lookup, p.Namespace, nil, ns, meshv1.WaypointForService, meshv1.WaypointForWorkload)
			}
		}
		out = append(out, t)
	}
	return out
}

// CarryingWaypoint is the waypoint that carries the traffic of an object of namespace
// (objLabels; ns is its Namespace, nil when unknown): the one its labels name
// (UsedWaypoint), when it exists and carries at least one of kinds from that namespace
// (WaypointInfo.Carries). Zero otherwise.
func CarryingWaypoint(lookup TargetLookup, namespace string, objLabels map[string]string, ns *corev1.Namespace,
	kinds ...meshv1.WaypointTrafficType) types.NamespacedName {
	ref, ok := UsedWaypoint(namespace, objLabels, ns)
	if !ok {
		return types.NamespacedName{}
	}
	wp := lookup.Waypoint(ref.Namespace, ref.Name)
	if wp == nil {
		return types.NamespacedName{}
	}
	info := waypointInfoOf(wp)
	for _, kind := range kinds {
		if info.Carries(kind, namespace, ns) {
			return ref
		}
	}
	return types.NamespacedName{}
}

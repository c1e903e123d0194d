package translate

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
)

// TargetState is what the cluster says about one of a MeshPolicy's targetRefs.
type TargetState struct {
	Ref meshv1.PolicyTargetReference
	// Exists is false when the referenced object is missing (or, for a Namespace, names
	// another namespace than the policy's).
	Exists bool
	// Waypoint is the name of the existing Waypoint that carries the target's traffic;
	// empty when none does.
	Waypoint string
}

// PolicyStatus computes the status the control plane reports on a MeshPolicy. conditions
// carry the policy's generation; transition times come from the previous conditions when
// the status did not change, so an unchanged policy is not rewritten.
func PolicyStatus(p *meshv1.MeshPolicy, targets []TargetState, now metav1.Time) meshv1.MeshPolicyStatus {
	st := meshv1.MeshPolicyStatus{ObservedGeneration: p.Generation}
	accepted := acceptedCondition(p, targets)
	enforced, by := enforcedCondition(p, targets)
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

func enforcedCondition(p *meshv1.MeshPolicy, targets []TargetState) (metav1.Condition, []meshv1.EnforcementPoint) {
	c := metav1.Condition{Type: meshv1.PolicyConditionEnforced}
	if len(p.Spec.TargetRefs) == 0 {
		by := []meshv1.EnforcementPoint{meshv1.EnforcedByZTunnel}
		if p.HasL7Rules() {
			c.Status, c.Reason = metav1.ConditionFalse, meshv1.ReasonNoWaypoint
			c.Message = "rules with methods, paths, hosts or when are L7 and ztunnel cannot check them: " +
				"ALLOW/AUDIT rules with them match nothing, DENY rules with them deny on their ports and sources alone; " +
				"to enforce them, attach the policy to a Waypoint or Service with targetRefs"
			return c, by
		}
		c.Status, c.Reason = metav1.ConditionTrue, meshv1.ReasonEnforced
		c.Message = "enforced by ztunnel on the selected workloads"
		return c, by
	}
	var unserved []string
	for _, t := range targets {
		if t.Waypoint == "" {
			unserved = append(unserved, fmt.Sprintf("%s %q", t.Ref.Kind, t.Ref.Name))
		}
	}
	var by []meshv1.EnforcementPoint
	if len(unserved) < len(targets) {
		by = []meshv1.EnforcementPoint{meshv1.EnforcedByWaypoint}
	}
	if len(unserved) > 0 {
		c.Status, c.Reason = metav1.ConditionFalse, meshv1.ReasonNoWaypoint
		c.Message = "no waypoint carries the traffic of " + strings.Join(unserved, ", ") +
			", so the policy is not enforced there; create a Waypoint and label the target with " +
			meshv1.LabelUseWaypoint + "=<name>"
		return c, by
	}
	c.Status, c.Reason, c.Message = metav1.ConditionTrue, meshv1.ReasonEnforced, "enforced by the waypoint of every target"
	return c, by
}

// WaypointAddresses are the addresses reported in a Waypoint's status: the cluster IPs and
// the DNS name of its Service.
func WaypointAddresses(mesh Mesh, svc *corev1.Service) []meshv1.WaypointAddress {
	if svc == nil {
		return nil
	}
	var out []meshv1.WaypointAddress
	for _, ip := range vips(svc) {
		out = append(out, meshv1.WaypointAddress{Type: meshv1.AddressTypeIPAddress, Value: ip})
	}
	return append(out, meshv1.WaypointAddress{Type: meshv1.AddressTypeHostname, Value: Hostname(mesh, svc)})
}

// WaypointHBONEPort is the port waypoints accept HBONE on.
const WaypointHBONEPort = int32(pb.DefaultHBONEPort)

// TargetLookup finds the objects a MeshPolicy's targetRefs may name; nil when missing.
type TargetLookup interface {
	Service(namespace, name string) *corev1.Service
	Waypoint(namespace, name string) *meshv1.Waypoint
	Namespace(name string) *corev1.Namespace
}

// TargetStates resolves a MeshPolicy's targetRefs: whether each exists, and which
// Waypoint (if any) carries its traffic.
func TargetStates(p *meshv1.MeshPolicy, lookup TargetLookup) []TargetState {
	var out []TargetState
	for _, ref := range p.Spec.TargetRefs {
		t := TargetState{Ref: ref}
		ns := lookup.Namespace(p.Namespace)
		switch ref.Kind {
		case meshv1.TargetKindWaypoint:
			if lookup.Waypoint(p.Namespace, ref.Name) != nil {
				t.Exists, t.Waypoint = true, ref.Name
			}
		case meshv1.TargetKindService:
			if svc := lookup.Service(p.Namespace, ref.Name); svc != nil {
				t.Exists = true
				t.Waypoint = existingWaypoint(lookup, p.Namespace, useWaypoint(svc.Labels, ns), meshv1.WaypointForService)
			}
		case meshv1.TargetKindNamespace:
			if ref.Name == p.Namespace && ns != nil {
				t.Exists = true
				t.Waypoint = existingWaypoint(lookup, p.Namespace, useWaypoint(nil, ns), "")
			}
		}
		out = append(out, t)
	}
	return out
}

// existingWaypoint returns name when that Waypoint exists and serves traffic of kind
// (any kind when empty).
func existingWaypoint(lookup TargetLookup, namespace, name string, kind meshv1.WaypointTrafficType) string {
	if name == "" {
		return ""
	}
	wp := lookup.Waypoint(namespace, name)
	if wp == nil {
		return ""
	}
	if f := wp.Spec.EffectiveFor(); kind != "" && f != kind && f != meshv1.WaypointForAll {
		return ""
	}
	return name
}

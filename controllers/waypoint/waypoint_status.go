package waypoint

import (
	"fmt"
	"net"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
)

// Verdict is a condition's outcome before it is given a condition type:
// the Waypoint and the Gateway report the same facts under their own names.
type Verdict struct {
	OK      bool
	Reason  string
	Message string
}

// ProgrammedVerdict: the proxy's objects are applied as the spec says and
// its Service has an address. Reasons are the Waypoint's; the Gateway
// controller maps them to Gateway API reasons.
func ProgrammedVerdict(obs Observation) Verdict {
	switch {
	case obs.NoMesh != "":
		return Verdict{Reason: meshv1alpha1.ReasonNoMesh, Message: obs.NoMesh}
	case obs.Err != nil:
		return Verdict{Reason: meshv1alpha1.ReasonApplyFailed, Message: errMessage(obs.Err)}
	case obs.Waiting != "":
		return Verdict{Reason: meshv1alpha1.ReasonPending, Message: obs.Waiting}
	case !obs.Deployment.Exists || !obs.ServiceExists:
		return Verdict{Reason: meshv1alpha1.ReasonPending, Message: "creating the Deployment and the Service"}
	case len(obs.ClusterIPs) == 0:
		return Verdict{Reason: meshv1alpha1.ReasonPending, Message: "waiting for the Service's cluster IP"}
	}
	return Verdict{OK: true, Reason: meshv1alpha1.ReasonProgrammed,
		Message: fmt.Sprintf("Deployment and Service are created; the proxy runs mesh version %s", obs.Version)}
}

// ReadyVerdict: at least one proxy replica is available, as the Deployment
// controller reports it.
func ReadyVerdict(obs Observation, namespace, name string) Verdict {
	d := obs.Deployment
	switch {
	case d.Available >= 1:
		return Verdict{OK: true, Reason: meshv1alpha1.ReasonReady,
			Message: fmt.Sprintf("%d/%d replicas available", d.Available, d.Desired)}
	case !d.Exists:
		p := ProgrammedVerdict(obs)
		return Verdict{Reason: p.Reason, Message: "no Deployment: " + p.Message}
	}
	return Verdict{Reason: meshv1alpha1.ReasonNoReadyReplicas,
		Message: fmt.Sprintf("0/%d replicas available; see `kubectl get pods -n %s -l %s=%s`", d.Desired, namespace, meshv1alpha1.LabelWaypoint, name)}
}

// computeStatus derives the Waypoint's status from the previous one (for
// condition transition times) and this pass's observation.
func computeStatus(wp *meshv1alpha1.Waypoint, obs Observation, now time.Time) meshv1alpha1.WaypointStatus {
	st := meshv1alpha1.WaypointStatus{
		ObservedGeneration: wp.Generation,
		Addresses:          addresses(obs),
		Replicas:           obs.Deployment.Ready,
		Conditions:         append([]metav1.Condition(nil), wp.Status.Conditions...),
	}
	if obs.ServiceExists {
		st.HBONEPort = meshv1alpha1.PortHBONE
	}
	SetCondition(&st.Conditions, meshv1alpha1.WaypointConditionProgrammed, ProgrammedVerdict(obs), wp.Generation, now)
	SetCondition(&st.Conditions, meshv1alpha1.WaypointConditionReady, ReadyVerdict(obs, wp.Namespace, wp.Name), wp.Generation, now)
	return st
}

// SetCondition sets a condition from a verdict; the transition time moves
// only when the status changes.
func SetCondition(conds *[]metav1.Condition, conditionType string, v Verdict, generation int64, now time.Time) {
	status := metav1.ConditionFalse
	if v.OK {
		status = metav1.ConditionTrue
	}
	meta.SetStatusCondition(conds, metav1.Condition{
		Type: conditionType, Status: status, Reason: v.Reason, Message: v.Message,
		ObservedGeneration: generation, LastTransitionTime: metav1.NewTime(now),
	})
}

// addresses: the Service's cluster IPs, then its hostname.
func addresses(obs Observation) []meshv1alpha1.WaypointAddress {
	if !obs.ServiceExists {
		return nil
	}
	var out []meshv1alpha1.WaypointAddress
	for _, ip := range obs.ClusterIPs {
		if net.ParseIP(ip) != nil {
			out = append(out, meshv1alpha1.WaypointAddress{Type: meshv1alpha1.AddressTypeIPAddress, Value: ip})
		}
	}
	return append(out, meshv1alpha1.WaypointAddress{Type: meshv1alpha1.AddressTypeHostname, Value: obs.Hostname})
}

// errMessage bounds an error for a condition message (the API allows 32768).
func errMessage(err error) string {
	const maxLen = 1024
	msg := err.Error()
	if len(msg) > maxLen {
		msg = msg[:maxLen] + "…"
	}
	return msg
}

package gateway

import (
	"fmt"
	"net"
	"strings"
	"time"

	"k8s.io/utils/ptr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controllers/waypoint"
)

// acceptance is the verdict on a Gateway's spec, before anything is created.
type acceptance struct {
	// Accepted uses Gateway condition reasons.
	Accepted waypoint.Verdict
	// Listeners, in spec order, use listener condition reasons.
	Listeners []listenerAcceptance
}

type listenerAcceptance struct {
	Name     gatewayv1.SectionName
	Accepted waypoint.Verdict
}

// accept decides whether a Gateway can be a waypoint: it needs at least one
// HBONE listener on 15008 and no static addresses. Other listeners are
// reported as not accepted and ignored, as the Gateway API allows.
func accept(gw *gatewayv1.Gateway) acceptance {
	var acc acceptance
	var valid int
	var invalid []string
	for _, l := range gw.Spec.Listeners {
		v := acceptListener(l)
		acc.Listeners = append(acc.Listeners, listenerAcceptance{Name: l.Name, Accepted: v})
		if v.OK {
			valid++
		} else {
			invalid = append(invalid, string(l.Name))
		}
	}
	switch {
	case len(gw.Spec.Addresses) > 0:
		acc.Accepted = waypoint.Verdict{Reason: string(gatewayv1.GatewayReasonUnsupportedAddress),
			Message: "spec.addresses is not supported: a waypoint's address is the cluster IP of its Service"}
	case valid == 0:
		acc.Accepted = waypoint.Verdict{Reason: string(gatewayv1.GatewayReasonListenersNotValid),
			Message: fmt.Sprintf("a waypoint needs a listener with protocol %s on port %d", ProtocolHBONE, meshv1alpha1.PortHBONE)}
	case len(invalid) > 0:
		acc.Accepted = waypoint.Verdict{OK: true, Reason: string(gatewayv1.GatewayReasonListenersNotValid),
			Message: "listeners not supported and ignored: " + strings.Join(invalid, ", ")}
	default:
		acc.Accepted = waypoint.Verdict{OK: true, Reason: string(gatewayv1.GatewayReasonAccepted), Message: "accepted as an ambient mesh waypoint"}
	}
	return acc
}

func acceptListener(l gatewayv1.Listener) waypoint.Verdict {
	switch {
	case l.Protocol != ProtocolHBONE:
		return waypoint.Verdict{Reason: string(gatewayv1.ListenerReasonUnsupportedProtocol),
			Message: fmt.Sprintf("protocol %s is not supported: a waypoint listens with %s on port %d", l.Protocol, ProtocolHBONE, meshv1alpha1.PortHBONE)}
	case l.Port != meshv1alpha1.PortHBONE:
		return waypoint.Verdict{Reason: string(gatewayv1.ListenerReasonPortUnavailable),
			Message: fmt.Sprintf("port %d is not supported: a waypoint accepts HBONE on port %d", l.Port, meshv1alpha1.PortHBONE)}
	}
	return waypoint.Verdict{OK: true, Reason: string(gatewayv1.ListenerReasonAccepted), Message: "HBONE listener"}
}

// programmed: the Gateway API has no Ready condition in use, so Programmed
// carries the whole truth: objects created, an address, and at least one
// available proxy replica.
func programmed(acc acceptance, obs waypoint.Observation, namespace, name string) waypoint.Verdict {
	if !acc.Accepted.OK {
		return waypoint.Verdict{Reason: string(gatewayv1.GatewayReasonInvalid), Message: "not accepted: " + acc.Accepted.Message}
	}
	p := waypoint.ProgrammedVerdict(obs)
	switch {
	case !p.OK && obs.ServiceExists && len(obs.ClusterIPs) == 0:
		return waypoint.Verdict{Reason: string(gatewayv1.GatewayReasonAddressNotAssigned), Message: p.Message}
	case !p.OK:
		return waypoint.Verdict{Reason: string(gatewayv1.GatewayReasonPending), Message: p.Message}
	}
	if r := waypoint.ReadyVerdict(obs, namespace, name); !r.OK {
		return waypoint.Verdict{Reason: string(gatewayv1.GatewayReasonPending), Message: r.Message}
	}
	return waypoint.Verdict{OK: true, Reason: string(gatewayv1.GatewayReasonProgrammed), Message: p.Message}
}

// computeStatus derives the Gateway's status. Conditions of other types
// (another controller's) are kept, as the Gateway API requires.
func computeStatus(gw *gatewayv1.Gateway, acc acceptance, obs waypoint.Observation, now time.Time) gatewayv1.GatewayStatus {
	gen := gw.Generation
	prev := gw.Status.DeepCopy()
	st := gatewayv1.GatewayStatus{Conditions: prev.Conditions, AttachedListenerSets: prev.AttachedListenerSets}
	prog := programmed(acc, obs, gw.Namespace, gw.Name)
	waypoint.SetCondition(&st.Conditions, string(gatewayv1.GatewayConditionAccepted), acc.Accepted, gen, now)
	waypoint.SetCondition(&st.Conditions, string(gatewayv1.GatewayConditionProgrammed), prog, gen, now)
	if obs.ServiceExists {
		st.Addresses = addresses(obs)
	}
	for _, l := range acc.Listeners {
		// No route kinds: GAMMA routes attach to Services, not to this listener.
		ls := gatewayv1.ListenerStatus{Name: l.Name}
		for _, old := range prev.Listeners {
			if old.Name == l.Name {
				ls.Conditions = old.Conditions
			}
		}
		listenerProgrammed := waypoint.Verdict{Reason: string(gatewayv1.ListenerReasonInvalid), Message: l.Accepted.Message}
		if l.Accepted.OK {
			listenerProgrammed = waypoint.Verdict{OK: prog.OK, Reason: prog.Reason, Message: prog.Message}
		}
		waypoint.SetCondition(&ls.Conditions, string(gatewayv1.ListenerConditionAccepted), l.Accepted, gen, now)
		waypoint.SetCondition(&ls.Conditions, string(gatewayv1.ListenerConditionProgrammed), listenerProgrammed, gen, now)
		waypoint.SetCondition(&ls.Conditions, string(gatewayv1.ListenerConditionResolvedRefs),
			waypoint.Verdict{OK: true, Reason: string(gatewayv1.ListenerReasonResolvedRefs), Message: "an HBONE listener refers to nothing"}, gen, now)
		waypoint.SetCondition(&ls.Conditions, string(gatewayv1.ListenerConditionConflicted),
			waypoint.Verdict{Reason: string(gatewayv1.ListenerReasonNoConflicts), Message: "no conflicts"}, gen, now)
		st.Listeners = append(st.Listeners, ls)
	}
	return st
}

func addresses(obs waypoint.Observation) []gatewayv1.GatewayStatusAddress {
	var out []gatewayv1.GatewayStatusAddress
	for _, ip := range obs.ClusterIPs {
		if net.ParseIP(ip) != nil {
			out = append(out, gatewayv1.GatewayStatusAddress{Type: ptr.To(gatewayv1.IPAddressType), Value: ip})
		}
	}
	return append(out, gatewayv1.GatewayStatusAddress{Type: ptr.To(gatewayv1.HostnameAddressType), Value: obs.Hostname})
}

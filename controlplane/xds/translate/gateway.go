package translate

import (
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
)

// Waypoints from the Gateway API. The operator gives a Gateway of the waypoint class the
// same ServiceAccount, Deployment and Service as a Waypoint of that name (controllers/
// gateway); the control plane reads it as that Waypoint (WaypointFromGateway), so that
// selection, the waypoint's Envoy configuration and status treat both alike. The one list
// of waypoints is MergeWaypoints: every reader of waypoints goes through it.
//
// A Gateway counts when it is of class WaypointGatewayClass, the operator accepted it
// (its Accepted condition is True: the operator's verdict, not re-derived here) and it
// has an HBONE listener on 15008. Its traffic type comes from the label
// ambientmesh.dev/waypoint-for; the namespaces it allows from that listener's
// allowedRoutes.namespaces (All, or Selector with a selector; anything else is Same); its
// Ready condition is the Gateway's Programmed one (the operator's Programmed carries the
// proxy's availability, as a Waypoint's Ready does).
//
// A Waypoint and such a Gateway of the same name and namespace would share one proxy (the
// operator provisions only the first and reports the other not Programmed): the control
// plane takes the Waypoint and ignores the Gateway, whichever came first, so the
// configuration does not depend on creation order.

// WaypointGatewayClass is the GatewayClass of waypoint Gateways (the one the operator
// creates, controllers/gateway.ClassName). Other classes naming the operator's controller
// are not read as waypoints.
const WaypointGatewayClass = "ambientmesh-waypoint"

// waypointListenerProtocol is the protocol of a waypoint Gateway's listener.
const waypointListenerProtocol gatewayv1.ProtocolType = "HBONE"

// gatewayKind is the TypeMeta a Waypoint converted from a Gateway carries (see
// WaypointKind).
var gatewayKind = metav1.TypeMeta{APIVersion: gatewayv1.GroupVersion.String(), Kind: "Gateway"}

// WaypointFromGateway reads a Gateway as the Waypoint it stands for; ok is false when the
// Gateway is not a waypoint (another class, not accepted, or no HBONE listener on 15008).
// The result carries only what the control plane reads of a Waypoint: namespace, name,
// spec.for, spec.allowedNamespaces and the Ready condition.
func WaypointFromGateway(gw *gatewayv1.Gateway) (*meshv1.Waypoint, bool) {
	if gw.Spec.GatewayClassName != WaypointGatewayClass ||
		!meta.IsStatusConditionTrue(gw.Status.Conditions, string(gatewayv1.GatewayConditionAccepted)) {
		return nil, false
	}
	var hbone *gatewayv1.Listener
	for i := range gw.Spec.Listeners {
		if l := &gw.Spec.Listeners[i]; l.Protocol == waypointListenerProtocol && l.Port == meshv1.PortHBONE {
			hbone = l
			break
		}
	}
	if hbone == nil {
		return nil, false
	}
	wp := &meshv1.Waypoint{
		TypeMeta:   gatewayKind,
		ObjectMeta: metav1.ObjectMeta{Namespace: gw.Namespace, Name: gw.Name},
		Spec: meshv1.WaypointSpec{
			For:               waypointForLabel(gw.Labels[meshv1.LabelWaypointFor]),
			AllowedNamespaces: allowedNamespacesOf(hbone),
		},
	}
	if programmed := meta.FindStatusCondition(gw.Status.Conditions, string(gatewayv1.GatewayConditionProgrammed)); programmed != nil {
		ready := *programmed
		ready.Type = meshv1.WaypointConditionReady
		wp.Status.Conditions = []metav1.Condition{ready}
	}
	return wp, true
}

// waypointForLabel reads the ambientmesh.dev/waypoint-for label; service when unset or
// unknown (a Gateway has no admission check of its labels).
func waypointForLabel(v string) meshv1.WaypointTrafficType {
	switch f := meshv1.WaypointTrafficType(v); f {
	case meshv1.WaypointForWorkload, meshv1.WaypointForAll, meshv1.WaypointForNone:
		return f
	}
	return meshv1.WaypointForService
}

// allowedNamespacesOf maps the listener's allowedRoutes.namespaces onto the Waypoint's
// field: All, Selector with a selector; nil (Same) otherwise, None included.
func allowedNamespacesOf(l *gatewayv1.Listener) *meshv1.WaypointAllowedNamespaces {
	if l.AllowedRoutes == nil || l.AllowedRoutes.Namespaces == nil || l.AllowedRoutes.Namespaces.From == nil {
		return nil
	}
	ns := l.AllowedRoutes.Namespaces
	switch *ns.From {
	case gatewayv1.NamespacesFromAll:
		return &meshv1.WaypointAllowedNamespaces{From: meshv1.NamespacesFromAll}
	case gatewayv1.NamespacesFromSelector:
		if ns.Selector != nil {
			return &meshv1.WaypointAllowedNamespaces{From: meshv1.NamespacesFromSelector, Selector: ns.Selector.DeepCopy()}
		}
	}
	return nil
}

// WaypointKind names the kind of object that defines a waypoint, for messages: "Gateway"
// for one read from a Gateway, else "Waypoint".
func WaypointKind(wp *meshv1.Waypoint) string {
	if wp.TypeMeta == gatewayKind {
		return gatewayKind.Kind
	}
	return "Waypoint"
}

// MergeWaypoints is the list of waypoints: the Waypoints, then the Gateways that are
// waypoints (WaypointFromGateway) and share no namespace and name with a Waypoint.
func MergeWaypoints(waypoints []meshv1.Waypoint, gateways []gatewayv1.Gateway) []meshv1.Waypoint {
	out := make([]meshv1.Waypoint, 0, len(waypoints)+len(gateways))
	taken := make(map[types.NamespacedName]bool, len(waypoints))
	for i := range waypoints {
		out = append(out, waypoints[i])
		taken[types.NamespacedName{Namespace: waypoints[i].Namespace, Name: waypoints[i].Name}] = true
	}
	for i := range gateways {
		if wp, ok := WaypointFromGateway(&gateways[i]); ok && !taken[types.NamespacedName{Namespace: wp.Namespace, Name: wp.Name}] {
			out = append(out, *wp)
		}
	}
	return out
}

package translate

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
)

// Waypoint selection, as Istio's use-waypoint: which Waypoint, if any, carries the traffic
// of a Service (service traffic) or of a pod (workload traffic, addressed to its IP).
//
//   - The object's own ambientmesh.dev/use-waypoint label wins over its namespace's: a
//     Service's for service traffic, a pod's for workload traffic. The value "none" opts
//     out at that level (a Service labelled none in a namespace that uses a waypoint).
//   - The label names a Waypoint of the object's namespace, or of the namespace in
//     ambientmesh.dev/use-waypoint-namespace on the same object (label values cannot
//     hold "/", so <namespace>/<name> takes two labels).
//   - The Waypoint counts only when it exists, allows the object's namespace
//     (spec.allowedNamespaces; its own namespace always) and handles that kind of
//     traffic (spec.for): WaypointInfo.Carries. Otherwise the traffic goes as if no
//     waypoint were named.
//   - "Waypoint" includes a Gateway of the waypoint class, read as a Waypoint of its name
//     (see WaypointFromGateway).

// WaypointInfo is a Waypoint resolved to where it is reached.
type WaypointInfo struct {
	Namespace string
	Name      string
	For       meshv1.WaypointTrafficType
	// AllowedNamespaces is the Waypoint's spec.allowedNamespaces (nil: its own only).
	AllowedNamespaces *meshv1.WaypointAllowedNamespaces
	// Address is the cluster IP of the waypoint's Service; empty while it has none.
	Address string
	// Identity is the SPIFFE id of the waypoint's service account.
	Identity string
}

// UsedWaypoint names the Waypoint an object's labels send its traffic to: the object's
// ambientmesh.dev/use-waypoint label, else its namespace's (ns; nil when unknown), with
// the Waypoint's namespace from ambientmesh.dev/use-waypoint-namespace on the same object,
// else the object's namespace. ok is false when no waypoint is named or the winning label
// is "none" (or empty).
func UsedWaypoint(namespace string, objLabels map[string]string, ns *corev1.Namespace) (ref types.NamespacedName, ok bool) {
	from := objLabels
	if _, own := objLabels[meshv1.LabelUseWaypoint]; !own {
		if ns == nil {
			return types.NamespacedName{}, false
		}
		from = ns.Labels
	}
	name := from[meshv1.LabelUseWaypoint]
	if name == "" || name == meshv1.UseWaypointNone {
		return types.NamespacedName{}, false
	}
	ref = types.NamespacedName{Namespace: from[meshv1.LabelUseWaypointNamespace], Name: name}
	if ref.Namespace == "" {
		ref.Namespace = namespace
	}
	return ref, true
}

// WaypointAllows reports whether objects of namespace (whose Namespace is ns; nil when
// unknown) may use the Waypoint: those of its own namespace always, others as its
// spec.allowedNamespaces says (Same when unset).
func WaypointAllows(wp *meshv1.Waypoint, namespace string, ns *corev1.Namespace) bool {
	return allowsNamespace(wp.Namespace, wp.Spec.AllowedNamespaces, namespace, ns)
}

// Allows is WaypointAllows for a resolved Waypoint.
func (w WaypointInfo) Allows(namespace string, ns *corev1.Namespace) bool {
	return allowsNamespace(w.Namespace, w.AllowedNamespaces, namespace, ns)
}

func allowsNamespace(wpNamespace string, allowed *meshv1.WaypointAllowedNamespaces, namespace string, ns *corev1.Namespace) bool {
	if namespace == wpNamespace {
		return true
	}
	if allowed == nil {
		return false
	}
	switch allowed.From {
	case meshv1.NamespacesFromAll:
		return true
	case meshv1.NamespacesFromSelector:
		if ns == nil || allowed.Selector == nil {
			return false
		}
		sel, err := metav1.LabelSelectorAsSelector(allowed.Selector)
		return err == nil && sel.Matches(labels.Set(ns.Labels))
	}
	return false
}

// Carries reports whether the waypoint takes the traffic of kind (service or workload) of
// objects of namespace (whose Namespace is ns; nil when unknown): it handles that kind and
// allows the namespace. ztunnel routing, the waypoint's own configuration and status all
// decide with it.
func (w WaypointInfo) Carries(kind meshv1.WaypointTrafficType, namespace string, ns *corev1.Namespace) bool {
	return WaypointHandles(w.For, kind) && w.Allows(namespace, ns)
}

// WaypointHandles reports whether a waypoint for: f takes traffic of kind (service or
// workload): its own kind, or both when f is all; none takes nothing.
func WaypointHandles(f, kind meshv1.WaypointTrafficType) bool {
	return f == kind || f == meshv1.WaypointForAll
}

// waypointAddress is where ztunnel sends an object's traffic of kind: the waypoint its
// labels name, when that one is known, allows the object's namespace, handles the kind
// and has an address; nil otherwise.
func waypointAddress(kind meshv1.WaypointTrafficType, namespace string, objLabels map[string]string,
	ns *corev1.Namespace, waypoints map[types.NamespacedName]WaypointInfo) *pb.GatewayAddress {
	ref, ok := UsedWaypoint(namespace, objLabels, ns)
	if !ok {
		return nil
	}
	wp, ok := waypoints[ref]
	if !ok || wp.Address == "" || !wp.Carries(kind, namespace, ns) {
		return nil
	}
	return &pb.GatewayAddress{Address: wp.Address, Identity: wp.Identity}
}

// waypointInfoOf is what selection reads of a Waypoint (no address or identity).
func waypointInfoOf(wp *meshv1.Waypoint) WaypointInfo {
	return WaypointInfo{
		Namespace:         wp.Namespace,
		Name:              wp.Name,
		For:               wp.Spec.EffectiveFor(),
		AllowedNamespaces: wp.Spec.AllowedNamespaces,
	}
}

// ResolveWaypoint finds where a Waypoint is reached: the cluster IP of its Service (the one
// labelled ambientmesh.dev/waypoint=<name>; nil while the operator has not created it) and
// the identity of its service account (the proxy pods' account; serviceAccount when no
// pod is known yet, which the operator names after the Waypoint).
func ResolveWaypoint(mesh Mesh, wp *meshv1.Waypoint, svc *corev1.Service, serviceAccount string) WaypointInfo {
	info := waypointInfoOf(wp)
	if serviceAccount == "" {
		serviceAccount = wp.Name
	}
	info.Identity = pb.SpiffeID(mesh.TrustDomain, wp.Namespace, serviceAccount)
	if svc != nil {
		if ips := ServiceVIPs(svc); len(ips) > 0 {
			info.Address = ips[0]
		}
	}
	return info
}

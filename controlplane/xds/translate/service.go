package translate

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
)

// IsMeshService reports whether a Service becomes a workload API Service: it needs a
// selector (its endpoints are the pods it selects) and a virtual IP to capture.
// ExternalName and headless Services have no VIP for ztunnel to route.
func IsMeshService(svc *corev1.Service) bool {
	if len(svc.Spec.Selector) == 0 || svc.Spec.Type == corev1.ServiceTypeExternalName {
		return false
	}
	return len(ServiceVIPs(svc)) > 0
}

// Hostname is the Service's cluster DNS name, <name>.<namespace>.svc.<cluster domain>.
func Hostname(mesh Mesh, svc *corev1.Service) string {
	return svc.Name + "." + svc.Namespace + ".svc." + mesh.ClusterDomain
}

// ServiceName is the xDS resource name of a Kubernetes Service.
func ServiceName(mesh Mesh, svc *corev1.Service) string {
	return ServiceNameFor(mesh, svc.Namespace, svc.Name)
}

// ServiceNameFor is ServiceName from the Service's namespace and name (for a Service that
// is gone).
func ServiceNameFor(mesh Mesh, namespace, name string) string {
	return pb.ServiceResourceName(namespace, name+"."+namespace+".svc."+mesh.ClusterDomain)
}

// Service translates one Kubernetes Service; nil when it is not a mesh service.
// Endpoints are not listed here: each Workload names its Services (see workload.proto).
// waypoints holds at least the Waypoint the Service's labels name (see UsedWaypoint).
func Service(mesh Mesh, svc *corev1.Service, ns *corev1.Namespace, waypoints map[types.NamespacedName]WaypointInfo) *pb.Service {
	if !IsMeshService(svc) {
		return nil
	}
	out := &pb.Service{
		Name:      svc.Name,
		Namespace: svc.Namespace,
		Hostname:  Hostname(mesh, svc),
		Vips:      ServiceVIPs(svc),
	}
	for _, sp := range svc.Spec.Ports {
		if !IsTCP(sp.Protocol) {
			continue
		}
		out.Ports = append(out.Ports, &pb.Port{ServicePort: uint32(sp.Port), TargetPort: numericTargetPort(sp)})
	}
	out.Waypoint = serviceWaypoint(svc, ns, waypoints)
	return out
}

// ServiceVIPs are the Service's cluster IPs (both families when dual-stack).
func ServiceVIPs(svc *corev1.Service) []string {
	var out []string
	for _, ip := range svc.Spec.ClusterIPs {
		if ip != "" && ip != corev1.ClusterIPNone {
			out = append(out, ip)
		}
	}
	if len(out) == 0 && svc.Spec.ClusterIP != "" && svc.Spec.ClusterIP != corev1.ClusterIPNone {
		out = append(out, svc.Spec.ClusterIP)
	}
	return out
}

// numericTargetPort is the target port when every endpoint shares it; 0 for a named
// target port, which each Workload resolves for itself.
func numericTargetPort(sp corev1.ServicePort) uint32 {
	if sp.TargetPort.StrVal != "" {
		return 0
	}
	if sp.TargetPort.IntVal == 0 {
		return uint32(sp.Port)
	}
	return uint32(sp.TargetPort.IntVal)
}

// serviceWaypoint is where ztunnel sends the Service's traffic (see UsedWaypoint). A
// waypoint's own Service never points at a waypoint.
func serviceWaypoint(svc *corev1.Service, ns *corev1.Namespace, waypoints map[types.NamespacedName]WaypointInfo) *pb.GatewayAddress {
	if svc.Labels[meshv1.LabelWaypoint] != "" {
		return nil
	}
	return waypointAddress(meshv1.WaypointForService, svc.Namespace, svc.Labels, ns, waypoints)
}

// Package translate turns cluster state (Pods, Services, Namespaces, MeshPolicies,
// Waypoints and the Gateways that stand for them) into workload API resources. Every function here is pure: it reads only its
// arguments, so the same inputs always give the same resources and the discovery layer can
// recompute one resource at a time.
package translate

import (
	"slices"
	"sort"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
)

// Mesh holds the mesh-wide settings translation depends on.
type Mesh struct {
	// TrustDomain of workload identities, e.g. cluster.local.
	TrustDomain string
	// RootNamespace is the mesh's install namespace: a MeshPolicy there without a selector
	// applies to the whole mesh.
	RootNamespace string
	// ClusterDomain is the DNS suffix of Service hostnames, e.g. cluster.local.
	ClusterDomain string
	// ClusterID names the cluster in telemetry (Workload.cluster_id, the waypoint's
	// endpoint metadata); the control plane defaults it to DefaultClusterID.
	ClusterID string
}

// PodInputs is everything the Workload of one pod depends on.
type PodInputs struct {
	Pod *corev1.Pod
	// Namespace is the pod's namespace; nil when it is not (yet) known.
	Namespace *corev1.Namespace
	// Services in the pod's namespace.
	Services []corev1.Service
	// Policies in the pod's namespace and in the root namespace.
	Policies []meshv1.MeshPolicy
	// Waypoints by namespace and name: at least the one the pod's labels name (see
	// UsedWaypoint), which may live in another namespace.
	Waypoints map[types.NamespacedName]WaypointInfo
}

// IsEnrolled decides whether a pod's traffic is captured into ztunnel: the pod label
// ambientmesh.dev/dataplane-mode wins (ambient / none), otherwise the namespace label;
// host-network pods never are (their traffic is the node's).
func IsEnrolled(pod *corev1.Pod, ns *corev1.Namespace) bool {
	if pod.Spec.HostNetwork {
		return false
	}
	switch pod.Labels[meshv1.LabelDataplaneMode] {
	case meshv1.DataplaneModeAmbient:
		return true
	case meshv1.DataplaneModeNone:
		return false
	}
	return ns != nil && ns.Labels[meshv1.LabelDataplaneMode] == meshv1.DataplaneModeAmbient
}

// IsWaypointPod reports whether the pod is a waypoint proxy: it terminates HBONE itself.
func IsWaypointPod(pod *corev1.Pod) bool {
	return pod.Labels[meshv1.LabelWaypoint] != ""
}

// IsWorkloadPod reports whether a pod gets a Workload at all. Host-network pods share the
// node's addresses and finished pods have none; every other pod does, enrolled or not, so
// that a Service mixing mesh and non-mesh endpoints load-balances over all of them.
func IsWorkloadPod(pod *corev1.Pod) bool {
	if pod.Spec.HostNetwork {
		return false
	}
	return pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed
}

// Workload translates one pod; nil when the pod gets no Workload (see IsWorkloadPod).
func Workload(mesh Mesh, in PodInputs) *pb.Workload {
	pod := in.Pod
	if !IsWorkloadPod(pod) {
		return nil
	}
	tel := PodTelemetry(pod)
	w := &pb.Workload{
		Uid:               string(pod.UID),
		Name:              pod.Name,
		Namespace:         pod.Namespace,
		ServiceAccount:    serviceAccountOf(pod),
		Node:              pod.Spec.NodeName,
		Addresses:         podIPs(pod),
		Services:          servicesOf(mesh, pod, in.Services),
		TunnelProtocol:    pb.TunnelProtocol_TUNNEL_PROTOCOL_NONE,
		Status:            workloadStatus(pod),
		WorkloadName:      tel.Workload,
		CanonicalName:     tel.CanonicalName,
		CanonicalRevision: tel.CanonicalRevision,
		App:               tel.App,
		Version:           tel.Version,
		ClusterId:         mesh.ClusterID,
	}
	if w.WorkloadName == pod.Name {
		w.WorkloadName = "" // the default: spare the bytes
	}
	if !IsEnrolled(pod, in.Namespace) && !IsWaypointPod(pod) {
		return w
	}
	w.TunnelProtocol = pb.TunnelProtocol_TUNNEL_PROTOCOL_HBONE
	w.MtlsMode = MTLSModeFor(mesh, pod, in.Policies)
	w.AuthorizationPolicies = selectingPolicies(pod, in.Policies)
	if !IsWaypointPod(pod) {
		w.Waypoint = waypointAddress(meshv1.WaypointForWorkload, pod.Namespace, pod.Labels, in.Namespace, in.Waypoints)
	}
	return w
}

func serviceAccountOf(pod *corev1.Pod) string {
	if pod.Spec.ServiceAccountName != "" {
		return pod.Spec.ServiceAccountName
	}
	return "default"
}

func podIPs(pod *corev1.Pod) []string {
	var ips []string
	for _, ip := range pod.Status.PodIPs {
		if ip.IP != "" && !slices.Contains(ips, ip.IP) {
			ips = append(ips, ip.IP)
		}
	}
	if pod.Status.PodIP != "" && !slices.Contains(ips, pod.Status.PodIP) {
		ips = append([]string{pod.Status.PodIP}, ips...)
	}
	return ips
}

func workloadStatus(pod *corev1.Pod) pb.WorkloadStatus {
	if pod.DeletionTimestamp != nil {
		return pb.WorkloadStatus_WORKLOAD_STATUS_UNHEALTHY
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return pb.WorkloadStatus_WORKLOAD_STATUS_HEALTHY
		}
	}
	return pb.WorkloadStatus_WORKLOAD_STATUS_UNHEALTHY
}

// servicesOf lists the Services selecting the pod, with each service port mapped to the
// pod's port (named target ports resolved against the pod's containers).
func servicesOf(mesh Mesh, pod *corev1.Pod, services []corev1.Service) map[string]*pb.PortList {
	out := map[string]*pb.PortList{}
	for i := range services {
		svc := &services[i]
		if !IsMeshService(svc) || svc.Namespace != pod.Namespace {
			continue
		}
		if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(pod.Labels)) {
			continue
		}
		var ports []*pb.Port
		for _, sp := range svc.Spec.Ports {
			if !IsTCP(sp.Protocol) {
				continue
			}
			if target := TargetPort(pod, sp); target != 0 {
				ports = append(ports, &pb.Port{ServicePort: uint32(sp.Port), TargetPort: target})
			}
		}
		out[pb.ServiceResourceName(svc.Namespace, Hostname(mesh, svc))] = &pb.PortList{Ports: ports}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// IsTCP reports whether a Service or container port carries TCP, the only protocol the
// mesh proxies; Kubernetes leaves the protocol empty for TCP.
func IsTCP(p corev1.Protocol) bool { return p == "" || p == corev1.ProtocolTCP }

// TargetPort maps a Service port to the pod's port: a number as is (the Service port
// itself when unset), a name through the pod's TCP container ports; 0 when the pod has
// no port of that name (Kubernetes then has no endpoint either). ztunnel's workload
// entries and the waypoint's endpoints both use it, so they agree on the pod port.
func TargetPort(pod *corev1.Pod, sp corev1.ServicePort) uint32 {
	tp := sp.TargetPort
	if tp.StrVal == "" {
		if tp.IntVal == 0 {
			return uint32(sp.Port)
		}
		return uint32(tp.IntVal)
	}
	for _, c := range pod.Spec.Containers {
		for _, cp := range c.Ports {
			if cp.Name == tp.StrVal && IsTCP(cp.Protocol) {
				return uint32(cp.ContainerPort)
			}
		}
	}
	return 0
}

// selectingPolicies lists the WORKLOAD_SELECTOR-scoped Authorizations selecting the pod.
func selectingPolicies(pod *corev1.Pod, policies []meshv1.MeshPolicy) []string {
	var names []string
	for i := range policies {
		p := &policies[i]
		if p.Namespace != pod.Namespace || p.Spec.Selector == nil || len(p.Spec.Rules) == 0 {
			continue
		}
		if selects(p.Spec.Selector, pod) {
			names = append(names, pb.AuthorizationResourceName(p.Namespace, p.Name))
		}
	}
	sort.Strings(names)
	return names
}

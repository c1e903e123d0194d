package waypoint

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controlplane/xds/translate"
)

// Mesh holds the mesh-wide settings translation depends on (trust domain, cluster domain).
type Mesh = translate.Mesh

// State is the part of the cluster a waypoint's configuration is computed from: the
// objects of the namespaces whose Services or pods use the waypoint. Build reads nothing
// else, so the discovery layer decides what to put here and the tests write it as YAML.
type State struct {
	Namespaces []corev1.Namespace
	Pods       []corev1.Pod
	Services   []corev1.Service
	Policies   []meshv1.MeshPolicy
	Waypoints  []meshv1.Waypoint
	HTTPRoutes []gatewayv1.HTTPRoute
	GRPCRoutes []gatewayv1.GRPCRoute
}

// NodeCluster is the xDS node cluster a waypoint's proxies announce:
// "waypoint/<namespace>/<name>".
func NodeCluster(namespace, name string) string {
	return "waypoint/" + namespace + "/" + name
}

// ParseNodeCluster is the inverse of NodeCluster; ok is false for any other node.
func ParseNodeCluster(cluster string) (namespace, name string, ok bool) {
	rest, found := strings.CutPrefix(cluster, "waypoint/")
	if !found {
		return "", "", false
	}
	namespace, name, found = strings.Cut(rest, "/")
	if !found || namespace == "" || name == "" || strings.Contains(name, "/") {
		return "", "", false
	}
	return namespace, name, true
}

// ClusterName is Istio's name for the cluster of a Service port:
// outbound|<port>||<hostname>. Workload clusters put the pod IP in the hostname slot.
func ClusterName(host string, port int32) string {
	return fmt.Sprintf("outbound|%d||%s", port, host)
}

// ListenerName is the name of a listener, and of its RouteConfiguration: <host>:<port>,
// where host is a Service hostname or a pod IP.
func ListenerName(host string, port int32) string {
	return fmt.Sprintf("%s:%d", host, port)
}

func (st *State) namespace(name string) *corev1.Namespace {
	for i := range st.Namespaces {
		if st.Namespaces[i].Name == name {
			return &st.Namespaces[i]
		}
	}
	return nil
}

func (st *State) service(namespace, name string) *corev1.Service {
	for i := range st.Services {
		if st.Services[i].Namespace == namespace && st.Services[i].Name == name {
			return &st.Services[i]
		}
	}
	return nil
}

// useWaypoint resolves the ambientmesh.dev/use-waypoint label as the workload API does:
// the object's own label wins ("none" opts out), else its namespace's.
func useWaypoint(objLabels map[string]string, ns *corev1.Namespace) string {
	if v, ok := objLabels[meshv1.LabelUseWaypoint]; ok {
		if v == meshv1.UseWaypointNone {
			return ""
		}
		return v
	}
	if ns == nil {
		return ""
	}
	return ns.Labels[meshv1.LabelUseWaypoint]
}

func servesServices(wp *meshv1.Waypoint) bool {
	f := wp.Spec.EffectiveFor()
	return f == meshv1.WaypointForService || f == meshv1.WaypointForAll
}

func servesWorkloads(wp *meshv1.Waypoint) bool {
	f := wp.Spec.EffectiveFor()
	return f == meshv1.WaypointForWorkload || f == meshv1.WaypointForAll
}

// ServedServices lists the Services whose traffic the waypoint carries: mesh Services of
// its namespace that use it (label on the Service, else on the namespace), when the
// waypoint is for service traffic. The waypoint's own Service never does.
func ServedServices(wp *meshv1.Waypoint, st *State) []*corev1.Service {
	if !servesServices(wp) {
		return nil
	}
	ns := st.namespace(wp.Namespace)
	var out []*corev1.Service
	for i := range st.Services {
		svc := &st.Services[i]
		if svc.Namespace != wp.Namespace || svc.Labels[meshv1.LabelWaypoint] != "" || !translate.IsMeshService(svc) {
			continue
		}
		if useWaypoint(svc.Labels, ns) == wp.Name {
			out = append(out, svc)
		}
	}
	return out
}

// ServedPods lists the pods whose direct (pod IP) traffic the waypoint carries: enrolled
// pods of its namespace with an address that use it, when the waypoint is for workload
// traffic. Waypoint pods never do.
func ServedPods(wp *meshv1.Waypoint, st *State) []*corev1.Pod {
	if !servesWorkloads(wp) {
		return nil
	}
	ns := st.namespace(wp.Namespace)
	var out []*corev1.Pod
	for i := range st.Pods {
		pod := &st.Pods[i]
		if pod.Namespace != wp.Namespace || translate.IsWaypointPod(pod) || pod.Status.PodIP == "" || isFinished(pod) {
			continue
		}
		if !translate.IsEnrolled(pod, ns) {
			continue
		}
		if useWaypoint(pod.Labels, ns) == wp.Name {
			out = append(out, pod)
		}
	}
	return out
}

// WaypointOfService names the Waypoint (in the Service's namespace) that carries the
// Service's traffic, or "" when none does. Route status uses it.
func WaypointOfService(svc *corev1.Service, ns *corev1.Namespace) string {
	if svc.Labels[meshv1.LabelWaypoint] != "" {
		return ""
	}
	return useWaypoint(svc.Labels, ns)
}

func isFinished(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
}

// selectedPods are the pods of the Service's namespace its selector matches.
func selectedPods(svc *corev1.Service, pods []corev1.Pod) []*corev1.Pod {
	if len(svc.Spec.Selector) == 0 {
		return nil
	}
	sel := labels.SelectorFromSet(svc.Spec.Selector)
	var out []*corev1.Pod
	for i := range pods {
		pod := &pods[i]
		if pod.Namespace == svc.Namespace && sel.Matches(labels.Set(pod.Labels)) {
			out = append(out, pod)
		}
	}
	return out
}

// Protocol of a Service or workload port, as the waypoint handles it.
type Protocol int

const (
	// ProtocolTCP: bytes are proxied (network RBAC, tcp_proxy).
	ProtocolTCP Protocol = iota
	// ProtocolHTTP: HTTP/1.1 or HTTP/2 requests are routed (HTTP connection manager).
	ProtocolHTTP
	// ProtocolHTTP2: HTTP with HTTP/2 to the backend (appProtocol http2, grpc, h2c).
	ProtocolHTTP2
)

// PortProtocol reads a Service port's protocol as Istio does: appProtocol first, then the
// port name's prefix (http-, http2-, grpc-), else TCP.
func PortProtocol(sp corev1.ServicePort) Protocol {
	if sp.AppProtocol != nil {
		return protocolOf(*sp.AppProtocol)
	}
	return protocolOfName(sp.Name)
}

func protocolOf(appProtocol string) Protocol {
	switch strings.ToLower(appProtocol) {
	case "http", "grpc-web":
		return ProtocolHTTP
	case "http2", "grpc", "kubernetes.io/h2c":
		return ProtocolHTTP2
	}
	return ProtocolTCP
}

func protocolOfName(name string) Protocol {
	prefix, _, _ := strings.Cut(strings.ToLower(name), "-")
	return protocolOf(prefix)
}

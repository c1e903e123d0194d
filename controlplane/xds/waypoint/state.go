package waypoint

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controlplane/xds/translate"
)

// Mesh holds the mesh-wide settings translation depends on (trust domain, cluster domain).
type Mesh = translate.Mesh

// State is the part of the cluster a waypoint's configuration is computed from: the
// objects of the waypoint's namespace and of the other namespaces whose Services or pods
// may use it (their Namespace objects too: labels decide). Build reads nothing else, and
// applies the selection rules itself, so the discovery layer may put more here than is
// used; the tests write it as YAML. Waypoints holds Waypoints and waypoint Gateways alike,
// as translate.MergeWaypoints lists them.
type State struct {
	Namespaces []corev1.Namespace
	Pods       []corev1.Pod
	Services   []corev1.Service
	Policies   []meshv1.MeshPolicy
	Waypoints  []meshv1.Waypoint
	HTTPRoutes []gatewayv1.HTTPRoute
	GRPCRoutes []gatewayv1.GRPCRoute
}

// StateOf sorts objects into a State by kind, as the control plane lists them: waypoint
// Gateways are merged into the Waypoints (translate.MergeWaypoints). Other kinds are an
// error: nothing here would read them.
func StateOf(objs []client.Object) (State, error) {
	var st State
	var gateways []gatewayv1.Gateway
	for _, obj := range objs {
		switch o := obj.(type) {
		case *corev1.Namespace:
			st.Namespaces = append(st.Namespaces, *o)
		case *corev1.Pod:
			st.Pods = append(st.Pods, *o)
		case *corev1.Service:
			st.Services = append(st.Services, *o)
		case *meshv1.MeshPolicy:
			st.Policies = append(st.Policies, *o)
		case *meshv1.Waypoint:
			st.Waypoints = append(st.Waypoints, *o)
		case *gatewayv1.Gateway:
			gateways = append(gateways, *o)
		case *gatewayv1.HTTPRoute:
			st.HTTPRoutes = append(st.HTTPRoutes, *o)
		case *gatewayv1.GRPCRoute:
			st.GRPCRoutes = append(st.GRPCRoutes, *o)
		default:
			return State{}, fmt.Errorf("%T %s/%s: not a kind a waypoint's configuration reads", obj, obj.GetNamespace(), obj.GetName())
		}
	}
	st.Waypoints = translate.MergeWaypoints(st.Waypoints, gateways)
	return st, nil
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

func servesServices(wp *meshv1.Waypoint) bool {
	return translate.WaypointHandles(wp.Spec.EffectiveFor(), meshv1.WaypointForService)
}

func servesWorkloads(wp *meshv1.Waypoint) bool {
	return translate.WaypointHandles(wp.Spec.EffectiveFor(), meshv1.WaypointForWorkload)
}

// uses reports whether an object (a Service or pod of namespace) sends its traffic to
// wp, as the workload API decides it (translate.UsedWaypoint): its labels name wp and wp
// allows the namespace.
func uses(wp *meshv1.Waypoint, namespace string, objLabels map[string]string, st *State) bool {
	ns := st.namespace(namespace)
	ref, ok := translate.UsedWaypoint(namespace, objLabels, ns)
	return ok && ref.Namespace == wp.Namespace && ref.Name == wp.Name && translate.WaypointAllows(wp, namespace, ns)
}

// ServedServices lists the Services whose traffic the waypoint carries, when it is for
// service traffic: mesh Services of any namespace in st that use it (their label, else
// their namespace's) and that it allows (spec.allowedNamespaces). The waypoint's own
// Service never does. Sorted by namespace, then name.
func ServedServices(wp *meshv1.Waypoint, st *State) []*corev1.Service {
	if !servesServices(wp) {
		return nil
	}
	var out []*corev1.Service
	for i := range st.Services {
		svc := &st.Services[i]
		if svc.Labels[meshv1.LabelWaypoint] != "" || !translate.IsMeshService(svc) {
			continue
		}
		if uses(wp, svc.Namespace, svc.Labels, st) {
			out = append(out, svc)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return objectKey(out[i]) < objectKey(out[j]) })
	return out
}

// ServedPods lists the pods whose direct (pod IP) traffic the waypoint carries, when it is
// for workload traffic: enrolled pods with an address, of any namespace in st, that use
// it (their label, else their namespace's) and that it allows. Waypoint pods never do.
// Sorted by namespace, then name.
func ServedPods(wp *meshv1.Waypoint, st *State) []*corev1.Pod {
	if !servesWorkloads(wp) {
		return nil
	}
	var out []*corev1.Pod
	for i := range st.Pods {
		pod := &st.Pods[i]
		if translate.IsWaypointPod(pod) || pod.Status.PodIP == "" || isFinished(pod) {
			continue
		}
		if translate.IsEnrolled(pod, st.namespace(pod.Namespace)) && uses(wp, pod.Namespace, pod.Labels, st) {
			out = append(out, pod)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return objectKey(out[i]) < objectKey(out[j]) })
	return out
}

func objectKey(o metav1.Object) string { return o.GetNamespace() + "/" + o.GetName() }

// WaypointOfService names the Waypoint the Service's labels send its traffic to (see
// translate.UsedWaypoint); ok is false when they name none. Route status uses it.
func WaypointOfService(svc *corev1.Service, ns *corev1.Namespace) (ref types.NamespacedName, ok bool) {
	if svc.Labels[meshv1.LabelWaypoint] != "" {
		return types.NamespacedName{}, false
	}
	return translate.UsedWaypoint(svc.Namespace, svc.Labels, ns)
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

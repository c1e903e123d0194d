package explain

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrlclient "sigs.k8s.io/controller-runtime/pkg/client"

	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controlplane/discovery"
	"github.com/ambientmesh/ambient-operator/controlplane/xds/translate"
	"github.com/ambientmesh/ambient-operator/dataplane/ztunnel/authz"
	"github.com/ambientmesh/ambient-operator/dataplane/ztunnel/routing"
	"github.com/ambientmesh/ambient-operator/dataplane/ztunnel/state"
	"github.com/ambientmesh/ambient-operator/internal/spiffe"
)

// world is the cluster and the ztunnels' configuration computed from it.
type world struct {
	cluster *Cluster
	// objects holds the cluster's objects as the control plane's cache would, for its
	// reconcilers to read.
	objects ctrlclient.Client
	// store holds every workload API resource, as each ztunnel would (a ztunnel gets them
	// all: it routes to any of them and authorizes for its own pods).
	store *state.Store
}

func newWorld(ctx context.Context, c *Cluster) (*world, error) {
	objects, err := discovery.NewInMemoryClient(slices.Concat(discovery.ObjectsOf(c.Namespaces), discovery.ObjectsOf(c.Pods),
		discovery.ObjectsOf(c.Services), discovery.ObjectsOf(c.Policies), discovery.ObjectsOf(c.Waypoints),
		discovery.ObjectsOf(c.HTTPRoutes), discovery.ObjectsOf(c.GRPCRoutes))...)
	if err != nil {
		return nil, fmt.Errorf("the cluster's objects: %w", err)
	}
	// Gateways are already among the Waypoints (Cluster.Waypoints): no Gateway API kinds.
	res, err := discovery.Translate(ctx, objects, c.Mesh, nil)
	if err != nil {
		return nil, fmt.Errorf("translating the cluster: %w", err)
	}
	s := state.New()
	err = errors.Join(
		load(s, pb.ServiceTypeURL, res.Services),
		load(s, pb.WorkloadTypeURL, res.Workloads),
		load(s, pb.AuthorizationTypeURL, res.Authorizations))
	if err != nil {
		return nil, fmt.Errorf("the workload API resources do not load into a ztunnel: %w", err)
	}
	return &world{cluster: c, objects: objects, store: s}, nil
}

// load applies resources to the store as one xDS update of their type.
func load[M proto.Message](s *state.Store, typeURL string, resources map[string]M) error {
	update := make(map[string]*anypb.Any, len(resources))
	for name, m := range resources {
		a, err := anypb.New(m)
		if err != nil {
			return err
		}
		update[name] = a
	}
	return s.Apply(typeURL, update, nil)
}

func (w *world) pod(key types.NamespacedName) (*corev1.Pod, error) {
	for i := range w.cluster.Pods {
		if p := &w.cluster.Pods[i]; p.Namespace == key.Namespace && p.Name == key.Name {
			return p, nil
		}
	}
	return nil, fmt.Errorf("pod %s not found", key)
}

func (w *world) workloadOfPod(key types.NamespacedName) (*pb.Workload, error) {
	pod, err := w.pod(key)
	if err != nil {
		return nil, err
	}
	wl := w.store.Workload(string(pod.UID))
	if wl == nil {
		return nil, fmt.Errorf("pod %s is not a workload of the mesh (host network, or finished)", key)
	}
	return wl, nil
}

// address is the IP:port a client connects to for t.
func (w *world) address(t Target) (netip.AddrPort, error) {
	if t.Kind == TargetPod {
		pod, err := w.pod(types.NamespacedName{Namespace: t.Namespace, Name: t.Name})
		if err != nil {
			return netip.AddrPort{}, err
		}
		ip, err := netip.ParseAddr(pod.Status.PodIP)
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("pod %s/%s has no IP yet", t.Namespace, t.Name)
		}
		port, err := podPort(pod, t.Port)
		return netip.AddrPortFrom(ip, port), err
	}
	var svc *corev1.Service
	for i := range w.cluster.Services {
		if s := &w.cluster.Services[i]; s.Namespace == t.Namespace && s.Name == t.Name {
			svc = s
		}
	}
	if svc == nil {
		return netip.AddrPort{}, fmt.Errorf("service %s/%s not found", t.Namespace, t.Name)
	}
	if !translate.IsMeshService(svc) {
		return netip.AddrPort{}, fmt.Errorf("service %s/%s has no selector or no cluster IP: %w", t.Namespace, t.Name, errNotRouted)
	}
	vip, err := netip.ParseAddr(w.store.Service(translate.ServiceName(w.cluster.Mesh, svc)).GetVips()[0])
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("service %s/%s: %w", t.Namespace, t.Name, err)
	}
	port, err := servicePort(svc, t.Port)
	return netip.AddrPortFrom(vip, port), err
}

// servicePort is want, or the Service's only TCP port when want is 0.
func servicePort(svc *corev1.Service, want int32) (uint16, error) {
	var ports []int32
	for _, sp := range svc.Spec.Ports {
		if sp.Protocol == "" || sp.Protocol == corev1.ProtocolTCP {
			ports = append(ports, sp.Port)
		}
	}
	return pickPort("service "+svc.Namespace+"/"+svc.Name, ports, want)
}

// podPort is want, or the pod's only TCP container port when want is 0.
func podPort(pod *corev1.Pod, want int32) (uint16, error) {
	var ports []int32
	for _, c := range pod.Spec.Containers {
		for _, cp := range c.Ports {
			if cp.Protocol == "" || cp.Protocol == corev1.ProtocolTCP {
				ports = append(ports, cp.ContainerPort)
			}
		}
	}
	return pickPort("pod "+pod.Namespace+"/"+pod.Name, ports, want)
}

func pickPort(what string, ports []int32, want int32) (uint16, error) {
	switch {
	case want < 0 || want > 65535:
		return 0, fmt.Errorf("%s: port %d is out of range", what, want)
	case want != 0:
		return uint16(want), nil
	case len(ports) == 1:
		return uint16(ports[0]), nil
	case len(ports) == 0:
		return 0, fmt.Errorf("%s declares no TCP port: give one (NAME:PORT)", what)
	}
	list := make([]string, len(ports))
	for i, p := range ports {
		list[i] = fmt.Sprint(p)
	}
	return 0, fmt.Errorf("%s has ports %s: give one (NAME:PORT)", what, strings.Join(list, ", "))
}

// builder walks the paths and collects the report.
type builder struct {
	*world
	opts     Options
	req      Request
	client   client
	report   Report
	outcomes []outcome
}

func (b *builder) add(h Hop) { b.report.Hops = append(b.report.Hops, h) }

func (b *builder) end(o outcome) { b.outcomes = append(b.outcomes, o) }

// follow routes the connection at the client's side and records that hop; it returns
// each way the connection can go (none when the client's side cannot route it).
func (b *builder) follow(dst netip.AddrPort) []routing.Decision {
	var lookup routing.Lookup = b.store
	if !b.client.inMesh() {
		lookup = withoutWaypoints{b.store}
	}
	decisions, err := b.outbound(lookup, dst)
	src := b.sourceHop()
	if err != nil {
		src.Decision, src.Detail = DecisionFailed, err.Error()
		b.add(src)
		b.end(outcome{failed: true, why: fmt.Sprintf("%v (routing from client %s on %s)", err, src.Pod, src.At)})
		return nil
	}
	src.Detail = b.describeOutbound(decisions)
	b.add(src)
	return decisions
}

func (b *builder) sourceHop() Hop {
	h := Hop{Proxy: ProxyZtunnel, Role: RoleSource, At: "node " + b.client.workload.GetNode(),
		Pod: podName(b.client.workload), Layer: "L4", Decision: DecisionOutbound}
	if !b.client.inMesh() {
		h.Proxy, h.Layer = ProxyNone, ""
	}
	return h
}

// where names the proxy of a hop that decides, for the verdict.
func (h Hop) where() string {
	if h.Proxy == ProxyWaypoint {
		return "at waypoint " + h.At
	}
	return "at the ztunnel on " + h.At
}

// outbound asks the ztunnel's router where the connection goes. Where it load-balances,
// every choice of its first Pick is followed (later picks, such as the waypoint pod
// behind a waypoint's address, take the first); ways that differ only in the waypoint
// pod count once.
func (b *builder) outbound(lookup routing.Lookup, dst netip.AddrPort) ([]routing.Decision, error) {
	choices := 1
	router := routing.Router{Lookup: lookup, TrustDomain: b.cluster.Mesh.TrustDomain}
	var out []routing.Decision
	for choice := 0; choice < choices; choice++ {
		first := true
		router.Pick = func(n int) int {
			if first {
				first, choices = false, n
				return choice
			}
			return 0
		}
		d, err := router.Outbound(b.client.workload, dst)
		if err != nil {
			return nil, err
		}
		if !containsWay(out, d) {
			out = append(out, d)
		}
	}
	return out, nil
}

func containsWay(ways []routing.Decision, d routing.Decision) bool {
	for _, w := range ways {
		if w.ViaWaypoint == d.ViaWaypoint && w.Target == d.Target && w.Peer == d.Peer {
			return true
		}
	}
	return false
}

func (b *builder) describeOutbound(decisions []routing.Decision) string {
	if !b.client.inMesh() {
		s := "outside the mesh: no ztunnel captures its traffic; it goes as plaintext straight to " + targetsOf(decisions)
		if b.req.Destination.Kind == TargetService {
			s += " (the Service's ready endpoints, as kube-proxy picks them; no waypoint)"
		}
		return s
	}
	parts := make([]string, len(decisions))
	for i, d := range decisions {
		parts[i] = b.describeWay(d)
	}
	if len(parts) == 1 {
		return parts[0]
	}
	return fmt.Sprintf("load-balances over %d endpoints: %s", len(parts), strings.Join(parts, "; "))
}

func (b *builder) describeWay(d routing.Decision) string {
	switch {
	case d.ViaWaypoint:
		s := fmt.Sprintf("HBONE to waypoint %s for %s", d.Dial, d.Target)
		if wp := b.store.WorkloadByAddr(d.Dial.Addr()); wp != nil {
			s = fmt.Sprintf("HBONE to waypoint pod %s (%s) for %s", podName(wp), d.Dial, d.Target)
		}
		return s
	case d.Kind == routing.HBONE:
		return fmt.Sprintf("HBONE to %s (%s) for %s", d.Dial, d.Peer, d.Target)
	}
	return fmt.Sprintf("plain TCP to %s (destination outside the mesh)", d.Target)
}

func targetsOf(decisions []routing.Decision) string {
	targets := make([]string, len(decisions))
	for i, d := range decisions {
		targets[i] = d.Target.String()
	}
	return strings.Join(targets, ", ")
}

// seenClient is the client as a destination ztunnel sees it.
type seenClient struct {
	ip        netip.Addr
	principal spiffe.ID // zero for plaintext
	// relay says how a waypoint in between shapes this view ("" for the client's own
	// connection).
	relay string
}

func (c seenClient) String() string {
	id := "plaintext, no identity"
	if !c.principal.IsZero() {
		id = c.principal.String()
	}
	s := fmt.Sprintf("client %s, %s", c.ip, id)
	if c.relay != "" {
		s += " (" + c.relay + ")"
	}
	return s
}

// direct is the client as seen over its own connection: HBONE from its ztunnel, or
// plaintext from outside the mesh.
func (b *builder) direct() seenClient {
	return seenClient{ip: b.client.ip, principal: b.client.principal}
}

// toDestination is the destination ztunnel's L4 decision for a connection to port of w,
// as the ztunnel's inbound paths take it: plaintext refused under STRICT mTLS, then the
// policies that apply to the workload.
func (b *builder) toDestination(w *pb.Workload, port uint16, seen seenClient) {
	h := Hop{Proxy: ProxyZtunnel, Role: RoleDestination, At: "node " + w.GetNode(), Pod: podName(w), Layer: "L4"}
	if !inMesh(w) {
		h.Proxy, h.Layer, h.Decision = ProxyNone, "", DecisionAllowed
		h.Detail = fmt.Sprintf("outside the mesh: no ztunnel, no policy; plaintext to port %d", port)
		b.add(h)
		b.end(outcome{allowed: true})
		return
	}
	asSeen := fmt.Sprintf("as seen by the destination ztunnel: %s, port %d", seen, port)
	d := b.store.Authorize(w, authz.Conn{SrcIP: seen.ip, Principal: seen.principal, DstPort: port}, seen.principal.IsZero())
	h.Policy, h.Detail = d.Policy, d.Reason
	if len(d.Audited) > 0 {
		h.Detail += "; audited by " + strings.Join(d.Audited, ", ")
	}
	h.Detail += "; " + asSeen
	h.Decision = DecisionAllowed
	if !d.Allowed {
		h.Decision = DecisionDenied
	}
	b.add(h)
	switch {
	case d.Allowed:
		b.end(outcome{allowed: true})
	case d.Policy != "":
		b.end(outcome{why: "MeshPolicy " + d.Policy + " (L4) " + h.where() + ", pod " + h.Pod})
	default:
		b.end(outcome{why: strings.TrimPrefix(d.Reason, "denied: ") + " (L4) " + h.where() + ", pod " + h.Pod})
	}
}

func podName(w *pb.Workload) string { return w.GetNamespace() + "/" + w.GetName() }

// withoutWaypoints is the configuration as kube-proxy applies it to a client outside the
// mesh: Services and pods reached directly, never through a waypoint.
type withoutWaypoints struct{ *state.Store }

func (l withoutWaypoints) ServiceByVIP(a netip.Addr) *pb.Service {
	s := l.Store.ServiceByVIP(a)
	if s.GetWaypoint() == nil {
		return s
	}
	s = proto.Clone(s).(*pb.Service)
	s.Waypoint = nil
	return s
}

func (l withoutWaypoints) WorkloadByAddr(a netip.Addr) *pb.Workload {
	return noWaypoint(l.Store.WorkloadByAddr(a))
}

func (l withoutWaypoints) Endpoints(service string) []*pb.Workload {
	eps := l.Store.Endpoints(service)
	for i, w := range eps {
		eps[i] = noWaypoint(w)
	}
	return eps
}

func noWaypoint(w *pb.Workload) *pb.Workload {
	if w.GetWaypoint() == nil {
		return w
	}
	w = proto.Clone(w).(*pb.Workload)
	w.Waypoint = nil
	return w
}

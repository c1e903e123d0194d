package explain

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/types"

	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controlplane/xds/translate"
	cpwaypoint "github.com/ambientmesh/ambient-operator/controlplane/xds/waypoint"
	"github.com/ambientmesh/ambient-operator/internal/spiffe"
)

// Cluster is what a path depends on: the mesh settings and the objects the control plane
// reads.
type Cluster struct {
	Mesh translate.Mesh
	// The objects; Waypoints holds Waypoints and waypoint Gateways, as
	// translate.MergeWaypoints lists them.
	cpwaypoint.State
}

// TargetKind says whether a Target is a pod or a Service.
type TargetKind int

const (
	// TargetPod addresses a pod by its IP.
	TargetPod TargetKind = iota
	// TargetService addresses a Service by its cluster IP.
	TargetService
)

// Target is the destination of a Request.
type Target struct {
	Kind      TargetKind
	Namespace string
	Name      string
	// Port is the Service port, or the pod's port; 0 picks the only one there is (the
	// Service's only TCP port, the pod's only TCP container port).
	Port int32
}

func (t Target) String() string {
	s := "pod " + t.Namespace + "/" + t.Name
	if t.Kind == TargetService {
		s = "service " + t.Namespace + "/" + t.Name
	}
	if t.Port != 0 {
		s += " port " + strconv.Itoa(int(t.Port))
	}
	return s
}

// Request is what to explain: a connection from a pod to a Target and, where a waypoint
// reads it, the HTTP request on it.
type Request struct {
	Source      types.NamespacedName
	Destination Target
	// Method, Path (with any query) and Host of the HTTP request; defaults GET, / and the
	// destination's name as a client would address it (<service hostname>:<port>, or
	// <pod IP>:<port>).
	Method, Path, Host string
	Header             http.Header
}

// Options are the runtime dependencies of Explain.
type Options struct {
	// KeySetClient fetches the JWKS of a policy that gives a jwksUri; nil fetches nothing
	// (a token checked against such a key set then fails as the waypoint's "Jwks remote
	// fetch is failed").
	KeySetClient *http.Client
}

// Proxies and roles of a Hop.
const (
	ProxyZtunnel  = "ztunnel"
	ProxyWaypoint = "waypoint"
	// ProxyNone: no proxy on this side (a pod outside the mesh).
	ProxyNone = "none"

	RoleSource      = "source"
	RoleWaypoint    = "waypoint"
	RoleDestination = "destination"
)

// Decisions of a Hop.
const (
	// DecisionOutbound: the client's side routes the connection; it enforces no policy.
	DecisionOutbound = "outbound"
	DecisionAllowed  = "allowed"
	DecisionDenied   = "denied"
	// DecisionFailed: the hop cannot deliver (no route, no endpoint, a configuration error).
	DecisionFailed = "failed"
)

// Hop is one proxy on the path and what it decides.
type Hop struct {
	Proxy string `json:"proxy"`
	Role  string `json:"role"`
	// At is where the proxy runs: "node <node>" for a ztunnel (or for a pod outside the
	// mesh), "<namespace>/<name>" for a waypoint.
	At string `json:"at"`
	// Pod is the pod the hop acts for: the client, the waypoint pod chosen, the
	// destination pod.
	Pod      string `json:"pod,omitempty"`
	Layer    string `json:"layer,omitempty"`
	Decision string `json:"decision"`
	// Policy is the deciding MeshPolicy, <namespace>/<name>; Rule its rule ("rules[0]"),
	// known at a waypoint.
	Policy string `json:"policy,omitempty"`
	Rule   string `json:"rule,omitempty"`
	Detail string `json:"detail"`
}

// Report is the answer: every hop in path order (the source, then for each way the
// connection can go, the waypoint and the destination pod), and the verdict.
type Report struct {
	Source      string `json:"source"`
	Destination string `json:"destination"`
	Request     string `json:"request"`
	Hops        []Hop  `json:"hops"`
	// Allowed is true when the request gets through on every way it can go.
	Allowed bool `json:"allowed"`
	// Verdict is one line: ALLOWED, DENIED: <policy, where>, FAILED: <why, where>, or
	// PARTLY DENIED/PARTLY FAILED: <k> of <n> ways: ... when some ways get through.
	Verdict string `json:"verdict"`
}

// Explain follows req through the mesh described by c.
func Explain(ctx context.Context, c *Cluster, req Request, opts Options) (*Report, error) {
	w, err := newWorld(ctx, c)
	if err != nil {
		return nil, err
	}
	src, err := w.workloadOfPod(req.Source)
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	dst, err := w.address(req.Destination)
	if err != nil {
		return nil, fmt.Errorf("destination: %w", err)
	}
	req.Destination.Port = int32(dst.Port())
	req = withDefaults(req, c.Mesh, dst)
	if _, err := url.ParseRequestURI(req.Path); err != nil || !strings.HasPrefix(req.Path, "/") {
		return nil, fmt.Errorf("path %q: want an absolute path, e.g. /api?x=1", req.Path)
	}
	cl, err := newClient(c.Mesh, src)
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	b := &builder{world: w, opts: opts, req: req, client: cl}
	b.report.Source = b.client.String()
	b.report.Destination = fmt.Sprintf("%s (%s)", req.Destination, dst)
	b.report.Request = fmt.Sprintf("%s %s, Host %s", req.Method, req.Path, req.Host)
	for _, way := range b.follow(dst) {
		switch {
		case way.ViaWaypoint:
			b.throughWaypoint(ctx, way)
		case way.Workload != nil:
			b.toDestination(way.Workload, way.Target.Port(), b.direct())
		default:
			b.add(Hop{Proxy: ProxyNone, Role: RoleDestination, At: way.Target.String(), Decision: DecisionAllowed,
				Detail: "no workload has this address (a host-network pod): no ztunnel, no policy"})
			b.end(outcome{allowed: true})
		}
	}
	b.report.Allowed, b.report.Verdict = verdict(b.outcomes)
	return &b.report, nil
}

// client is the source workload as the proxies see it.
type client struct {
	workload  *pb.Workload
	ip        netip.Addr
	principal spiffe.ID // zero outside the mesh
}

func newClient(mesh translate.Mesh, w *pb.Workload) (client, error) {
	c := client{workload: w}
	var err error
	if c.ip, err = firstAddr(w); err != nil {
		return c, err
	}
	if inMesh(w) {
		if c.principal, err = w.IdentityID(mesh.TrustDomain); err != nil {
			return c, fmt.Errorf("pod %s identity: %w", podName(w), err)
		}
	}
	return c, nil
}

func (c client) inMesh() bool { return !c.principal.IsZero() }

func (c client) String() string {
	s := fmt.Sprintf("pod %s/%s (%s, node %s)", c.workload.GetNamespace(), c.workload.GetName(), c.ip, c.workload.GetNode())
	if c.inMesh() {
		return s + " " + c.principal.String()
	}
	return s + " outside the mesh"
}

func inMesh(w *pb.Workload) bool {
	return w.GetTunnelProtocol() == pb.TunnelProtocol_TUNNEL_PROTOCOL_HBONE
}

func firstAddr(w *pb.Workload) (netip.Addr, error) {
	for _, a := range w.GetAddresses() {
		if addr, err := netip.ParseAddr(a); err == nil {
			return addr.Unmap(), nil
		}
	}
	return netip.Addr{}, fmt.Errorf("pod %s has no IP yet", podName(w))
}

func withDefaults(req Request, mesh translate.Mesh, dst netip.AddrPort) Request {
	if req.Method == "" {
		req.Method = http.MethodGet
	}
	if req.Path == "" {
		req.Path = "/"
	}
	if req.Host == "" {
		host := dst.Addr().String()
		if req.Destination.Kind == TargetService {
			host = req.Destination.Name + "." + req.Destination.Namespace + ".svc." + mesh.ClusterDomain
		}
		req.Host = host + ":" + strconv.Itoa(int(dst.Port()))
	}
	if req.Header == nil {
		req.Header = http.Header{}
	}
	return req
}

// outcome is how one way through the mesh ends.
type outcome struct {
	allowed bool
	failed  bool
	// why names the decision and where it was taken, for the verdict.
	why string
}

// verdict sums up the outcomes: ALLOWED when all allow, else the first refusal (DENIED by
// a policy, or FAILED to deliver), marked PARTLY when other ways get through.
func verdict(outcomes []outcome) (bool, string) {
	i := slices.IndexFunc(outcomes, func(o outcome) bool { return !o.allowed })
	if i < 0 {
		return true, "ALLOWED"
	}
	refused := 0
	for _, o := range outcomes {
		if !o.allowed {
			refused++
		}
	}
	first := outcomes[i]
	word := "DENIED"
	if first.failed {
		word = "FAILED"
	}
	if refused < len(outcomes) {
		return false, fmt.Sprintf("PARTLY %s: %d of %d ways: %s", word, refused, len(outcomes), first.why)
	}
	return false, word + ": " + first.why
}

// errNotRouted reports a destination the mesh does not route.
var errNotRouted = errors.New("not routed by the mesh")

// policyRule splits a waypoint RBAC policy name, "<namespace>/<name>[<rule index>]" as
// controlplane/xds/waypoint names them, into the MeshPolicy and its rule.
func policyRule(name string) (policy, rule string) {
	i := strings.LastIndexByte(name, '[')
	if i < 0 || !strings.HasSuffix(name, "]") {
		return name, ""
	}
	return name[:i], "rules" + name[i:]
}

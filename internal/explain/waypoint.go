package explain

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/types"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controlplane/discovery"
	cpwaypoint "github.com/ambientmesh/ambient-operator/controlplane/xds/waypoint"
	"github.com/ambientmesh/ambient-operator/dataplane/waypoint/jwt"
	"github.com/ambientmesh/ambient-operator/dataplane/waypoint/rbac"
	"github.com/ambientmesh/ambient-operator/dataplane/waypoint/route"
	"github.com/ambientmesh/ambient-operator/dataplane/ztunnel/routing"
	"github.com/ambientmesh/ambient-operator/internal/spiffe"
)

// waypointHop is the state of one waypoint's evaluation.
type waypointHop struct {
	Hop
	res cpwaypoint.Resources
	// way is the client ztunnel's decision that led here: Target is what the waypoint
	// serves, Dial the waypoint pod, Peer its identity.
	way routing.Decision
}

// throughWaypoint evaluates the waypoint the client's ztunnel sends the connection to,
// then the destinations it forwards to.
func (b *builder) throughWaypoint(ctx context.Context, way routing.Decision) {
	h := &waypointHop{Hop: Hop{Proxy: ProxyWaypoint, Role: RoleWaypoint, At: way.Peer.String(), Layer: "L7"}, way: way}
	if pod := b.store.WorkloadByAddr(way.Dial.Addr()); pod != nil {
		h.Pod = podName(pod)
	}
	wp, err := b.waypointOf(ctx, way)
	if err != nil {
		b.fail(&h.Hop, err)
		return
	}
	h.At = wp.Namespace + "/" + wp.Name
	c := b.cluster
	h.res, err = cpwaypoint.Build(c.Mesh, wp, &c.State)
	if err != nil {
		b.fail(&h.Hop, fmt.Errorf("its configuration does not build: %w", err))
		return
	}
	l := listenerFor(h.res, way.Target)
	if l == nil {
		b.fail(&h.Hop, fmt.Errorf("no listener for %s: the waypoint refuses the connection (503)", way.Target))
		return
	}
	fc, err := readFilters(l)
	if err != nil {
		b.fail(&h.Hop, fmt.Errorf("listener %s: %w", l.GetName(), err))
		return
	}
	if fc.hcm != nil {
		b.httpAtWaypoint(ctx, h, fc)
		return
	}
	h.Layer = "L4"
	b.tcpAtWaypoint(h, fc)
}

// fail ends a way at h: it cannot deliver.
func (b *builder) fail(h *Hop, err error) {
	h.Decision, h.Detail = DecisionFailed, err.Error()
	b.add(*h)
	b.end(outcome{failed: true, why: fmt.Sprintf("%v (%s)", err, h.where())})
}

// waypointOf finds the Waypoint behind the address the client's ztunnel used: the one
// whose address and identity, as the control plane resolves them
// (discovery.ResolveWaypoints), the workload API named.
func (b *builder) waypointOf(ctx context.Context, way routing.Decision) (*meshv1.Waypoint, error) {
	gw := way.Service.GetWaypoint()
	if way.Workload != nil {
		gw = way.Workload.GetWaypoint()
	}
	resolved, err := discovery.ResolveWaypoints(ctx, b.objects, b.cluster.Mesh, nil)
	if err != nil {
		return nil, err
	}
	for key, info := range resolved {
		if info.Address == gw.GetAddress() && info.Identity == gw.GetIdentity() {
			return b.waypoint(key), nil
		}
	}
	return nil, fmt.Errorf("no Waypoint has address %s and identity %s", gw.GetAddress(), gw.GetIdentity())
}

func (b *builder) waypoint(key types.NamespacedName) *meshv1.Waypoint {
	for i := range b.cluster.Waypoints {
		if wp := &b.cluster.Waypoints[i]; wp.Namespace == key.Namespace && wp.Name == key.Name {
			return wp
		}
	}
	return nil
}

// listenerFor is the listener serving target, on its address or an additional one, as
// the waypoint picks it for a CONNECT.
func listenerFor(res cpwaypoint.Resources, target netip.AddrPort) *listenerv3.Listener {
	for _, l := range res.Listeners {
		addresses := []*corev3.Address{l.GetAddress()}
		for _, a := range l.GetAdditionalAddresses() {
			addresses = append(addresses, a.GetAddress())
		}
		for _, a := range addresses {
			sa := a.GetSocketAddress()
			ip, err := netip.ParseAddr(sa.GetAddress())
			if err == nil && ip.Unmap() == target.Addr().Unmap() && sa.GetPortValue() == uint32(target.Port()) {
				return l
			}
		}
	}
	return nil
}

// filters is a listener's filter chain, decoded.
type filters struct {
	hcm      *hcmv3.HttpConnectionManager
	jwt      *jwtv3.JwtAuthentication
	rbac     []*rbac.Filter
	policies int // RBAC policies over all RBAC filters
	cluster  string
}

func readFilters(l *listenerv3.Listener) (*filters, error) {
	out := &filters{}
	for _, chain := range l.GetFilterChains() {
		for _, f := range chain.GetFilters() {
			msg, err := f.GetTypedConfig().UnmarshalNew()
			if err != nil {
				return nil, fmt.Errorf("filter %s: %w", f.GetName(), err)
			}
			switch c := msg.(type) {
			case *hcmv3.HttpConnectionManager:
				out.hcm = c
			case *rbacnetv3.RBAC:
				err = out.addRBAC(rbac.CompileNetwork(c))
				out.policies += len(c.GetRules().GetPolicies())
			case *tcpproxyv3.TcpProxy:
				out.cluster = c.GetCluster()
			}
			if err != nil {
				return nil, fmt.Errorf("filter %s: %w", f.GetName(), err)
			}
		}
	}
	for _, f := range out.hcm.GetHttpFilters() {
		msg, err := f.GetTypedConfig().UnmarshalNew()
		if err != nil {
			return nil, fmt.Errorf("http filter %s: %w", f.GetName(), err)
		}
		switch c := msg.(type) {
		case *jwtv3.JwtAuthentication:
			out.jwt = c
		case *rbachttpv3.RBAC:
			if err := out.addRBAC(rbac.CompileHTTP(c)); err != nil {
				return nil, fmt.Errorf("http filter %s: %w", f.GetName(), err)
			}
			out.policies += len(c.GetRules().GetPolicies())
		}
	}
	return out, nil
}

func (f *filters) addRBAC(rf *rbac.Filter, err error) error {
	if err == nil {
		f.rbac = append(f.rbac, rf)
	}
	return err
}

// httpAtWaypoint runs the request through the listener's jwt_authn and RBAC filters and
// its route table, as the waypoint's HTTP handler does, then follows the clusters the
// route may choose.
func (b *builder) httpAtWaypoint(ctx context.Context, h *waypointHop, fc *filters) {
	r := b.httpRequest(ctx)
	var notes []string
	var metadata map[string]any
	if fc.jwt != nil {
		var denied bool
		metadata, notes, denied = b.authenticate(ctx, h, fc.jwt, r)
		if denied {
			return
		}
	}
	attrs := b.waypointAttributes(h.way)
	attrs.Method, attrs.Host, attrs.Path, attrs.Scheme, attrs.Header = r.Method, r.Host, r.URL.RequestURI(), "http", r.Header
	attrs.Metadata = map[string]map[string]any{cpwaypoint.JWTFilterName: metadata}
	if !b.authorizeAtWaypoint(h, fc, attrs, notes) {
		return
	}
	rc := h.res.Routes[fc.hcm.GetRds().GetRouteConfigName()]
	table, err := route.Compile(rc)
	if err != nil {
		b.fail(&h.Hop, fmt.Errorf("route configuration %s does not compile: %w", rc.GetName(), err))
		return
	}
	rt := table.Match(r)
	switch {
	case rt == nil:
		b.fail(&h.Hop, fmt.Errorf("%s; no route matches %s %s: the waypoint answers 404", h.Detail, r.Method, r.URL.RequestURI()))
	case rt.Direct != nil:
		b.answeredByWaypoint(h, fmt.Sprintf("route %s answers %d itself", rt.Name, rt.Direct.Status), rt.Direct.Status)
	case rt.Redirect != nil:
		status, location := rt.Redirect.Response(r)
		b.answeredByWaypoint(h, fmt.Sprintf("route %s redirects (%d) to %s", rt.Name, status, location), status)
	default:
		var clusters []string
		for _, wc := range rt.Forward.Clusters {
			if wc.Weight > 0 {
				clusters = append(clusters, wc.Name)
			}
		}
		h.Detail += "; " + describeForward(rt)
		b.toClusters(h, clusters, rt.Forward.ClusterNotFoundStatus)
	}
}

// httpRequest is the request as the waypoint receives it.
func (b *builder) httpRequest(ctx context.Context) *http.Request {
	u, _ := url.ParseRequestURI(b.req.Path) // checked by Explain
	return (&http.Request{Method: b.req.Method, URL: u, RequestURI: b.req.Path, Host: b.req.Host, Header: b.req.Header.Clone(),
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Body: http.NoBody}).WithContext(ctx)
}

// waypointAttributes are the connection's RBAC attributes at the waypoint: the client's
// ztunnel presents the client's identity and dials from the client pod's IP.
func (b *builder) waypointAttributes(way routing.Decision) *rbac.Attributes {
	return &rbac.Attributes{Principal: b.client.principal.String(), RemoteIP: b.client.ip, DirectRemoteIP: b.client.ip,
		DestinationIP: way.Target.Addr(), DestinationPort: way.Target.Port()}
}

// authenticate runs the waypoint's jwt_authn; denied is true when it answered (the hop
// is then recorded). notes say what was checked.
func (b *builder) authenticate(ctx context.Context, h *waypointHop, cfg *jwtv3.JwtAuthentication, r *http.Request) (metadata map[string]any, notes []string, denied bool) {
	authn, err := jwt.Compile(cfg, jwt.Options{HTTPClient: b.keySetClient(), Log: logr.Discard()})
	if err != nil {
		b.fail(&h.Hop, fmt.Errorf("jwt_authn does not compile: %w", err))
		return nil, nil, true
	}
	defer authn.Close()
	providers := slices.Sorted(maps.Keys(cfg.GetProviders()))
	issuers := make([]string, len(providers))
	for i, p := range providers {
		issuers[i] = fmt.Sprintf("%s (MeshPolicy %s)", cfg.GetProviders()[p].GetIssuer(), p)
	}
	checked := "a JWT of issuer " + strings.Join(issuers, " or ") + " is checked here on the paths the policy's rules cover"
	metadata, err = authn.Authenticate(ctx, r)
	var failure *jwt.Error
	switch {
	case errors.As(err, &failure):
		h.Decision, h.Policy = DecisionDenied, strings.Join(providers, ", ")
		h.Detail = fmt.Sprintf("jwt_authn answers %d %q; %s", failure.Status, failure.Reason, checked)
		b.add(h.Hop)
		b.end(outcome{why: fmt.Sprintf("%d %s (L7 jwt_authn, MeshPolicy %s) %s", failure.Status, failure.Reason, h.Policy, h.where())})
		return nil, nil, true
	case err != nil:
		b.fail(&h.Hop, fmt.Errorf("jwt_authn: %w", err))
		return nil, nil, true
	case len(metadata) > 0:
		return metadata, []string{"valid JWT: " + checked}, false
	}
	return nil, []string{checked + "; none is required for this request"}, false
}

// keySetClient fetches remote key sets only when the caller gave a client.
func (b *builder) keySetClient() *http.Client {
	if b.opts.KeySetClient != nil {
		return b.opts.KeySetClient
	}
	return &http.Client{Transport: refuseFetch{}}
}

type refuseFetch struct{}

func (refuseFetch) RoundTrip(r *http.Request) (*http.Response, error) {
	return nil, fmt.Errorf("not fetching %s: no key set client given", r.URL)
}

// authorizeAtWaypoint evaluates the listener's RBAC filters, DENY then ALLOW; false when
// they deny (the hop is then recorded).
func (b *builder) authorizeAtWaypoint(h *waypointHop, fc *filters, attrs *rbac.Attributes, notes []string) bool {
	dec := rbac.EvaluateChain(attrs, fc.rbac...)
	policy, rule := policyRule(dec.Policy)
	h.Policy, h.Rule = policy, rule
	var text string
	switch {
	case !dec.Allowed && dec.Policy != "":
		text = fmt.Sprintf("denied by MeshPolicy %s %s (%s)", policy, rule, dec.Action)
	case !dec.Allowed:
		text = "denied: no ALLOW policy matched"
	case dec.Policy != "" && dec.Action == rbac.ActionAllow:
		text = fmt.Sprintf("allowed by MeshPolicy %s %s", policy, rule)
	case fc.policies == 0:
		text = "no policy applies here"
	default:
		text = "no DENY rule matched and no ALLOW policy applies"
	}
	h.Detail = strings.Join(append(notes, fmt.Sprintf("%s; principal %s from %s", text, attrs.Principal, attrs.RemoteIP)), "; ")
	h.Decision = DecisionAllowed
	if dec.Allowed {
		return true
	}
	h.Decision = DecisionDenied
	b.add(h.Hop)
	if policy != "" {
		b.end(outcome{why: fmt.Sprintf("MeshPolicy %s (%s) %s", policy, h.Layer, h.where())})
	} else {
		b.end(outcome{why: fmt.Sprintf("no ALLOW policy matched (%s) %s", h.Layer, h.where())})
	}
	return false
}

// answeredByWaypoint ends the way at the waypoint, which answers the request itself.
func (b *builder) answeredByWaypoint(h *waypointHop, what string, status int) {
	h.Detail += "; " + what
	if status >= 400 {
		b.fail(&h.Hop, errors.New(h.Detail))
		return
	}
	b.add(h.Hop)
	b.end(outcome{allowed: true})
}

// describeForward names the route and where it sends requests, with its weights, and
// what it does besides (mirrors, faults).
func describeForward(rt *route.Route) string {
	var total uint64
	for _, wc := range rt.Forward.Clusters {
		total += uint64(wc.Weight)
	}
	targets := make([]string, 0, len(rt.Forward.Clusters))
	for _, wc := range rt.Forward.Clusters {
		if len(rt.Forward.Clusters) == 1 {
			targets = append(targets, wc.Name)
		} else {
			targets = append(targets, fmt.Sprintf("%s %d%%", wc.Name, uint64(wc.Weight)*100/total))
		}
	}
	s := "route " + rt.Name + " → " + strings.Join(targets, ", ")
	for _, m := range rt.Forward.Mirrors {
		s += fmt.Sprintf("; mirrors %d‰ to %s", m.PerMillion/1000, m.Cluster)
	}
	if f := rt.Fault; f != nil {
		s += fmt.Sprintf("; injects faults (abort %d for %d‰, delay %s for %d‰; not simulated here)",
			f.AbortStatus, f.AbortPerMillion/1000, f.Delay, f.DelayPerMillion/1000)
	}
	return s
}

// tcpAtWaypoint evaluates a TCP listener: network RBAC, then tcp_proxy to its cluster.
func (b *builder) tcpAtWaypoint(h *waypointHop, fc *filters) {
	if !b.authorizeAtWaypoint(h, fc, b.waypointAttributes(h.way), nil) {
		return
	}
	h.Detail += "; tcp_proxy → " + fc.cluster
	b.toClusters(h, []string{fc.cluster}, http.StatusServiceUnavailable)
}

// endpoint is a destination pod port a waypoint cluster holds.
type endpoint struct {
	workload *pb.Workload
	port     uint16
}

// toClusters records the waypoint hop with where its clusters lead, then the destination
// ztunnel's decision for each endpoint the waypoint may pick (health HEALTHY or UNKNOWN,
// as the waypoint's load balancer takes them). A cluster that does not exist is answered
// with notFoundStatus.
func (b *builder) toClusters(h *waypointHop, clusters []string, notFoundStatus int) {
	var endpoints []endpoint
	var problems []string
	for _, name := range clusters {
		if h.res.Clusters[name] == nil {
			problems = append(problems, fmt.Sprintf("cluster %s does not exist: the waypoint answers %d", name, notFoundStatus))
			continue
		}
		found := 0
		for _, locality := range h.res.Endpoints[name].GetEndpoints() {
			for _, le := range locality.GetLbEndpoints() {
				if hs := le.GetHealthStatus(); hs != corev3.HealthStatus_HEALTHY && hs != corev3.HealthStatus_UNKNOWN {
					continue
				}
				sa := le.GetEndpoint().GetAddress().GetSocketAddress()
				ip, err := netip.ParseAddr(sa.GetAddress())
				w := b.store.WorkloadByAddr(ip)
				if err != nil || w == nil {
					problems = append(problems, fmt.Sprintf("cluster %s: endpoint %s is no known pod", name, sa.GetAddress()))
					continue
				}
				endpoints = append(endpoints, endpoint{workload: w, port: uint16(sa.GetPortValue())})
				found++
			}
		}
		if found == 0 {
			problems = append(problems, fmt.Sprintf("cluster %s has no healthy endpoint: the waypoint answers 503", name))
		}
	}
	if len(problems) > 0 {
		h.Detail += "; " + strings.Join(problems, "; ")
	}
	if len(endpoints) == 0 {
		b.fail(&h.Hop, errors.New(h.Detail))
		return
	}
	b.add(h.Hop)
	for _, p := range problems {
		b.end(outcome{failed: true, why: p + " (" + h.where() + ")"})
	}
	for _, ep := range endpoints {
		b.toDestination(ep.workload, ep.port, b.relayed(h, ep.workload))
	}
}

// relayed is the client as the destination ztunnel sees a connection from the waypoint:
// the original client (address from the waypoint's Forwarded header, identity) when the
// waypoint is the workload's own or that of a Service it backs, as the ztunnel trusts
// only those; the waypoint pod itself otherwise.
func (b *builder) relayed(h *waypointHop, dst *pb.Workload) seenClient {
	peer := h.way.Peer.String()
	if b.store.IsWaypointOf(dst, peer) {
		return seenClient{ip: b.client.ip, principal: b.client.principal,
			relay: fmt.Sprintf("relayed by waypoint %s with Forwarded: for=%s", h.At, b.client.ip)}
	}
	id, _ := spiffe.Parse(peer)
	return seenClient{ip: h.way.Dial.Addr(), principal: id,
		relay: fmt.Sprintf("waypoint %s itself: it is not this pod's waypoint, so its Forwarded header is not trusted", h.At)}
}

package waypoint

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	// Also the types that clusters from the control plane embed (the TLS transport
	// socket): registered so that they decode and show in /config_dump.
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"

	"github.com/ambientmesh/ambient-operator/dataplane/waypoint/jwt"
	"github.com/ambientmesh/ambient-operator/dataplane/waypoint/rbac"
	"github.com/ambientmesh/ambient-operator/dataplane/waypoint/route"
	"github.com/ambientmesh/ambient-operator/dataplane/waypoint/upstream"
)

// TypeURLs are the xDS types the waypoint subscribes to: the trust bundle (SDS Secret
// ROOTCA) first, so that it is in place before the listeners serve, then clusters before
// listeners so that a listener's routes find their clusters.
var TypeURLs = []string{resourcev3.SecretType, resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType, resourcev3.RouteType}

// RootCASecret names the SDS Secret that carries the mesh's trust bundle (Istio's name):
// its validation_context.trusted_ca holds every root, PEM, inline. Secrets of other names
// are held (and shown in /config_dump) but not used.
const RootCASecret = "ROOTCA"

// listener is a compiled Listener: where it listens and what it runs there.
type listener struct {
	name  string
	addrs []netip.AddrPort
	http  *httpChain // set on HTTP ports
	tcp   *tcpChain  // set on TCP ports
}

// httpChain is an http_connection_manager's filters, in order.
type httpChain struct {
	routeConfig string
	jwt         *jwt.Authenticator // nil without a jwt_authn filter
	rbac        []*rbac.Filter     // DENY then ALLOW, as configured
	fault       bool               // the fault filter is present: routes' faults apply
}

// tcpChain is a network rbac + tcp_proxy filter chain.
type tcpChain struct {
	rbac    []*rbac.Filter
	cluster string
}

// snapshot is one consistent, immutable view of the configuration (the upstream Set is
// shared across snapshots: it keeps per-host state and updates itself atomically).
type snapshot struct {
	listeners map[string]*listener
	byAddr    map[netip.AddrPort]*listener
	routes    map[string]*route.Table
	// trustRoots are the roots of the Secret ROOTCA; nil until one arrives (or after it
	// is removed).
	trustRoots *x509.CertPool
}

func (s *snapshot) listenerFor(target netip.AddrPort) *listener {
	return s.byAddr[netip.AddrPortFrom(target.Addr().Unmap(), target.Port())]
}

// resource is one held xDS resource, for the config dump.
type resource struct {
	version string
	msg     proto.Message
}

// store holds the xDS resources the control plane sent and the snapshot compiled from
// them. It is the xdsclient.Handler: a response that does not compile is NACKed and
// nothing of it is applied, so the waypoint keeps serving its last good configuration.
type store struct {
	log      logr.Logger
	clusters *upstream.Set
	jwtOpts  jwt.Options

	mu        sync.Mutex
	resources map[string]map[string]resource // type URL → name → resource
	compiled  map[string]*listener           // listener name → compiled (reused while unchanged)
	lastNack  string
	current   atomic.Pointer[snapshot]
}

func newStore(clusters *upstream.Set, jwtOpts jwt.Options, log logr.Logger) *store {
	s := &store{log: log, clusters: clusters, jwtOpts: jwtOpts, resources: map[string]map[string]resource{}, compiled: map[string]*listener{}}
	for _, t := range TypeURLs {
		s.resources[t] = map[string]resource{}
	}
	s.current.Store(&snapshot{listeners: map[string]*listener{}, byAddr: map[netip.AddrPort]*listener{}, routes: map[string]*route.Table{}})
	return s
}

func (s *store) snapshot() *snapshot { return s.current.Load() }

// Apply implements xdsclient.Handler.
func (s *store) Apply(typeURL string, upserts map[string]*anypb.Any, removed []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	held, ok := s.resources[typeURL]
	if !ok {
		return fmt.Errorf("waypoint: unexpected type %s", typeURL)
	}
	next := make(map[string]resource, len(held)+len(upserts))
	for name, r := range held {
		next[name] = r
	}
	for _, name := range removed {
		delete(next, name)
	}
	for name, a := range upserts {
		msg, err := a.UnmarshalNew()
		if err != nil {
			return s.nack(fmt.Errorf("%s %q: %w", typeURL, name, err))
		}
		if v, ok := msg.(interface{ ValidateAll() error }); ok {
			if err := v.ValidateAll(); err != nil {
				return s.nack(fmt.Errorf("%s %q: %w", typeURL, name, err))
			}
		}
		next[name] = resource{version: resourceVersion(a), msg: msg}
	}
	candidate := make(map[string]map[string]resource, len(s.resources))
	for t, m := range s.resources {
		candidate[t] = m
	}
	candidate[typeURL] = next
	snap, compiled, err := s.compile(candidate, typeURL)
	if err != nil {
		return s.nack(err)
	}
	s.resources = candidate
	old := s.compiled
	s.compiled = compiled
	s.current.Store(snap)
	closeReplaced(old, compiled)
	return nil
}

func (s *store) nack(err error) error {
	s.lastNack = err.Error()
	s.log.Info("configuration rejected (NACK); keeping the last good one", "error", err.Error())
	return err
}

// compile builds a snapshot from a full set of resources. Only what changed is compiled
// again: listeners that were not touched keep their compiled filters (a JWT provider keeps
// its fetched keys).
func (s *store) compile(res map[string]map[string]resource, changed string) (*snapshot, map[string]*listener, error) {
	prev := s.snapshot()
	snap := &snapshot{listeners: prev.listeners, byAddr: prev.byAddr, routes: prev.routes, trustRoots: prev.trustRoots}
	compiled := s.compiled
	switch changed {
	case resourcev3.SecretType:
		snap.trustRoots = nil
		if r, ok := res[resourcev3.SecretType][RootCASecret]; ok {
			roots, err := compileTrustedCA(r.msg.(*tlsv3.Secret))
			if err != nil {
				return nil, nil, fmt.Errorf("secret %q: %w", RootCASecret, err)
			}
			snap.trustRoots = roots
		}
	case resourcev3.ClusterType, resourcev3.EndpointType:
		clusters := map[string]*clusterv3.Cluster{}
		for name, r := range res[resourcev3.ClusterType] {
			// Only EDS clusters carry traffic here. Others exist for an Envoy's sake
			// (the cluster a jwt_authn provider fetches its remote JWKS through); the
			// waypoint fetches those URIs itself, so it holds them without using them.
			if c := r.msg.(*clusterv3.Cluster); c.GetType() == clusterv3.Cluster_EDS {
				clusters[name] = c
			}
		}
		loads := map[string]*endpointv3.ClusterLoadAssignment{}
		for name, r := range res[resourcev3.EndpointType] {
			loads[name] = r.msg.(*endpointv3.ClusterLoadAssignment)
		}
		if err := s.clusters.Update(clusters, loads); err != nil {
			return nil, nil, err
		}
	case resourcev3.RouteType:
		snap.routes = map[string]*route.Table{}
		for name, r := range res[resourcev3.RouteType] {
			t, err := route.Compile(r.msg.(*routev3.RouteConfiguration))
			if err != nil {
				return nil, nil, err
			}
			snap.routes[name] = t
		}
	case resourcev3.ListenerType:
		var err error
		if compiled, err = s.compileListeners(res[resourcev3.ListenerType]); err != nil {
			return nil, nil, err
		}
		snap.listeners = compiled
		snap.byAddr = map[netip.AddrPort]*listener{}
		for name, l := range compiled {
			for _, a := range l.addrs {
				if other, dup := snap.byAddr[a]; dup {
					closeReplaced(compiled, s.compiled)
					return nil, nil, fmt.Errorf("listener %q: address %s is also listener %q's", name, a, other.name)
				}
				snap.byAddr[a] = l
			}
		}
	}
	return snap, compiled, nil
}

// compileTrustedCA reads the trust bundle of the Secret ROOTCA: a validation_context
// with trusted_ca inline (PEM), every certificate of which must parse. The waypoint uses
// the bundle to verify its HBONE peers and nothing else: any other check the context
// asks for (SAN matchers, CRLs, pins) would go unenforced, so it is refused instead.
func compileTrustedCA(secret *tlsv3.Secret) (*x509.CertPool, error) {
	vc := secret.GetValidationContext()
	if vc == nil {
		return nil, errors.New("want a validation_context")
	}
	others := proto.Clone(vc).(*tlsv3.CertificateValidationContext)
	others.TrustedCa = nil
	if proto.Size(others) != 0 {
		return nil, errors.New("validation_context: only trusted_ca is supported")
	}
	var bundle []byte
	switch ca := vc.GetTrustedCa().GetSpecifier().(type) {
	case *corev3.DataSource_InlineBytes:
		bundle = ca.InlineBytes
	case *corev3.DataSource_InlineString:
		bundle = []byte(ca.InlineString)
	default:
		return nil, errors.New("validation_context.trusted_ca: want the roots inline (inline_bytes or inline_string)")
	}
	pool := x509.NewCertPool()
	found := 0
	for {
		var block *pem.Block
		if block, bundle = pem.Decode(bundle); block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("validation_context.trusted_ca: certificate %d: %w", found+1, err)
		}
		pool.AddCert(cert)
		found++
	}
	if found == 0 {
		return nil, errors.New("validation_context.trusted_ca: no PEM certificate")
	}
	return pool, nil
}

// closeReplaced stops the JWT key refreshers of listeners in old that next no longer uses.
func closeReplaced(old, next map[string]*listener) {
	for name, l := range old {
		if next[name] != l && l.http != nil && l.http.jwt != nil {
			l.http.jwt.Close()
		}
	}
}

// compileListeners compiles every listener that changed and reuses the others. On an
// error, what was compiled in this round is closed again.
func (s *store) compileListeners(res map[string]resource) (map[string]*listener, error) {
	held := s.resources[resourcev3.ListenerType]
	out := make(map[string]*listener, len(res))
	for name, r := range res {
		if l := s.compiled[name]; l != nil && held[name].version == r.version && r.version != "" {
			out[name] = l
			continue
		}
		l, err := s.compileListener(r.msg.(*listenerv3.Listener))
		if err != nil {
			closeReplaced(out, s.compiled)
			return nil, fmt.Errorf("listener %q: %w", name, err)
		}
		out[name] = l
	}
	return out, nil
}

func resourceVersion(a *anypb.Any) string {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(a)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("%x", hash(b))
}

func hash(b []byte) uint64 {
	// FNV-1a: a cheap content fingerprint to tell an unchanged listener from a changed one.
	h := uint64(14695981039346656037)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h
}

// compileListener turns a Listener into its addresses and filter chain. The waypoint
// serves one filter chain per listener (the control plane makes one listener per Service
// port); anything it cannot honour is an error, never silently skipped.
func (s *store) compileListener(l *listenerv3.Listener) (*listener, error) {
	out := &listener{name: l.GetName()}
	addrs := []*corev3.Address{l.GetAddress()}
	for _, a := range l.GetAdditionalAddresses() {
		addrs = append(addrs, a.GetAddress())
	}
	for _, a := range addrs {
		sa := a.GetSocketAddress()
		ip, err := netip.ParseAddr(sa.GetAddress())
		if err != nil || sa.GetPortValue() == 0 {
			return nil, fmt.Errorf("address %v: want a literal IP and a port", a)
		}
		out.addrs = append(out.addrs, netip.AddrPortFrom(ip.Unmap(), uint16(sa.GetPortValue())))
	}
	chains := l.GetFilterChains()
	if len(chains) != 1 || chains[0].GetFilterChainMatch() != nil {
		return nil, errors.New("want exactly one filter chain without a filter_chain_match")
	}
	var err error
	for _, f := range chains[0].GetFilters() {
		msg, uerr := f.GetTypedConfig().UnmarshalNew()
		if uerr != nil {
			return nil, fmt.Errorf("filter %q: %w", f.GetName(), uerr)
		}
		switch c := msg.(type) {
		case *hcmv3.HttpConnectionManager:
			out.http, err = s.compileHCM(c)
		case *rbacnetv3.RBAC:
			var rf *rbac.Filter
			if rf, err = rbac.CompileNetwork(c); err == nil {
				if out.tcp == nil {
					out.tcp = &tcpChain{}
				}
				out.tcp.rbac = append(out.tcp.rbac, rf)
			}
		case *tcpproxyv3.TcpProxy:
			if c.GetCluster() == "" {
				return nil, fmt.Errorf("filter %q: tcp_proxy needs a cluster (weighted_clusters are not supported)", f.GetName())
			}
			if out.tcp == nil {
				out.tcp = &tcpChain{}
			}
			out.tcp.cluster = c.GetCluster()
		default:
			return nil, fmt.Errorf("filter %q: %T is not supported", f.GetName(), msg)
		}
		if err != nil {
			return nil, fmt.Errorf("filter %q: %w", f.GetName(), err)
		}
	}
	switch {
	case out.http != nil && out.tcp != nil:
		return nil, errors.New("a filter chain is either HTTP (http_connection_manager) or TCP (rbac + tcp_proxy), not both")
	case out.http == nil && (out.tcp == nil || out.tcp.cluster == ""):
		return nil, errors.New("the filter chain ends in neither http_connection_manager nor tcp_proxy")
	}
	return out, nil
}

func (s *store) compileHCM(hcm *hcmv3.HttpConnectionManager) (*httpChain, error) {
	rds := hcm.GetRds()
	if rds == nil || rds.GetRouteConfigName() == "" {
		return nil, errors.New("http_connection_manager: routes must come from RDS (rds.route_config_name)")
	}
	chain := &httpChain{routeConfig: rds.GetRouteConfigName()}
	filters := hcm.GetHttpFilters()
	for i, f := range filters {
		msg, err := f.GetTypedConfig().UnmarshalNew()
		if err != nil {
			return nil, fmt.Errorf("http filter %q: %w", f.GetName(), err)
		}
		switch c := msg.(type) {
		case *jwtv3.JwtAuthentication:
			if chain.jwt != nil {
				err = errors.New("only one jwt_authn filter is supported")
			} else {
				chain.jwt, err = jwt.Compile(c, s.jwtOpts)
			}
		case *rbachttpv3.RBAC:
			var rf *rbac.Filter
			if rf, err = rbac.CompileHTTP(c); err == nil {
				chain.rbac = append(chain.rbac, rf)
			}
		case *faultv3.HTTPFault:
			// Faults come from the routes' typed_per_filter_config; a filter-level fault
			// would apply to every request, which the contract does not use.
			if proto.Size(c) != 0 {
				err = errors.New("filter-level faults are not supported: configure them per route")
			}
			chain.fault = true
		case *routerv3.Router:
			if i != len(filters)-1 {
				err = errors.New("the router must be the last http filter")
			}
		default:
			err = fmt.Errorf("%T is not supported", msg)
		}
		if err != nil {
			if chain.jwt != nil {
				chain.jwt.Close()
			}
			return nil, fmt.Errorf("http filter %q: %w", f.GetName(), err)
		}
	}
	if len(filters) == 0 {
		return nil, errors.New("http_connection_manager: no router filter")
	}
	if _, ok := mustUnmarshal(filters[len(filters)-1].GetTypedConfig()).(*routerv3.Router); !ok {
		if chain.jwt != nil {
			chain.jwt.Close()
		}
		return nil, errors.New("http_connection_manager: the last http filter must be the router")
	}
	return chain, nil
}

func mustUnmarshal(a *anypb.Any) proto.Message {
	m, _ := a.UnmarshalNew()
	return m
}

// Package waypointtest runs a real waypoint in-process, in a small mesh made of real parts
// on loopback: a test CA, a go-control-plane delta ADS server with Envoy's resource types,
// backends (HTTP/1.1 and h2c, gRPC, or raw TCP) each behind an HBONE server that plays its
// node's ztunnel (it checks nothing, records what it saw, and connects the stream to the
// app), and clients that reach the waypoint over HBONE as a client's ztunnel does — Go
// HTTP clients, raw streams (Dialer), or a loopback forwarder for clients that cannot
// speak HBONE (curl). It also builds the Envoy resources the tests feed, each checked with
// ValidateAll as an Envoy would check it, among them the trust bundle (RootCA).
package waypointtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ambientmesh/ambient-operator/internal/testwait"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/ambientmesh/ambient-operator/dataplane/hbone"
	"github.com/ambientmesh/ambient-operator/dataplane/waypoint"
	"github.com/ambientmesh/ambient-operator/internal/spiffe"
	"github.com/ambientmesh/ambient-operator/internal/testca"
	"github.com/ambientmesh/ambient-operator/internal/xdstest"
)

// Identities used by the mesh.
var (
	WaypointID = spiffe.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "waypoint"}
	ClientID   = spiffe.ID{TrustDomain: "cluster.local", Namespace: "client", ServiceAccount: "curl"}
)

// Mesh is one waypoint and the parts around it.
type Mesh struct {
	t        testing.TB
	CA       *testca.CA
	Certs    *hbone.CertStore
	Roots    *hbone.Bundle
	XDS      *xdstest.Server
	Waypoint *waypoint.Waypoint
	// Addr is the waypoint's HBONE listener.
	Addr netip.AddrPort

	mu     sync.Mutex
	nextIP int
	// stop cancels the waypoint's Run and returns what it returned (once).
	stop func() error
}

// Options for Start.
type Options struct {
	// AccessLog receives the waypoint's access log (nil: none).
	AccessLog io.Writer
	// HTTPClient is the HTTP client fetching remote JWKS.
	HTTPClient *http.Client
	// MinDrainPeriod is the waypoint's (default none: it stops accepting at once).
	MinDrainPeriod time.Duration
}

// Start runs a waypoint (with empty configuration) until the test ends.
func Start(t testing.TB, opts Options) *Mesh {
	t.Helper()
	ca := testca.New(t)
	m := &Mesh{t: t, CA: ca, Certs: hbone.NewCertStore(), Roots: hbone.NewBundle(ca.Pool()), nextIP: 10}
	m.Certs.Put(WaypointID, ca.Issue(t, WaypointID))
	m.Certs.Put(ClientID, ca.Issue(t, ClientID))
	m.XDS = xdstest.New(waypoint.TypeURLs...)
	m.XDS.Serve(t, "127.0.0.1:0")
	w, err := waypoint.New(waypoint.Config{
		Namespace: WaypointID.Namespace, Name: "waypoint", PodName: "waypoint-0", Identity: WaypointID,
		XDSAddress:     m.XDS.Addr,
		XDSDialOptions: []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())},
		Certs:          m.Certs, Roots: m.Roots,
		HBONEAddress: "-", AdminAddress: "-", MetricsAddress: "-", ReadinessAddress: "-",
		DrainPeriod: 2 * time.Second, MinDrainPeriod: opts.MinDrainPeriod, AccessLog: opts.AccessLog, HTTPClient: opts.HTTPClient,
	})
	if err != nil {
		t.Fatal(err)
	}
	m.Waypoint = w
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m.Addr = l.Addr().(*net.TCPAddr).AddrPort()
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- w.Run(ctx) }()
	serve(w, l)
	m.stop = sync.OnceValue(func() error {
		cancel()
		return <-ran
	})
	t.Cleanup(func() {
		if err := m.stop(); err != nil {
			t.Errorf("waypoint Run: %v", err)
		}
	})
	return m
}

// Stop stops the waypoint as SIGTERM would (it drains for up to its DrainPeriod, 2s) and
// returns what Run returned. Later calls return the same.
func (m *Mesh) Stop() error { return m.stop() }

// LoopbackIP returns a fresh address in 127.0.0.0/8 for a backend or a client.
func (m *Mesh) LoopbackIP() netip.Addr {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.nextIP++
	return netip.AddrFrom4([4]byte{127, 0, byte(m.nextIP / 250), byte(1 + m.nextIP%250)})
}

// Backend is one endpoint: an app on App behind an HBONE server on <ip>:15008 that plays
// its node's ztunnel.
type Backend struct {
	ID  spiffe.ID
	App netip.AddrPort
	// Requests counts requests the app served.
	Requests atomic.Int64
	// Tunnels counts CONNECT streams the ztunnel stand-in accepted.
	Tunnels atomic.Int64

	mu        sync.Mutex
	forwarded []string
	peers     []spiffe.ID
}

// Forwarded returns the Forwarded headers of the CONNECTs received so far.
func (b *Backend) Forwarded() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.forwarded...)
}

// Peers returns the HBONE peers (who opened the tunnels) seen so far.
func (b *Backend) Peers() []spiffe.ID {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]spiffe.ID(nil), b.peers...)
}

// Backend starts an app serving h (HTTP/1.1 and h2c) with identity ns/shop/sa/<sa>.
func (m *Mesh) Backend(sa string, h http.Handler) *Backend {
	m.t.Helper()
	b := m.newBackend(sa)
	counting := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.Requests.Add(1)
		h.ServeHTTP(w, r)
	})
	appSrv := &http.Server{Handler: counting, Protocols: httpAndH2C()}
	serve(appSrv, m.listen(b.App))
	m.t.Cleanup(func() { appSrv.Close() })
	m.ztunnel(b)
	return b
}

// GRPCBackend starts a gRPC server (h2c, as gRPC speaks it without TLS) with the services
// register adds, behind its ztunnel stand-in. Requests counts the RPCs it served.
func (m *Mesh) GRPCBackend(sa string, register func(*grpc.Server)) *Backend {
	m.t.Helper()
	b := m.newBackend(sa)
	srv := grpc.NewServer(
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			b.Requests.Add(1)
			return h(ctx, req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			b.Requests.Add(1)
			return h(srv, ss)
		}))
	register(srv)
	serve(srv, m.listen(b.App))
	m.t.Cleanup(srv.Stop)
	m.ztunnel(b)
	return b
}

// TCPBackend starts a raw TCP app that runs serve on each accepted connection (serve
// closes it), behind its ztunnel stand-in. Requests counts the connections.
func (m *Mesh) TCPBackend(sa string, serve func(net.Conn)) *Backend {
	m.t.Helper()
	b := m.newBackend(sa)
	l := m.listen(b.App)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			b.Requests.Add(1)
			go serve(c)
		}
	}()
	m.t.Cleanup(func() { l.Close() })
	m.ztunnel(b)
	return b
}

// Unreachable is an endpoint on a fresh address where nothing listens, neither the app
// nor a ztunnel: dialing it fails at once (connection refused).
func (m *Mesh) Unreachable(sa string) *Backend {
	return &Backend{ID: spiffe.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: sa}, App: netip.AddrPortFrom(m.LoopbackIP(), 8080)}
}

// Identity issues a mesh certificate for ns/sa (for a client with another identity) and
// returns its SPIFFE ID.
func (m *Mesh) Identity(ns, sa string) spiffe.ID {
	id := spiffe.ID{TrustDomain: "cluster.local", Namespace: ns, ServiceAccount: sa}
	m.Certs.Put(id, m.CA.Issue(m.t, id))
	return id
}

// newBackend gives a backend a fresh address and a certificate for its identity.
func (m *Mesh) newBackend(sa string) *Backend {
	ip := m.LoopbackIP()
	b := &Backend{ID: spiffe.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: sa}, App: netip.AddrPortFrom(ip, 8080)}
	m.Certs.Put(b.ID, m.CA.Issue(m.t, b.ID))
	return b
}

// serve runs s on l in the background. Its error is dropped: Serve returns when the
// test's cleanup ends s, and a server that fails sooner fails the requests sent to it.
func serve(s interface{ Serve(net.Listener) error }, l net.Listener) {
	go func() { _ = s.Serve(l) }()
}

// httpAndH2C has a server take HTTP/1.1 and h2c (prior knowledge), as an app does.
func httpAndH2C() *http.Protocols {
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	return &p
}

func (m *Mesh) listen(addr netip.AddrPort) net.Listener {
	m.t.Helper()
	l, err := net.Listen("tcp", addr.String())
	if err != nil {
		m.t.Fatal(err)
	}
	return l
}

// ztunnel starts the HBONE server on <backend ip>:15008 that plays the backend node's
// ztunnel: it records each CONNECT and joins the stream to the app.
func (m *Mesh) ztunnel(b *Backend) {
	t := m.t
	t.Helper()
	srv, err := hbone.NewServer(hbone.ServerConfig{Identity: b.ID, Certs: m.Certs, Roots: m.Roots,
		Handler: hbone.HandlerFunc(func(ctx context.Context, req *hbone.Request) error {
			b.mu.Lock()
			b.forwarded = append(b.forwarded, req.Header.Get("Forwarded"))
			b.peers = append(b.peers, req.Peer)
			b.mu.Unlock()
			b.Tunnels.Add(1)
			up, err := (&net.Dialer{}).DialContext(ctx, "tcp", req.Target.String())
			if err != nil {
				return hbone.Reject(http.StatusServiceUnavailable, "%v", err)
			}
			st, err := req.Accept()
			if err != nil {
				up.Close()
				return err
			}
			return hbone.Join(st, up, nil)
		})})
	if err != nil {
		t.Fatal(err)
	}
	hl := m.listen(netip.AddrPortFrom(b.App.Addr(), 15008))
	serve(srv, hl)
	t.Cleanup(func() { srv.Close() })
}

// Dialer returns a function that opens a stream to a Service VIP:port (or workload
// address) through the waypoint, from source address src (zero: 127.0.0.1) with identity
// id, as a client's ztunnel would: an HBONE CONNECT to the waypoint with that target. A
// refused CONNECT is an *hbone.StatusError. Its connections close when the test ends.
func (m *Mesh) Dialer(id spiffe.ID, src netip.Addr) func(ctx context.Context, target netip.AddrPort) (net.Conn, error) {
	return m.DialerWith(m.Certs, id, src)
}

// DialerWith is Dialer for a client whose certificate comes from certs, such as one
// issued by another CA (trust tests); the client still trusts the mesh's roots (Roots).
func (m *Mesh) DialerWith(certs hbone.CertSource, id spiffe.ID, src netip.Addr) func(ctx context.Context, target netip.AddrPort) (net.Conn, error) {
	pool, err := hbone.NewPool(hbone.PoolConfig{Certs: certs, Roots: m.Roots, Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := net.Dialer{}
		if src.IsValid() {
			d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))
		}
		return d.DialContext(ctx, network, addr)
	}})
	if err != nil {
		m.t.Fatal(err)
	}
	m.t.Cleanup(func() { pool.Close() })
	return func(ctx context.Context, target netip.AddrPort) (net.Conn, error) {
		return pool.Dial(ctx, hbone.DialRequest{Source: id, Peer: WaypointID, Target: target, Via: m.Addr})
	}
}

// Client returns an HTTP client that reaches Service VIPs through the waypoint (see
// Dialer): each connection is an HBONE stream whose CONNECT target is the VIP:port of the
// request's URL. h2 makes it speak h2c (prior knowledge), else HTTP/1.1.
func (m *Mesh) Client(id spiffe.ID, src netip.Addr, h2 bool) *http.Client {
	tunnel := m.Dialer(id, src)
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		target, err := netip.ParseAddrPort(addr)
		if err != nil {
			return nil, err
		}
		return tunnel(ctx, target)
	}
	tr := &http.Transport{DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) { return dial(ctx, addr) }}
	if h2 {
		var h2c http.Protocols
		h2c.SetUnencryptedHTTP2(true)
		tr.Protocols = &h2c
	}
	return &http.Client{Transport: tr}
}

// Forwarder listens on a loopback port and tunnels each accepted connection through the
// waypoint to target, as a client's ztunnel captures an app's connection: a client that
// cannot speak HBONE (curl) talks plain HTTP to the returned address.
func (m *Mesh) Forwarder(id spiffe.ID, target netip.AddrPort) netip.AddrPort {
	m.t.Helper()
	tunnel := m.Dialer(id, netip.Addr{})
	l := m.listen(netip.MustParseAddrPort("127.0.0.1:0"))
	m.t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				up, err := tunnel(ctx, target)
				cancel()
				if err != nil {
					return
				}
				_ = hbone.Join(c, up, nil) // however the relay ends, the forwarded client sees it
			}()
		}
	}()
	return l.Addr().(*net.TCPAddr).AddrPort()
}

// Push sets resources (each validated with ValidateAll) on the xDS server, one type at a
// time in the order given, and waits until the waypoint ACKed or NACKed each type. It
// returns the NACK messages received.
func (m *Mesh) Push(resources ...proto.Message) []string {
	t := m.t
	t.Helper()
	byType := map[string]map[string]proto.Message{}
	var order []string
	for _, r := range resources {
		if v, ok := r.(interface{ ValidateAll() error }); ok {
			if err := v.ValidateAll(); err != nil {
				t.Fatalf("%T %s does not validate: %v", r, nameOf(r), err)
			}
		}
		typeURL := typeOf(r)
		if byType[typeURL] == nil {
			byType[typeURL] = map[string]proto.Message{}
			order = append(order, typeURL)
		}
		byType[typeURL][nameOf(r)] = r
	}
	nacksBefore := len(m.XDS.Nacks())
	for _, typeURL := range order {
		before := m.answers()
		m.XDS.Set(t, typeURL, byType[typeURL])
		m.waitAnswer(before, "the waypoint to answer the "+typeURL+" push")
	}
	return m.XDS.Nacks()[nacksBefore:]
}

// Delete removes resources of one type from the xDS server and waits until the waypoint
// answered.
func (m *Mesh) Delete(typeURL string, names ...string) {
	t := m.t
	t.Helper()
	before := m.answers()
	m.XDS.Delete(t, typeURL, names...)
	m.waitAnswer(before, "the waypoint to answer the "+typeURL+" removal")
}

// answers counts the waypoint's answers (ACKs and NACKs) so far.
func (m *Mesh) answers() int { return m.XDS.Acks() + len(m.XDS.Nacks()) }

// waitAnswer waits for an answer (ACK or NACK) beyond the before already counted.
func (m *Mesh) waitAnswer(before int, what string) {
	m.t.Helper()
	testwait.For(m.t, what, 10*time.Second, func() bool { return m.answers() > before })
}

// WaitReady waits until the waypoint reports ready (configuration of every type and a
// certificate).
func (m *Mesh) WaitReady() {
	m.t.Helper()
	testwait.ForNoError(m.t, "the waypoint ready", 10*time.Second, func() error { return m.Waypoint.Ready(context.Background()) })
}

func typeOf(r proto.Message) string {
	switch r.(type) {
	case *listenerv3.Listener:
		return resourcev3.ListenerType
	case *routev3.RouteConfiguration:
		return resourcev3.RouteType
	case *clusterv3.Cluster:
		return resourcev3.ClusterType
	case *endpointv3.ClusterLoadAssignment:
		return resourcev3.EndpointType
	case *tlsv3.Secret:
		return resourcev3.SecretType
	}
	panic(fmt.Sprintf("waypointtest: %T is not an xDS resource the waypoint takes", r))
}

func nameOf(r proto.Message) string {
	if c, ok := r.(*endpointv3.ClusterLoadAssignment); ok {
		return c.GetClusterName()
	}
	return r.(interface{ GetName() string }).GetName()
}

// RootCA is the Secret ROOTCA holding the roots of cas, as the control plane sends the
// mesh's trust bundle.
func RootCA(cas ...*testca.CA) *tlsv3.Secret {
	var bundle []byte
	for _, ca := range cas {
		bundle = append(bundle, ca.PEM...)
	}
	return &tlsv3.Secret{Name: waypoint.RootCASecret, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
		TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: bundle}}}}}
}

// Any wraps m (for typed_config fields).
func Any(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(err)
	}
	return a
}

// HTTPFilter names an HTTP filter config for HTTPListener.
func HTTPFilter(name string, cfg proto.Message) *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: Any(cfg)}}
}

// HTTPListener is the listener the control plane makes for an HTTP Service port: named
// "<host>:<port>", on the VIP, routes from RDS of the same name, the given filters, then
// the fault filter and the router.
func HTTPListener(host string, vip netip.AddrPort, filters ...*hcmv3.HttpFilter) *listenerv3.Listener {
	name := fmt.Sprintf("%s:%d", host, vip.Port())
	filters = append(filters, HTTPFilter("envoy.filters.http.fault", &faultv3.HTTPFault{}), HTTPFilter("envoy.filters.http.router", &routerv3.Router{}))
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: name,
			ConfigSource:    &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}, ResourceApiVersion: corev3.ApiVersion_V3},
		}},
		HttpFilters: filters,
	}
	return listener(name, vip, &listenerv3.Filter{Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: Any(hcm)}})
}

// TCPListener is the listener for a TCP Service port: the given network filters (RBAC),
// then tcp_proxy to cluster.
func TCPListener(host string, vip netip.AddrPort, cluster string, filters ...*listenerv3.Filter) *listenerv3.Listener {
	name := fmt.Sprintf("%s:%d", host, vip.Port())
	tcp := &tcpproxyv3.TcpProxy{StatPrefix: name, ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: cluster}}
	filters = append(filters, &listenerv3.Filter{Name: "envoy.filters.network.tcp_proxy", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: Any(tcp)}})
	return listener(name, vip, filters...)
}

func listener(name string, vip netip.AddrPort, filters ...*listenerv3.Filter) *listenerv3.Listener {
	return &listenerv3.Listener{
		Name:         name,
		Address:      SocketAddress(vip),
		FilterChains: []*listenerv3.FilterChain{{Filters: filters}},
	}
}

// SocketAddress is an Envoy TCP address.
func SocketAddress(ap netip.AddrPort) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ap.Addr().String(), PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(ap.Port())}}}}
}

// RouteConfig is a route configuration with one virtual host "*".
func RouteConfig(name string, routes ...*routev3.Route) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{Name: name, VirtualHosts: []*routev3.VirtualHost{{Name: "*", Domains: []string{"*"}, Routes: routes}}}
}

// PrefixRoute forwards requests whose path starts with prefix to cluster.
func PrefixRoute(name, prefix, cluster string) *routev3.Route {
	return &routev3.Route{
		Name:  name,
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster},
		}},
	}
}

// ClusterName is Istio's outbound cluster name for a service port.
func ClusterName(host string, port uint16) string { return fmt.Sprintf("outbound|%d||%s", port, host) }

// Cluster is an EDS cluster fed over ADS.
func Cluster(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{
			ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}, ResourceApiVersion: corev3.ApiVersion_V3}},
		ConnectTimeout: nil,
	}
}

// Endpoints is the load assignment of cluster name: each backend's app address, reached
// over HBONE with its identity.
func Endpoints(name string, backends ...*Backend) *endpointv3.ClusterLoadAssignment {
	var eps []*endpointv3.LbEndpoint
	for _, b := range backends {
		md, err := structpb.NewStruct(map[string]any{"tunnel": "hbone", "identity": b.ID.String()})
		if err != nil {
			panic(err)
		}
		eps = append(eps, &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: SocketAddress(b.App)}},
			HealthStatus:   corev3.HealthStatus_HEALTHY,
			Metadata:       &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"ambientmesh.dev/endpoint": md}},
		})
	}
	return &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: eps}}}
}

// Get sends a GET to url with client c and returns the status and body (status 0 and the
// error's text when the request failed).
func Get(c *http.Client, url string, header http.Header) (int, string) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, err.Error()
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil && !errors.Is(err, io.EOF) {
		return resp.StatusCode, string(b) + err.Error()
	}
	return resp.StatusCode, string(b)
}

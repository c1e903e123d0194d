package nodetest

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/dataplane/cni/rules"
	"github.com/ambientmesh/ambient-operator/dataplane/waypoint"
	wt "github.com/ambientmesh/ambient-operator/dataplane/waypoint/waypointtest"
	"github.com/ambientmesh/ambient-operator/internal/spiffe"
	"github.com/ambientmesh/ambient-operator/internal/testwait"
	"github.com/ambientmesh/ambient-operator/internal/xdstest"
)

// The waypoint topology (newWaypointMesh): client (10.100.1.10) and server-a (10.100.1.20)
// on node a; server-b (10.100.2.10), client-b (10.100.2.20) and the waypoint pod
// (10.100.2.40, service account waypoint) on node b. The waypoint pod is not captured: Istio
// does not capture waypoints, whose own traffic goes straight to the endpoints' ztunnels.
// Service echo (VIP 10.96.0.50:80 → 8080) names the waypoint; Service echo-l4
// (10.96.0.51:80 → 8080) selects the same two servers without one (the L4-only path);
// Service echo-tcp (10.96.0.52:80 → 8080) names the waypoint too, whose listener for it is
// TCP only (tcp_proxy): the same hops as echo's, with no HTTP in the waypoint.
const (
	echoHost        = "echo.shop.svc.cluster.local"
	echoTCPHost     = "echo-tcp.shop.svc.cluster.local"
	echoL4Service   = "shop/echo-l4.shop.svc.cluster.local"
	waypointPodIP   = "10.100.2.40"
	waypointMetrics = "127.0.0.1:15020" // cmd/waypoint's defaults, inside the waypoint pod
	waypointReady   = "127.0.0.1:15021"
)

var (
	echoVIP    = netip.MustParseAddrPort("10.96.0.50:80")
	echoL4VIP  = netip.MustParseAddrPort("10.96.0.51:80")
	echoTCPVIP = netip.MustParseAddrPort("10.96.0.52:80")
	waypointID = spiffe.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "waypoint"}
	serverID   = spiffe.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "server"}
	clientID   = spiffe.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "client"}
)

type waypointMesh struct {
	*cluster
	wp *waypointProc
}

// newWaypointMesh builds the topology and starts both ztunnels and the waypoint, which
// gets its Envoy xDS (echoWaypointConfig) and its certificate from servers inside node b's
// namespace, on the bridge address its pod routes through.
//
// workloadWaypoint names the waypoint on the server workloads too: their ztunnels then
// trust the waypoint's Forwarded header (and apply their L4 policies to the client's
// address, not the waypoint's), but connections addressed to the pods themselves,
// including the endpoints echo-l4 picks, go to the waypoint as well. The benchmark, which
// needs an L4-only path to the same pods, leaves it off.
func newWaypointMesh(t testing.TB, workloadWaypoint bool) *waypointMesh {
	c := newCluster(t, rules.BackendIPTables)
	c.addPod("a", "client", "client", "10.100.1.10", true)
	c.addPod("a", "server-a", "server", "10.100.1.20", true)
	c.addPod("b", "server-b", "server", "10.100.2.10", true)
	c.addPod("b", "client-b", "client", "10.100.2.20", true)
	wpPod := c.addPod("b", "waypoint", "waypoint", waypointPodIP, false)
	c.publish()

	gateway := &pb.GatewayAddress{Address: waypointPodIP, HbonePort: pb.DefaultHBONEPort, Identity: waypointID.String()}
	port := []*pb.Port{{ServicePort: 80, TargetPort: 8080}}
	echoService := pb.ServiceResourceName("shop", echoHost)
	echoTCPService := pb.ServiceResourceName("shop", echoTCPHost)
	workloads := map[string]proto.Message{
		// The waypoint is a workload reached over HBONE (as Istio publishes it), only not
		// captured.
		wpPod.uid: &pb.Workload{Uid: wpPod.uid, Name: wpPod.name, Namespace: "shop", ServiceAccount: wpPod.sa, Node: "b",
			Addresses: []string{waypointPodIP}, TunnelProtocol: pb.TunnelProtocol_TUNNEL_PROTOCOL_HBONE},
	}
	for _, name := range []string{"server-a", "server-b"} {
		p := c.pods[name]
		w := &pb.Workload{Uid: p.uid, Name: p.name, Namespace: "shop", ServiceAccount: p.sa, Node: p.node.name,
			Addresses: []string{p.ip.String()}, TunnelProtocol: pb.TunnelProtocol_TUNNEL_PROTOCOL_HBONE,
			Services: map[string]*pb.PortList{echoService: {Ports: port}, echoL4Service: {Ports: port}, echoTCPService: {Ports: port}}}
		if workloadWaypoint {
			w.Waypoint = gateway
		}
		workloads[p.uid] = w
	}
	c.xds.Set(t, pb.WorkloadTypeURL, workloads)
	c.xds.Set(t, pb.ServiceTypeURL, map[string]proto.Message{
		echoService: &pb.Service{Name: "echo", Namespace: "shop", Hostname: echoHost, Vips: []string{echoVIP.Addr().String()}, Ports: port, Waypoint: gateway},
		echoL4Service: &pb.Service{Name: "echo-l4", Namespace: "shop", Hostname: "echo-l4.shop.svc.cluster.local",
			Vips: []string{echoL4VIP.Addr().String()}, Ports: port},
		echoTCPService: &pb.Service{Name: "echo-tcp", Namespace: "shop", Hostname: echoTCPHost,
			Vips: []string{echoTCPVIP.Addr().String()}, Ports: port, Waypoint: gateway},
	})
	for _, name := range []string{"a", "b"} {
		c.startZtunnel(c.nodes[name], "")
		c.startAgent(c.nodes[name])
	}

	// The waypoint's control plane: an Envoy xDS server and the test CA, listening in
	// node b's namespace on its bridge address.
	nodeB := c.nodes["b"]
	envoyXDS := xdstest.New(waypoint.TypeURLs...)
	for _, r := range echoWaypointConfig(c) {
		setEnvoyResource(t, envoyXDS, r)
	}
	envoyXDS.ServeListener(t, nodeB.ns.Listen(t, nodeB.gateway+":0"))
	caListener := nodeB.ns.Listen(t, nodeB.gateway+":0")
	c.ca.ServeListener(t, caListener)

	m := &waypointMesh{cluster: c}
	m.wp = c.startWaypoint(wpPod, envoyXDS.Addr, caListener.Addr().String())
	testwait.For(t, "both ztunnels and the waypoint ready", 20*time.Second, func() bool {
		return c.nodes["a"].zt.ready() && c.nodes["b"].zt.ready() && m.wp.ready()
	})
	return m
}

// echoWaypointConfig is the waypoint's configuration for Services echo and echo-tcp, as the
// control plane makes it: for echo, a listener on the VIP whose RBAC filter denies paths
// under /admin, a route to the Service's cluster, and its endpoints (server-a and server-b,
// over HBONE with the servers' identity); for echo-tcp, a TCP listener to its cluster of the
// same endpoints.
func echoWaypointConfig(c *cluster) []proto.Message {
	cluster := wt.ClusterName(echoHost, echoVIP.Port())
	tcpCluster := wt.ClusterName(echoTCPHost, echoTCPVIP.Port())
	var endpoints []*wt.Backend
	for _, name := range []string{"server-a", "server-b"} {
		endpoints = append(endpoints, &wt.Backend{ID: serverID, App: netip.AddrPortFrom(c.pods[name].ip, 8080)})
	}
	denyAdmin := &rbachttpv3.RBAC{Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{
		"ns[shop]-policy[deny-admin]-rule[0]": {
			Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{
				Rule: &matcherv3.PathMatcher_Path{Path: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "/admin"}}}}}}},
			Principals: []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Any{Any: true}}},
		},
	}}}
	listenerName := fmt.Sprintf("%s:%d", echoHost, echoVIP.Port())
	return []proto.Message{
		wt.Cluster(cluster),
		wt.Endpoints(cluster, endpoints...),
		wt.HTTPListener(echoHost, echoVIP, wt.HTTPFilter("envoy.filters.http.rbac", denyAdmin)),
		wt.RouteConfig(listenerName, wt.PrefixRoute("default", "/", cluster)),
		wt.Cluster(tcpCluster),
		wt.Endpoints(tcpCluster, endpoints...),
		wt.TCPListener(echoTCPHost, echoTCPVIP, tcpCluster),
	}
}

// setEnvoyResource checks r as an Envoy would (ValidateAll) and puts it on the server.
func setEnvoyResource(t testing.TB, s *xdstest.Server, r proto.Message) {
	t.Helper()
	if err := r.(interface{ ValidateAll() error }).ValidateAll(); err != nil {
		t.Fatalf("%T does not validate: %v", r, err)
	}
	var name, typeURL string
	switch r := r.(type) {
	case *clusterv3.Cluster:
		name, typeURL = r.GetName(), resourcev3.ClusterType
	case *endpointv3.ClusterLoadAssignment:
		name, typeURL = r.GetClusterName(), resourcev3.EndpointType
	case *listenerv3.Listener:
		name, typeURL = r.GetName(), resourcev3.ListenerType
	case *routev3.RouteConfiguration:
		name, typeURL = r.GetName(), resourcev3.RouteType
	default:
		t.Fatalf("%T is not a resource the waypoint takes", r)
	}
	s.Set(t, typeURL, map[string]proto.Message{name: r})
}

// --- the waypoint process ------------------------------------------------------------------

type waypointProc struct {
	*proc
	pod *pod
	// client reaches the waypoint's admin, metrics and readiness endpoints inside its pod.
	client *http.Client
}

// startWaypoint runs cmd/waypoint inside the pod's namespace with its default ports
// (HBONE :15008, metrics :15020, readiness :15021, admin 127.0.0.1:15000).
func (c *cluster) startWaypoint(p *pod, xdsAddr, caAddr string) *waypointProc {
	t := c.t
	w := &waypointProc{pod: p}
	w.client = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext:       func(_ context.Context, _, addr string) (net.Conn, error) { return p.ns.Dial(addr, 0) },
	}}
	cmd := p.ns.Cmd(waypointBin,
		"--insecure-control-plane",
		"--namespace", "shop", "--name", "waypoint", "--service-account", p.sa, "--pod-name", "waypoint-0",
		"--token-file", filepath.Join(c.dir, "token"),
		"--xds-address", xdsAddr,
		"--ca-address", caAddr,
		"--cert-ttl", "1h",
		"--drain-period", "2s",
	)
	w.proc = startProc(t, "waypoint", cmd, filepath.Join(c.dir, "waypoint.log"), 10*time.Second)
	return w
}

func (w *waypointProc) ready() bool {
	resp, err := w.client.Get("http://" + waypointReady + "/healthz/ready")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func (w *waypointProc) scrape(t testing.TB) string {
	t.Helper()
	resp, err := w.client.Get("http://" + waypointMetrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// --- apps and the client -------------------------------------------------------------------

// serveHTTP runs an HTTP app (HTTP/1.1 and h2c) on :8080 inside the pod. It answers
// "<pod> <method> <path>" and counts the requests it served.
func (p *pod) serveHTTP(t testing.TB) *atomic.Int64 {
	var served atomic.Int64
	var l net.Listener
	if err := p.net.Do(func() (err error) { l, err = net.Listen("tcp", ":8080"); return }); err != nil {
		t.Fatal(err)
	}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true) // h2c with prior knowledge
	srv := &http.Server{Protocols: &protocols, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		fmt.Fprintf(w, "%s %s %s", p.name, r.Method, r.URL.Path)
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	return &served
}

// curlResult is what curl reported.
type curlResult struct {
	code    int    // HTTP status; 0 when curl failed
	version string // "1.1" or "2"
	body    string // the response body, or curl's error
}

// curl runs Debian's curl inside the pod, so its connection is captured like any app's.
func (p *pod) curl(url string, args ...string) curlResult {
	args = append([]string{"curl", "-sS", "--max-time", "10", "-w", "\n%{http_version} %{http_code}"}, append(args, url)...)
	cmd := p.ns.Cmd(args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return curlResult{body: fmt.Sprintf("%v: %s", err, stderr.String())}
	}
	// -w appends "\n<version> <code>" after the body.
	i := strings.LastIndexByte(string(out), '\n')
	if i < 0 {
		return curlResult{body: string(out)}
	}
	body, status := string(out[:i]), string(out[i+1:])
	version, code, _ := strings.Cut(status, " ")
	n, _ := strconv.Atoi(code)
	return curlResult{code: n, version: version, body: body}
}

// sumMetric adds up every series of a counter (any labels) that carries all of parts.
func sumMetric(metrics, name string, parts ...string) float64 {
	var sum float64
	for _, line := range strings.Split(metrics, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if i := strings.LastIndexByte(line, ' '); all && i > 0 {
			v, _ := strconv.ParseFloat(line[i+1:], 64)
			sum += v
		}
	}
	return sum
}

var servedBy = regexp.MustCompile(`^(server-a|server-b) GET /`)

// TestWaypointOnRealNamespaces: client pod → client ztunnel → waypoint pod → server
// ztunnel → server pod, with real capture rules, real ztunnel and waypoint processes and
// curl as the application client.
func TestWaypointOnRealNamespaces(t *testing.T) {
	m := newWaypointMesh(t, true)
	served := map[string]*atomic.Int64{"server-a": m.pods["server-a"].serveHTTP(t), "server-b": m.pods["server-b"].serveHTTP(t)}
	totalServed := func() int64 { return served["server-a"].Load() + served["server-b"].Load() }
	client, url := m.pods["client"], "http://"+echoVIP.String()
	requests, ok := 0, 0 // sent through the waypoint, and answered 200, by this test

	t.Run("GET through the waypoint reaches both servers", func(t *testing.T) {
		for i := range 10 {
			path := fmt.Sprintf("/items/%d", i)
			r := client.curl(url + path)
			requests++
			if r.code != http.StatusOK || !servedBy.MatchString(r.body) || !strings.HasSuffix(r.body, path) {
				t.Fatalf("curl %s: %d %q, want 200 from a server", path, r.code, r.body)
			}
			ok++
		}
		if served["server-a"].Load() == 0 || served["server-b"].Load() == 0 {
			t.Fatalf("10 requests reached server-a %d and server-b %d times, want both", served["server-a"].Load(), served["server-b"].Load())
		}
	})

	t.Run("L7 deny by path: /admin is 403 and never reaches a server", func(t *testing.T) {
		before := totalServed()
		r := client.curl(url + "/admin/users")
		requests++
		if r.code != http.StatusForbidden {
			t.Fatalf("curl /admin/users: %d %q, want 403", r.code, r.body)
		}
		if r := client.curl(url + "/administrator"); r.code != http.StatusForbidden {
			t.Fatalf("curl /administrator (prefix /admin): %d %q, want 403", r.code, r.body)
		}
		requests++
		if totalServed() != before {
			t.Fatal("a denied request reached a server")
		}
	})

	t.Run("h2c prior knowledge", func(t *testing.T) {
		r := client.curl(url+"/h2", "--http2-prior-knowledge")
		requests++
		if r.code != http.StatusOK || r.version != "2" || !servedBy.MatchString(r.body) {
			t.Fatalf("curl --http2-prior-knowledge /h2: HTTP/%s %d %q, want HTTP/2 200 from a server", r.version, r.code, r.body)
		}
		ok++
		r = client.curl(url+"/admin", "--http2-prior-knowledge")
		requests++
		if r.code != http.StatusForbidden || r.version != "2" {
			t.Fatalf("curl --http2-prior-knowledge /admin: HTTP/%s %d %q, want HTTP/2 403", r.version, r.code, r.body)
		}
	})

	t.Run("the waypoint's metrics carry both identities", func(t *testing.T) {
		metrics := m.wp.scrape(t)
		client, server := `source_principal="`+clientID.String()+`"`, `destination_principal="`+serverID.String()+`"`
		if !containsLine(metrics, "istio_requests_total{", `reporter="waypoint"`, client, server, `response_code="200"`) {
			t.Fatalf("no istio_requests_total from the client's identity to the servers' with 200:\n%s", grep(metrics, "istio_requests_total"))
		}
		if !containsLine(metrics, "istio_requests_total{", `reporter="waypoint"`, client, `response_code="403"`) {
			t.Fatalf("the denied requests are not counted as 403 from the client's identity:\n%s", grep(metrics, "istio_requests_total"))
		}
		// The default worker threads, as ztunnel's: half the CPUs, at least one.
		want := fmt.Sprintf("go_sched_gomaxprocs_threads %d", max(1, (runtime.GOMAXPROCS(0)+1)/2))
		if !strings.Contains(metrics, "\n"+want+"\n") {
			t.Fatalf("the waypoint's GOMAXPROCS: want %q in\n%s", want, grep(metrics, "gomaxprocs"))
		}
	})

	t.Run("no loop: each request crosses the waypoint once and reaches a server once", func(t *testing.T) {
		counted := sumMetric(m.wp.scrape(t), "istio_requests_total", `reporter="waypoint"`)
		if int(counted) != requests || int(totalServed()) != ok {
			t.Fatalf("%d requests sent (%d answered 200): the waypoint counted %v, the servers served %d", requests, ok, counted, totalServed())
		}
	})

	t.Run("the servers' ztunnels see the client's identity and address, not the waypoint's", func(t *testing.T) {
		for node, workload := range map[string]string{"a": "server-a", "b": "server-b"} {
			metrics := m.nodes[node].zt.scrape(t)
			// The client's address comes from the waypoint's Forwarded, its identity from
			// the workload at that address.
			if !containsLine(metrics, "istio_tcp_connections_opened_total{", `reporter="destination"`, `destination_workload="`+workload+`"`,
				`source_principal="`+clientID.String()+`"`, `source_workload="client"`) {
				t.Fatalf("ztunnel %s: no connection to %s from the client's identity through the waypoint:\n%s", node, workload, grep(metrics, "istio_tcp_connections_opened"))
			}
		}
	})

	t.Run("an L4 DENY on a client's address at the servers refuses its relayed requests", func(t *testing.T) {
		// The servers' ztunnels take the client's address from the waypoint's Forwarded:
		// a policy on client-b's address refuses client-b through the waypoint, and only it.
		m.xds.Set(t, pb.AuthorizationTypeURL, map[string]proto.Message{"shop/deny-client-b": &pb.Authorization{
			Name: "deny-client-b", Namespace: "shop", Scope: pb.AuthorizationScope_AUTHORIZATION_SCOPE_NAMESPACE,
			Action: pb.AuthorizationAction_AUTHORIZATION_ACTION_DENY, Rules: []*pb.Rule{{IpBlocks: []string{"10.100.2.20/32"}}}}})
		clientB := m.pods["client-b"]
		testwait.For(t, "client-b refused at the servers", 10*time.Second, func() bool {
			return clientB.curl(url+"/from-b").code == http.StatusServiceUnavailable
		})
		before := totalServed()
		if r := clientB.curl(url + "/from-b"); r.code != http.StatusServiceUnavailable || totalServed() != before {
			t.Fatalf("client-b: %d %q, want 503 (both endpoints refuse it) without reaching a server", r.code, r.body)
		}
		if r := client.curl(url + "/still-allowed"); r.code != http.StatusOK {
			t.Fatalf("client: %d %q, want 200 (the policy names client-b's address only)", r.code, r.body)
		}
	})
}

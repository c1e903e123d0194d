package ztunnel_test

// In-process tier: two ztunnels in this process, pods on distinct loopback addresses
// (127.10.x.y), a test CA behind the real CertificateService gRPC API, and an in-process
// go-control-plane delta ADS server. The kernel's capture is replaced by loopNet, which
// hands the ztunnel the original destination the test chose; the netns tier covers the
// real capture.

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/dataplane/hbone"
	"github.com/ambientmesh/ambient-operator/dataplane/identity"
	"github.com/ambientmesh/ambient-operator/dataplane/ztunnel"
	"github.com/ambientmesh/ambient-operator/dataplane/ztunnel/inpod"
	"github.com/ambientmesh/ambient-operator/dataplane/ztunnel/internal/echoapp"
	"github.com/ambientmesh/ambient-operator/internal/catest"
	"github.com/ambientmesh/ambient-operator/internal/spiffe"
	"github.com/ambientmesh/ambient-operator/internal/testca"
	"github.com/ambientmesh/ambient-operator/internal/testwait"
	"github.com/ambientmesh/ambient-operator/internal/xdstest"
)

const token = "ztunnel-sa-token"

var (
	clientID = spiffe.MustNew("cluster.local", "shop", "client")
	serverID = spiffe.MustNew("cluster.local", "shop", "server")
)

// loopNet is a pod network on a loopback address. Original destinations are registered by
// the test app when it connects (loopNet.connect).
type loopNet struct {
	ip netip.Addr
	mu sync.Mutex
	od map[netip.AddrPort]chan netip.AddrPort
	// peers are the clients ztunnel's listeners in the pod (15001, 15006, 15008) accepted.
	peers []netip.AddrPort
}

// peerListener records the clients of one of the pod's ztunnel listeners.
type peerListener struct {
	net.Listener
	n *loopNet
}

func (l peerListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.mu.Lock()
		l.n.peers = append(l.n.peers, c.RemoteAddr().(*net.TCPAddr).AddrPort())
		l.n.mu.Unlock()
	}
	return c, err
}

// acceptedFrom lists the peers the pod's ztunnel listeners accepted from addr.
func (n *loopNet) acceptedFrom(addr netip.Addr) []netip.AddrPort {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []netip.AddrPort
	for _, p := range n.peers {
		if p.Addr() == addr {
			out = append(out, p)
		}
	}
	return out
}

func newLoopNet(ip string) *loopNet {
	return &loopNet{ip: netip.MustParseAddr(ip), od: map[netip.AddrPort]chan netip.AddrPort{}}
}

func (n *loopNet) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: n.ip.AsSlice()}}
	return d.DialContext(ctx, network, addr)
}

func (n *loopNet) slot(client netip.AddrPort) chan netip.AddrPort {
	n.mu.Lock()
	defer n.mu.Unlock()
	ch := n.od[client]
	if ch == nil {
		ch = make(chan netip.AddrPort, 1)
		n.od[client] = ch
	}
	return ch
}

func (n *loopNet) OriginalDst(c net.Conn) (netip.AddrPort, bool, error) {
	client := c.RemoteAddr().(*net.TCPAddr).AddrPort()
	select {
	case dst := <-n.slot(client):
		return dst, true, nil
	case <-time.After(2 * time.Second):
		return netip.AddrPort{}, false, nil // a direct connection, not "captured"
	}
}

// connect plays the app: it connects to the pod's capture port as if it had dialed dst.
func (n *loopNet) connect(t *testing.T, capturePort uint16, dst string) net.Conn {
	t.Helper()
	c, err := n.Dial(context.Background(), "tcp", netip.AddrPortFrom(n.ip, capturePort).String())
	if err != nil {
		t.Fatal(err)
	}
	n.slot(c.LocalAddr().(*net.TCPAddr).AddrPort()) <- netip.MustParseAddrPort(dst)
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

type mesh struct {
	t      *testing.T
	ca     *catest.Service
	xds    *xdstest.Server
	a, b   *ztunnel.Ztunnel
	client *loopNet // pod "client" on ztunnel a
	server *loopNet // pod "server" on ztunnel b
	app    *echoapp.App
}

func ztunnelFor(t *testing.T, m *mesh, node string, lazy time.Duration) *ztunnel.Ztunnel {
	t.Helper()
	conn, err := grpc.NewClient(m.ca.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	z, err := ztunnel.New(ztunnel.Config{
		Node:             node,
		XDSAddress:       m.xds.Addr,
		XDSDialOptions:   []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())},
		CA:               pb.NewCertificateServiceClient(conn),
		Token:            func() (string, error) { return token, nil },
		AdminAddress:     "-",
		MetricsAddress:   "-",
		ReadinessAddress: "-",
		LazyStartTimeout: lazy,
		HandoverGrace:    10 * time.Millisecond,
		DrainPeriod:      100 * time.Millisecond,
		Log:              testr.NewWithOptions(t, testr.Options{Verbosity: 0}).WithName(node),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = z.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return z
}

// addPod serves a loopback pod on z.
func addPod(t *testing.T, z *ztunnel.Ztunnel, uid, name, sa string, n *loopNet) {
	t.Helper()
	listen := func(port uint16) net.Listener {
		l, err := net.Listen("tcp", netip.AddrPortFrom(n.ip, port).String())
		if err != nil {
			t.Fatal(err)
		}
		return peerListener{l, n}
	}
	pod := &inpod.Pod{UID: uid, Name: name, Namespace: "shop", ServiceAccount: sa, Net: n,
		Outbound: listen(15001), Inbound: listen(15006), HBONE: listen(15008)}
	stop := z.ServePod(pod)
	t.Cleanup(func() {
		pod.Outbound.Close()
		pod.Inbound.Close()
		pod.HBONE.Close()
		stop()
	})
}

func workload(uid, name, sa, ip string) *pb.Workload {
	return &pb.Workload{Uid: uid, Name: name, Namespace: "shop", ServiceAccount: sa, Node: "node", Addresses: []string{ip},
		TunnelProtocol: pb.TunnelProtocol_TUNNEL_PROTOCOL_HBONE}
}

// newMesh: client pod 127.10.0.2 on ztunnel a, server pod 127.10.0.3 (app on :8080) on b.
// withConfig=false leaves the xDS server without workloads (lazy start tests).
func newMesh(t *testing.T, withConfig bool, lazy time.Duration) *mesh {
	m := &mesh{t: t, client: newLoopNet("127.10.0.2"), server: newLoopNet("127.10.0.3")}
	m.ca = &catest.Service{CA: testca.New(t), Token: token}
	m.ca.Serve(t)
	m.xds = xdstest.Start(t)
	m.xds.Set(t, pb.TrustBundleTypeURL, map[string]proto.Message{"cluster.local": &pb.TrustBundle{TrustDomain: "cluster.local", Roots: []string{m.ca.CA.PEM}}})
	if withConfig {
		m.setWorkloads()
	}
	m.app = startEchoApp(t, "127.10.0.3:8080")
	m.a = ztunnelFor(t, m, "node-a", lazy)
	m.b = ztunnelFor(t, m, "node-b", lazy)
	addPod(t, m.a, "client-uid", "client", "client", m.client)
	addPod(t, m.b, "server-uid", "server", "server", m.server)
	return m
}

func (m *mesh) setWorkloads() {
	m.xds.Set(m.t, pb.WorkloadTypeURL, map[string]proto.Message{
		"client-uid": workload("client-uid", "client", "client", "127.10.0.2"),
		"server-uid": workload("server-uid", "server", "server", "127.10.0.3"),
	})
}

func (m *mesh) setPolicy(name string, action pb.AuthorizationAction, rules ...*pb.Rule) {
	m.xds.Set(m.t, pb.AuthorizationTypeURL, map[string]proto.Message{"shop/" + name: &pb.Authorization{
		Name: name, Namespace: "shop", Scope: pb.AuthorizationScope_AUTHORIZATION_SCOPE_NAMESPACE, Action: action, Rules: rules}})
}

// startEchoApp runs the server pod's application on addr.
func startEchoApp(t *testing.T, addr string) *echoapp.App {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return echoapp.Serve(t, l)
}

// roundTrip writes a line and reads the answer.
func roundTrip(c net.Conn, msg string) (string, error) {
	if _, err := c.Write([]byte(msg + "\n")); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSuffix(line, "\n"), err
}

func ready(z *ztunnel.Ztunnel) bool { return z.Ready() == nil }

// counter returns the value of a metric with the given labels (subset match).
func counter(t *testing.T, z *ztunnel.Ztunnel, name string, labels map[string]string) float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	z.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil)) // flushes open connections' bytes
	mfs, err := z.Metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if matches(m, labels) {
				total += m.GetCounter().GetValue()
			}
		}
	}
	return total
}

func matches(m *dto.Metric, want map[string]string) bool {
	got := map[string]string{}
	for _, lp := range m.GetLabel() {
		got[lp.GetName()] = lp.GetValue()
	}
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

func TestMTLSBetweenTwoZtunnels(t *testing.T) {
	m := newMesh(t, true, 5*time.Second)
	testwait.For(t, "both ztunnels ready", 10*time.Second, func() bool { return ready(m.a) && ready(m.b) })

	c := m.client.connect(t, 15001, "127.10.0.3:8080")
	got, err := roundTrip(c, "hello")
	if err != nil || got != "echo hello" {
		t.Fatalf("round trip through the mesh: %q, %v", got, err)
	}
	// The destination ztunnel saw the client's verified SPIFFE identity, over mTLS.
	conns := adminJSON(t, m.b, "/connections")
	if !strings.Contains(conns, `"sourceIdentity": "spiffe://cluster.local/ns/shop/sa/client"`) ||
		!strings.Contains(conns, `"direction": "inbound"`) {
		t.Fatalf("server ztunnel's connections: %s", conns)
	}
	dstLabels := map[string]string{"reporter": "destination", "source_principal": clientID.String(), "source_workload": "client",
		"destination_principal": serverID.String(), "destination_workload": "server", "connection_security_policy": "mutual_tls"}
	if v := counter(t, m.b, "istio_tcp_connections_opened_total", dstLabels); v != 1 {
		t.Fatalf("destination opened = %v", v)
	}
	if v := counter(t, m.a, "istio_tcp_connections_opened_total", map[string]string{"reporter": "source", "source_workload": "client", "destination_principal": serverID.String()}); v != 1 {
		t.Fatalf("source opened = %v", v)
	}
	if v := counter(t, m.b, "istio_tcp_received_bytes_total", dstLabels); v != float64(len("hello\n")) {
		t.Fatalf("received bytes (open connection) = %v, want %d", v, len("hello\n"))
	}
	c.Close()
	testwait.For(t, "closed counted", 10*time.Second, func() bool { return counter(t, m.b, "istio_tcp_connections_closed_total", dstLabels) == 1 })
	if v := counter(t, m.b, "istio_tcp_sent_bytes_total", dstLabels); v != float64(len("echo hello\n")) {
		t.Fatalf("sent bytes = %v", v)
	}
	certs := adminJSON(t, m.a, "/certs")
	if !strings.Contains(certs, clientID.String()) || !strings.Contains(certs, `"serial"`) || !strings.Contains(certs, `"notAfter"`) {
		t.Fatalf("certs dump: %s", certs)
	}
}

func adminJSON(t *testing.T, z *ztunnel.Ztunnel, path string) string {
	t.Helper()
	rec := httptest.NewRecorder()
	z.AdminHandler().ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("%s: %d %s", path, rec.Code, rec.Body)
	}
	return rec.Body.String()
}

// refused asserts the app connection through the mesh fails without reaching the app.
func refused(t *testing.T, m *mesh, c net.Conn) {
	t.Helper()
	before := m.app.Connections()
	got, err := roundTrip(c, "hello")
	if err == nil {
		t.Fatalf("connection was not refused: got %q", got)
	}
	if n := m.app.Connections(); n != before {
		t.Fatalf("the app received %d connection(s) it should not have", n-before)
	}
}

func TestWrongSANRejected(t *testing.T) {
	m := newMesh(t, true, 5*time.Second)
	testwait.For(t, "ready", 10*time.Second, func() bool { return ready(m.a) && ready(m.b) })
	// The control plane says the destination runs as "billing"; the pod actually presents
	// the "server" identity: the client ztunnel must refuse to talk to it.
	m.xds.Set(t, pb.WorkloadTypeURL, map[string]proto.Message{"server-uid": workload("server-uid", "server", "billing", "127.10.0.3")})
	testwait.For(t, "config", 10*time.Second, func() bool { return m.a.Store.Workload("server-uid").GetServiceAccount() == "billing" })
	refused(t, m, m.client.connect(t, 15001, "127.10.0.3:8080"))
}

func TestPlaintextTo15008Rejected(t *testing.T) {
	m := newMesh(t, true, 5*time.Second)
	testwait.For(t, "ready", 10*time.Second, func() bool { return ready(m.a) && ready(m.b) })
	c, err := net.Dial("tcp", "127.10.0.3:15008")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "CONNECT 127.10.0.3:8080 HTTP/1.1\r\nHost: 127.10.0.3:8080\r\n\r\n")
	reply, _ := io.ReadAll(c)
	if strings.Contains(string(reply), "200") {
		t.Fatalf("plaintext CONNECT accepted: %q", reply)
	}
	if m.app.Connections() != 0 {
		t.Fatal("plaintext CONNECT reached the app")
	}
}

// A CONNECT through the server pod's 15008 may only reach the pod's own address, and not
// ztunnel's own ports there: relayed to 15008, 15001 or 15006, the inner connection would
// come from the pod's address (and on 15001 leave with the pod's identity), laundering the
// sender for the next hop. Refused with 403 before anything is dialed; plaintext captured
// on 15006 for those ports is refused too.
func TestConnectToTheMeshOwnPortsRefused(t *testing.T) {
	m := newMesh(t, true, 5*time.Second)
	testwait.For(t, "ready", 10*time.Second, func() bool { return ready(m.a) && ready(m.b) })
	certs := hbone.NewCertStore()
	certs.Put(clientID, m.ca.CA.Issue(t, clientID))
	pool, err := hbone.NewPool(hbone.PoolConfig{Certs: certs, Roots: hbone.NewBundle(m.ca.CA.Pool())})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	connect := func(target string) (net.Conn, error) {
		return pool.Dial(ctx, hbone.DialRequest{Source: clientID, Peer: serverID, Target: netip.MustParseAddrPort(target),
			Via: netip.MustParseAddrPort("127.10.0.3:15008")})
	}
	for target, want := range map[string]string{
		"127.10.0.3:15008": "ztunnel's own port",
		"127.10.0.3:15001": "ztunnel's own port",
		"127.10.0.3:15006": "ztunnel's own port",
		"127.10.0.2:8080":  "not an address of workload shop/server", // another pod
		"127.0.0.1:8080":   "not an address of workload shop/server", // the pod's loopback
	} {
		c, err := connect(target)
		if err == nil {
			c.Close()
			t.Errorf("CONNECT %s through the server pod's 15008 was accepted", target)
			continue
		}
		if hbone.StatusCode(err) != http.StatusForbidden || !strings.Contains(err.Error(), want) {
			t.Errorf("CONNECT %s: %v, want 403 saying %q", target, err, want)
		}
	}
	outsider := newLoopNet("127.10.0.50")
	for _, port := range []uint16{15001, 15006} {
		c, err := outsider.Dial(context.Background(), "tcp", "127.10.0.3:15006")
		if err != nil {
			t.Fatal(err)
		}
		m.server.slot(c.LocalAddr().(*net.TCPAddr).AddrPort()) <- netip.AddrPortFrom(m.server.ip, port)
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		refused(t, m, c)
		c.Close()
	}
	if got := m.server.acceptedFrom(m.server.ip); len(got) != 0 {
		t.Fatalf("ztunnel's listeners in the server pod accepted connections from the pod's own address: %v", got)
	}
	// The app's own port is served as before.
	c, err := connect("127.10.0.3:8080")
	if err != nil {
		t.Fatalf("CONNECT to the app: %v", err)
	}
	defer c.Close()
	if got, err := roundTrip(c, "app"); err != nil || got != "echo app" {
		t.Fatalf("through the tunnel to the app: %q, %v", got, err)
	}
	if n := m.app.Connections(); n != 1 {
		t.Fatalf("the app saw %d connections, want only the one to its port", n)
	}
}

// hboneClient dials the server pod's 15008 directly with the given client certificate.
func hboneClient(t *testing.T, m *mesh, cert *hbone.CertStore) error {
	t.Helper()
	pool, err := hbone.NewPool(hbone.PoolConfig{Certs: cert, Roots: hbone.NewBundle(m.ca.CA.Pool())})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := pool.Dial(ctx, hbone.DialRequest{Source: clientID, Peer: serverID, Target: netip.MustParseAddrPort("127.10.0.3:8080")})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = roundTrip(c, "hi")
	return err
}

func TestExpiredClientCertRejected(t *testing.T) {
	m := newMesh(t, true, 5*time.Second)
	testwait.For(t, "ready", 10*time.Second, func() bool { return ready(m.a) && ready(m.b) })
	good := hbone.NewCertStore()
	good.Put(clientID, m.ca.CA.Issue(t, clientID, testca.Validity(time.Now().Add(-time.Minute), time.Hour)))
	if err := hboneClient(t, m, good); err != nil {
		t.Fatalf("control: a valid certificate is refused: %v", err)
	}
	apps := m.app.Connections()
	expired := hbone.NewCertStore()
	expired.Put(clientID, m.ca.CA.Issue(t, clientID, testca.Validity(time.Now().Add(-2*time.Hour), time.Hour)))
	if err := hboneClient(t, m, expired); err == nil {
		t.Fatal("an expired client certificate was accepted")
	}
	other := testca.New(t) // a certificate from a CA outside the trust bundle
	foreign := hbone.NewCertStore()
	foreign.Put(clientID, other.Issue(t, clientID, testca.Validity(time.Now().Add(-time.Minute), time.Hour)))
	if err := hboneClient(t, m, foreign); err == nil {
		t.Fatal("a certificate from an unknown CA was accepted")
	}
	if m.app.Connections() != apps {
		t.Fatal("a refused client reached the app")
	}
}

func TestPolicyDenyAndAllow(t *testing.T) {
	m := newMesh(t, true, 5*time.Second)
	testwait.For(t, "ready", 10*time.Second, func() bool { return ready(m.a) && ready(m.b) })
	// An ALLOW for another principal only: the client is denied (no ALLOW matches).
	m.setPolicy("only-frontend", pb.AuthorizationAction_AUTHORIZATION_ACTION_ALLOW, &pb.Rule{Principals: []string{"spiffe://cluster.local/ns/shop/sa/frontend"}})
	testwait.For(t, "policy", 10*time.Second, func() bool { return len(m.b.Store.Snapshot().Authorizations) == 1 })
	refused(t, m, m.client.connect(t, 15001, "127.10.0.3:8080"))

	// Allowing the client's principal lets it through.
	m.setPolicy("only-frontend", pb.AuthorizationAction_AUTHORIZATION_ACTION_ALLOW, &pb.Rule{Principals: []string{clientID.String()}})
	testwait.For(t, "policy update", 10*time.Second, func() bool {
		return m.b.Store.Snapshot().Authorizations[0].GetRules()[0].GetPrincipals()[0] == clientID.String()
	})
	if got, err := roundTrip(m.client.connect(t, 15001, "127.10.0.3:8080"), "x"); err != nil || got != "echo x" {
		t.Fatalf("allowed client: %q %v", got, err)
	}
	// A DENY on the port wins over the ALLOW.
	m.setPolicy("no-8080", pb.AuthorizationAction_AUTHORIZATION_ACTION_DENY, &pb.Rule{Ports: []uint32{8080}})
	testwait.For(t, "deny policy", 10*time.Second, func() bool { return len(m.b.Store.Snapshot().Authorizations) == 2 })
	refused(t, m, m.client.connect(t, 15001, "127.10.0.3:8080"))
}

func TestPolicyChangeClosesOpenConnection(t *testing.T) {
	m := newMesh(t, true, 5*time.Second)
	testwait.For(t, "ready", 10*time.Second, func() bool { return ready(m.a) && ready(m.b) })
	c := m.client.connect(t, 15001, "127.10.0.3:8080")
	if got, err := roundTrip(c, "before"); err != nil || got != "echo before" {
		t.Fatalf("%q %v", got, err)
	}
	m.setPolicy("deny-client", pb.AuthorizationAction_AUTHORIZATION_ACTION_DENY, &pb.Rule{Principals: []string{clientID.String()}})
	// The open connection is closed by the server's ztunnel: reads end, writes fail.
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	_, err := c.Read(buf)
	if err == nil || errors.Is(err, errTimeout(err)) {
		t.Fatalf("open connection not closed after the DENY (read: %v)", err)
	}
	// The server ztunnel unregisters the connection right after it resets the
	// stream, so the client may see the reset a moment before the admin list
	// drops it.
	testwait.For(t, "denied connection gone from the admin /connections list", 10*time.Second, func() bool {
		return !strings.Contains(adminJSON(t, m.b, "/connections"), "spiffe://cluster.local/ns/shop/sa/client")
	})
}

// errTimeout returns err itself when it is a timeout (so errors.Is matches), else nil.
func errTimeout(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return err
	}
	return nil
}

func TestLazyStartHoldsConnectionsUntilConfigArrives(t *testing.T) {
	m := newMesh(t, false, 5*time.Second)
	c := m.client.connect(t, 15001, "127.10.0.3:8080")
	if _, err := c.Write([]byte("early\n")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the configuration comes late: meanwhile the connection is held, not refused
	m.setWorkloads()
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "echo early\n" {
		t.Fatalf("held connection after config arrived: %q %v", line, err)
	}
}

func TestLazyStartWaitIsBounded(t *testing.T) {
	m := newMesh(t, false, 500*time.Millisecond)
	c := m.client.connect(t, 15001, "127.10.0.3:8080")
	start := time.Now()
	_, err := roundTrip(c, "x")
	if err == nil {
		t.Fatal("connection without configuration succeeded")
	}
	if waited := time.Since(start); waited < 400*time.Millisecond || waited > 5*time.Second {
		t.Fatalf("refused after %v, want about the 500ms lazy-start bound", waited)
	}
}

func TestPlaintextInboundOnlyWhenPermissive(t *testing.T) {
	m := newMesh(t, true, 5*time.Second)
	testwait.For(t, "ready", 10*time.Second, func() bool { return ready(m.a) && ready(m.b) })
	outsider := newLoopNet("127.10.0.50") // a pod outside the mesh dials the server pod: captured on 15006
	plain := func() net.Conn {
		c, err := outsider.Dial(context.Background(), "tcp", "127.10.0.3:15006")
		if err != nil {
			t.Fatal(err)
		}
		m.server.slot(c.LocalAddr().(*net.TCPAddr).AddrPort()) <- netip.MustParseAddrPort("127.10.0.3:8080")
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		t.Cleanup(func() { c.Close() })
		return c
	}
	if got, err := roundTrip(plain(), "p"); err != nil || got != "echo p" {
		t.Fatalf("PERMISSIVE (default) plaintext: %q %v", got, err)
	}
	open := plain()
	if got, err := roundTrip(open, "p"); err != nil || got != "echo p" {
		t.Fatalf("%q %v", got, err)
	}
	strict := workload("server-uid", "server", "server", "127.10.0.3")
	strict.MtlsMode = pb.MTLSMode_MTLS_MODE_STRICT
	m.xds.Set(t, pb.WorkloadTypeURL, map[string]proto.Message{"server-uid": strict})
	testwait.For(t, "strict", 10*time.Second, func() bool { return m.b.Store.Workload("server-uid").GetMtlsMode() == pb.MTLSMode_MTLS_MODE_STRICT })
	refused(t, m, plain())
	// The plaintext connection opened under PERMISSIVE is closed by the switch to STRICT.
	if _, err := roundTrip(open, "again"); err == nil {
		t.Fatal("plaintext connection survived the switch to STRICT")
	}
	// mTLS still works.
	if got, err := roundTrip(m.client.connect(t, 15001, "127.10.0.3:8080"), "m"); err != nil || got != "echo m" {
		t.Fatalf("mTLS under STRICT: %q %v", got, err)
	}
}

func TestServiceVIPAndPassthrough(t *testing.T) {
	m := newMesh(t, true, 5*time.Second)
	svcName := "shop/echo.shop.svc.cluster.local"
	server := workload("server-uid", "server", "server", "127.10.0.3")
	server.Services = map[string]*pb.PortList{svcName: {Ports: []*pb.Port{{ServicePort: 80, TargetPort: 8080}}}}
	m.xds.Set(t, pb.WorkloadTypeURL, map[string]proto.Message{"server-uid": server})
	m.xds.Set(t, pb.ServiceTypeURL, map[string]proto.Message{svcName: &pb.Service{Name: "echo", Namespace: "shop",
		Hostname: "echo.shop.svc.cluster.local", Vips: []string{"10.96.7.7"}, Ports: []*pb.Port{{ServicePort: 80, TargetPort: 8080}}}})
	testwait.For(t, "ready", 10*time.Second, func() bool {
		return ready(m.a) && ready(m.b) && m.a.Store.ServiceByVIP(netip.MustParseAddr("10.96.7.7")) != nil
	})
	c := m.client.connect(t, 15001, "10.96.7.7:80")
	if got, err := roundTrip(c, "vip"); err != nil || got != "echo vip" {
		t.Fatalf("through the VIP: %q %v", got, err)
	}
	if v := counter(t, m.a, "istio_tcp_connections_opened_total", map[string]string{"destination_service": "echo.shop.svc.cluster.local", "destination_workload": "server"}); v != 1 {
		t.Fatalf("source metrics for the service: %v", v)
	}
	// A destination outside the mesh passes through as plain TCP.
	outside := startEchoApp(t, "127.10.0.99:9000")
	if got, err := roundTrip(m.client.connect(t, 15001, "127.10.0.99:9000"), "out"); err != nil || got != "echo out" {
		t.Fatalf("passthrough: %q %v", got, err)
	}
	if outside.Connections() != 1 {
		t.Fatal("passthrough did not reach the outside app")
	}
}

func TestAdminDumpsAndReadiness(t *testing.T) {
	m := newMesh(t, true, 5*time.Second)
	m.setPolicy("deny-none", pb.AuthorizationAction_AUTHORIZATION_ACTION_DENY, &pb.Rule{Ports: []uint32{9}})
	testwait.For(t, "ready", 10*time.Second, func() bool { return ready(m.a) && len(m.a.Store.Snapshot().Authorizations) == 1 })
	rec := httptest.NewRecorder()
	m.a.ReadinessHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/healthz/ready", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("readiness %d %s", rec.Code, rec.Body)
	}
	for path, want := range map[string]string{
		"/workloads":    `"uid": "server-uid"`,
		"/policies":     `"name": "deny-none"`,
		"/trustbundles": `"trust_domain": "cluster.local"`,
		"/pods":         `"UID": "client-uid"`,
		"/xds":          `"Connected": true`,
		"/pool":         `"shop/client"`,
	} {
		if got := adminJSON(t, m.a, path); !strings.Contains(got, want) {
			t.Errorf("%s lacks %s:\n%s", path, want, got)
		}
	}
}

func TestNotReadyWithoutControlPlane(t *testing.T) {
	m := newMesh(t, true, 5*time.Second)
	testwait.For(t, "ready", 10*time.Second, func() bool { return ready(m.a) })
	// A ztunnel whose control plane never answered is not ready, and says why.
	z, err := ztunnel.New(ztunnel.Config{CA: pb.NewCertificateServiceClient(nil), Token: func() (string, error) { return "", nil }})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	z.ReadinessHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/healthz/ready", nil))
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "waiting for configuration from the control plane") {
		t.Fatalf("readiness %d %s", rec.Code, rec.Body)
	}
}

// servedSerial returns the serial of the certificate the server pod's HBONE port presents
// to a new TLS handshake (with a valid client certificate, so the handshake completes).
func servedSerial(t *testing.T, m *mesh) string {
	t.Helper()
	conf := &tls.Config{
		Certificates:       []tls.Certificate{*m.ca.CA.Issue(t, clientID)},
		NextProtos:         []string{"h2"},
		InsecureSkipVerify: true, // only the presented serial matters here; other tests verify the peer
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", "127.10.0.3:15008", conf)
	if err != nil {
		t.Fatalf("TLS handshake with the server pod's HBONE port: %v", err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.Text(16)
}

// renewCerts POSTs /certs/renew to z's admin handler and returns new serial by identity.
func renewCerts(t *testing.T, z *ztunnel.Ztunnel) map[string]identity.Renewal {
	t.Helper()
	rec := httptest.NewRecorder()
	z.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/certs/renew", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("POST /certs/renew: %d %s", rec.Code, rec.Body)
	}
	var list []identity.Renewal
	if err := json.Unmarshal(rec.Body.Bytes(), &list); err != nil {
		t.Fatalf("POST /certs/renew answer is not a JSON list of renewals: %v\n%s", err, rec.Body)
	}
	out := map[string]identity.Renewal{}
	for _, r := range list {
		out[r.Identity] = r
	}
	return out
}

func certSerials(t *testing.T, z *ztunnel.Ztunnel) map[string]string {
	t.Helper()
	var certs []identity.CertInfo
	if err := json.Unmarshal([]byte(adminJSON(t, z, "/certs")), &certs); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, c := range certs {
		out[c.Identity] = c.Serial
	}
	return out
}

func TestForcedCertRenewalKeepsOpenConnections(t *testing.T) {
	m := newMesh(t, true, 5*time.Second)
	testwait.For(t, "ready", 10*time.Second, func() bool { return ready(m.a) && ready(m.b) })
	open := m.client.connect(t, 15001, "127.10.0.3:8080")
	if got, err := roundTrip(open, "before"); err != nil || got != "echo before" {
		t.Fatalf("round trip before renewal: %q %v", got, err)
	}
	servedBefore := servedSerial(t, m)
	requestsBefore := m.ca.Requests()

	for _, tc := range []struct {
		z  *ztunnel.Ztunnel
		id spiffe.ID
	}{{m.a, clientID}, {m.b, serverID}} {
		before := certSerials(t, tc.z)[tc.id.String()]
		r, ok := renewCerts(t, tc.z)[tc.id.String()]
		if !ok || r.Error != "" || r.PreviousSerial != before || r.Serial == "" || r.Serial == before {
			t.Fatalf("renewal of %s: %+v, previous serial %s: want a new serial", tc.id, r, before)
		}
		if now := certSerials(t, tc.z)[tc.id.String()]; now != r.Serial {
			t.Fatalf("/certs shows serial %s for %s after renewal, /certs/renew said %s", now, tc.id, r.Serial)
		}
	}
	if n := m.ca.Requests() - requestsBefore; n != 2 {
		t.Fatalf("the certificate service got %d requests for 2 renewals", n)
	}
	if got := servedSerial(t, m); got == servedBefore || got != certSerials(t, m.b)[serverID.String()] {
		t.Fatalf("after renewal the server pod presents serial %s (before %s), want the new one", got, servedBefore)
	}
	for i := range 3 {
		msg := fmt.Sprintf("after-%d", i)
		if got, err := roundTrip(open, msg); err != nil || got != "echo "+msg {
			t.Fatalf("the connection opened before renewal broke: %q %v", got, err)
		}
	}
	if got, err := roundTrip(m.client.connect(t, 15001, "127.10.0.3:8080"), "new"); err != nil || got != "echo new" {
		t.Fatalf("a new connection after renewal: %q %v", got, err)
	}
	dst := map[string]string{"reporter": "destination", "source_principal": clientID.String(), "connection_security_policy": "mutual_tls"}
	if v := counter(t, m.b, "istio_tcp_connections_opened_total", dst); v != 2 {
		t.Fatalf("server ztunnel counted %v mTLS connections from %s, want 2", v, clientID)
	}
}

func TestCertRenewOnlyByPOST(t *testing.T) {
	m := newMesh(t, true, 5*time.Second)
	// Both nodes' first certificates are requested after readiness too; count from when
	// they are in, so that only a renewal could move the count.
	testwait.For(t, "both nodes' certificates", 10*time.Second, func() bool {
		return certSerials(t, m.a)[clientID.String()] != "" && certSerials(t, m.b)[serverID.String()] != ""
	})
	before := m.ca.Requests()
	for _, method := range []string{http.MethodGet, http.MethodPut, http.MethodDelete} {
		rec := httptest.NewRecorder()
		m.a.AdminHandler().ServeHTTP(rec, httptest.NewRequest(method, "/certs/renew", nil))
		if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != http.MethodPost {
			t.Errorf("%s /certs/renew: %d (Allow %q), want 405 with Allow: POST", method, rec.Code, rec.Header().Get("Allow"))
		}
	}
	if m.ca.Requests() != before {
		t.Fatal("a rejected method still renewed certificates")
	}
}

func TestCertRenewReportsFailure(t *testing.T) {
	m := newMesh(t, true, 5*time.Second)
	// Both nodes share the CA: wait for node-b's first certificate too, or its request
	// could take the one failure meant for node-a's renewal.
	testwait.For(t, "client and server certificates", 10*time.Second, func() bool {
		return certSerials(t, m.a)[clientID.String()] != "" && certSerials(t, m.b)[serverID.String()] != ""
	})
	before := certSerials(t, m.a)[clientID.String()]
	m.ca.FailNext(1)
	rec := httptest.NewRecorder()
	m.a.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/certs/renew", nil))
	if rec.Code != http.StatusInternalServerError || !strings.Contains(rec.Body.String(), `"error"`) {
		t.Fatalf("POST /certs/renew with the certificate service failing: %d %s, want 500 naming the error", rec.Code, rec.Body)
	}
	if now := certSerials(t, m.a)[clientID.String()]; now != before {
		t.Fatalf("a failed renewal replaced the certificate: %s → %s", before, now)
	}
}

// A workload with a waypoint: the client's ztunnel sends its traffic to the waypoint (not
// to the pod) with the waypoint's identity as the expected peer and the original
// destination as :authority; the waypoint (a real HBONE server and pool, as a waypoint
// proxy would run them) forwards over HBONE with Forwarded: for=<client IP>, and the
// destination ztunnel trusts that header from its own waypoint only: a DENY on the
// client's IP applies to the traffic the waypoint relays.
func TestTrafficGoesThroughTheWaypoint(t *testing.T) {
	m := newMesh(t, true, 5*time.Second)
	waypointID := spiffe.MustNew("cluster.local", "shop", "waypoint")
	certs := hbone.NewCertStore()
	certs.Put(waypointID, m.ca.CA.Issue(t, waypointID))
	roots := hbone.NewBundle(m.ca.CA.Pool())
	pool, err := hbone.NewPool(hbone.PoolConfig{Certs: certs, Roots: roots})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close() })
	type seen struct {
		peer   spiffe.ID
		target netip.AddrPort
	}
	requests := make(chan seen, 10)
	srv, err := hbone.NewServer(hbone.ServerConfig{Identity: waypointID, Certs: certs, Roots: roots,
		Handler: hbone.HandlerFunc(func(ctx context.Context, req *hbone.Request) error {
			requests <- seen{req.Peer, req.Target}
			clientIP := req.RemoteAddr.(*net.TCPAddr).AddrPort().Addr()
			up, err := pool.Dial(ctx, hbone.DialRequest{Source: waypointID, Peer: serverID, Target: req.Target,
				Header: http.Header{"Forwarded": {"for=" + clientIP.String()}}})
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
	l, err := net.Listen("tcp", "127.10.0.9:15008")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }() // returns when Close closes the listener
	t.Cleanup(func() { srv.Close() })

	server := workload("server-uid", "server", "server", "127.10.0.3")
	server.Waypoint = &pb.GatewayAddress{Address: "127.10.0.9", HbonePort: 15008, Identity: waypointID.String()}
	m.xds.Set(t, pb.WorkloadTypeURL, map[string]proto.Message{
		"client-uid": workload("client-uid", "client", "client", "127.10.0.2"),
		"server-uid": server,
	})
	testwait.For(t, "the waypoint in both ztunnels' configuration", 10*time.Second, func() bool {
		return ready(m.a) && ready(m.b) && m.a.Store.Workload("server-uid").GetWaypoint() != nil &&
			m.b.Store.Workload("server-uid").GetWaypoint() != nil
	})

	if got, err := roundTrip(m.client.connect(t, 15001, "127.10.0.3:8080"), "via waypoint"); err != nil || got != "echo via waypoint" {
		t.Fatalf("round trip through the waypoint: %q, %v", got, err)
	}
	select {
	case r := <-requests:
		if r.peer != clientID || r.target != netip.MustParseAddrPort("127.10.0.3:8080") {
			t.Fatalf("the waypoint saw peer %s target %s, want %s and 127.10.0.3:8080", r.peer, r.target, clientID)
		}
	default:
		t.Fatal("the connection did not go through the waypoint")
	}
	// The destination names the original client (the waypoint's Forwarded address, and
	// the identity of the workload there), not the waypoint.
	conns := adminJSON(t, m.b, "/connections")
	if !strings.Contains(conns, `"sourceIdentity": "`+clientID.String()+`"`) {
		t.Fatalf("the destination ztunnel's connections do not name the relayed client %s: %s", clientID, conns)
	}

	// A DENY naming the waypoint (its identity, or its address 127.10.0.9) does not catch
	// the clients it relays; a DENY on the client's identity or address does.
	for _, c := range []struct {
		rule   *pb.Rule
		denied bool
	}{
		{&pb.Rule{Principals: []string{waypointID.String()}}, false},
		{&pb.Rule{IpBlocks: []string{"127.10.0.9/32"}}, false},
		{&pb.Rule{Principals: []string{clientID.String()}}, true},
		{&pb.Rule{IpBlocks: []string{"127.10.0.2/32"}}, true},
	} {
		m.setPolicy("deny", pb.AuthorizationAction_AUTHORIZATION_ACTION_DENY, c.rule)
		testwait.For(t, "policy", 10*time.Second, func() bool {
			a := m.b.Store.Snapshot().Authorizations
			return len(a) == 1 && proto.Equal(a[0].GetRules()[0], c.rule)
		})
		conn := m.client.connect(t, 15001, "127.10.0.3:8080")
		if c.denied {
			refused(t, m, conn)
		} else if got, err := roundTrip(conn, "relayed"); err != nil || got != "echo relayed" {
			t.Errorf("a DENY on %v refused the client the waypoint relays: %q, %v", c.rule, got, err)
		}
	}
	if len(requests) != 4 {
		t.Fatalf("%d connections went through the waypoint, want all 4", len(requests))
	}

	// From any other peer the header is ignored: a client claiming the denied address is
	// judged by its own (127.0.0.1), and let through.
	clientCerts := hbone.NewCertStore()
	clientCerts.Put(clientID, m.ca.CA.Issue(t, clientID))
	direct, err := hbone.NewPool(hbone.PoolConfig{Certs: clientCerts, Roots: roots})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { direct.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := direct.Dial(ctx, hbone.DialRequest{Source: clientID, Peer: serverID, Target: netip.MustParseAddrPort("127.10.0.3:8080"),
		Header: http.Header{"Forwarded": {"for=127.10.0.2"}}})
	if err != nil {
		t.Fatalf("a non-waypoint peer's Forwarded was trusted: %v", err)
	}
	defer c.Close()
	if got, err := roundTrip(c, "direct"); err != nil || got != "echo direct" {
		t.Fatalf("direct HBONE client: %q, %v", got, err)
	}
	// A Service's waypoint is trusted too: with the waypoint named by the Service the
	// server backs (not by the workload), the Forwarded client is still the one the DENY
	// judges, so the relayed connection is refused.
	svcName := "shop/echo.shop.svc.cluster.local"
	server.Waypoint = nil
	server.Services = map[string]*pb.PortList{svcName: {Ports: []*pb.Port{{ServicePort: 80, TargetPort: 8080}}}}
	m.xds.Set(t, pb.WorkloadTypeURL, map[string]proto.Message{"server-uid": server})
	m.xds.Set(t, pb.ServiceTypeURL, map[string]proto.Message{svcName: &pb.Service{Name: "echo", Namespace: "shop",
		Hostname: "echo.shop.svc.cluster.local", Vips: []string{"10.96.7.8"}, Ports: []*pb.Port{{ServicePort: 80, TargetPort: 8080}},
		Waypoint: &pb.GatewayAddress{Address: "127.10.0.9", HbonePort: 15008, Identity: waypointID.String()}}})
	testwait.For(t, "the Service's waypoint in the destination's configuration", 10*time.Second, func() bool {
		return m.b.Store.Workload("server-uid").GetWaypoint() == nil && m.b.Store.Service(svcName).GetWaypoint() != nil
	})
	relayed, err := pool.Dial(ctx, hbone.DialRequest{Source: waypointID, Peer: serverID, Target: netip.MustParseAddrPort("127.10.0.3:8080"),
		Header: http.Header{"Forwarded": {"for=127.10.0.2"}}})
	if err == nil {
		relayed.Close()
		t.Fatal("the Service's waypoint relayed the denied client: its Forwarded was not trusted")
	}
	if hbone.StatusCode(err) != http.StatusForbidden {
		t.Fatalf("relay through the Service's waypoint: %v, want 403 from the DENY on the client's address", err)
	}
}

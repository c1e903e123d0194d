package nodetest

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	handoffpb "github.com/ambientmesh/ambient-operator/api/handoff/v1alpha1"
	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/dataplane/cni/rules"
	"github.com/ambientmesh/ambient-operator/dataplane/handoff"
	"github.com/ambientmesh/ambient-operator/dataplane/ztunnel/inpod"
	"github.com/ambientmesh/ambient-operator/dataplane/ztunnel/internal/echoapp"
	"github.com/ambientmesh/ambient-operator/internal/catest"
	"github.com/ambientmesh/ambient-operator/internal/netnstest"
	"github.com/ambientmesh/ambient-operator/internal/tcpdump"
	"github.com/ambientmesh/ambient-operator/internal/testca"
	"github.com/ambientmesh/ambient-operator/internal/xdstest"
)

var ztunnelBin, waypointBin string

// TestMain builds the real ztunnel and waypoint binaries once for the package (or runs a
// relay process for BenchmarkDataplane).
func TestMain(m *testing.M) {
	if spec, ok := os.LookupEnv(relayEnv); ok {
		os.Exit(runRelay(spec))
	}
	flag.Parse()
	if os.Geteuid() != 0 || testing.Short() {
		os.Exit(m.Run()) // every test skips with its reason
	}
	dir, err := os.MkdirTemp("", "ztunnel-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ztunnelBin, waypointBin = filepath.Join(dir, "ztunnel"), filepath.Join(dir, "waypoint")
	for _, bin := range []string{ztunnelBin, waypointBin} {
		build := exec.Command("go", "build", "-o", bin, "./cmd/"+filepath.Base(bin))
		build.Dir = filepath.Dir(strings.TrimSpace(string(gomod)))
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "building %s: %v\n%s", filepath.Base(bin), err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const token = "ztunnel-node-token"

type cluster struct {
	t       testing.TB
	backend string
	ca      *catest.Service
	xds     *xdstest.Server
	dir     string
	nodes   map[string]*node
	pods    map[string]*pod
}

type node struct {
	name     string
	ns       *netnstest.NS
	underlay string // interface name of the underlay link in ns
	bridge   string
	gateway  string
	socket   string
	zt       *ztProc
	agent    *agent
}

type pod struct {
	name, uid, sa string
	ip            netip.Addr
	node          *node
	ns            *netnstest.NS
	net           *inpod.NetNS
	meshed        bool
	app           *echoapp.App
}

// newCluster builds nodes a (10.100.1.0/24) and b (10.100.2.0/24) joined by an underlay
// (10.99.0.0/24), and starts the control plane, CA and one ztunnel per node.
func newCluster(t testing.TB, backend string) *cluster {
	netnstest.RequireRoot(t)
	if testing.Short() {
		t.Skip("netns tier (real ztunnel processes, ~30s): skipped with -short; make test runs it")
	}
	c := &cluster{t: t, backend: backend, dir: t.TempDir(), nodes: map[string]*node{}, pods: map[string]*pod{}}
	c.ca = &catest.Service{CA: testca.New(t), Token: token}
	c.ca.Serve(t)
	c.xds = xdstest.Start(t)
	c.xds.Set(t, pb.TrustBundleTypeURL, map[string]proto.Message{"cluster.local": &pb.TrustBundle{TrustDomain: "cluster.local", Roots: []string{c.ca.CA.PEM}}})
	if err := os.WriteFile(filepath.Join(c.dir, "token"), []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	a, b := c.addNode("a", "10.100.1.1/24"), c.addNode("b", "10.100.2.1/24")
	a.underlay, b.underlay = netnstest.Veth(t, a.ns, "10.99.0.1/24", b.ns, "10.99.0.2/24")
	a.ns.Run(t, "ip", "route", "add", "10.100.2.0/24", "via", "10.99.0.2")
	b.ns.Run(t, "ip", "route", "add", "10.100.1.0/24", "via", "10.99.0.1")
	return c
}

func (c *cluster) addNode(name, gatewayCIDR string) *node {
	n := &node{name: name, ns: netnstest.New(c.t, "znode"), bridge: "br0", gateway: strings.Split(gatewayCIDR, "/")[0]}
	n.ns.Run(c.t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	n.ns.Run(c.t, "ip", "link", "add", n.bridge, "type", "bridge")
	n.ns.Run(c.t, "ip", "addr", "add", gatewayCIDR, "dev", n.bridge)
	n.ns.Run(c.t, "ip", "link", "set", n.bridge, "up")
	n.socket = filepath.Join(c.dir, "handoff-"+name+".sock")
	c.nodes[name] = n
	return n
}

// addPod creates a pod netns on a node; meshed pods get the capture rules of the cluster's
// backend and are handed to the node's ztunnel by the node agent.
func (c *cluster) addPod(nodeName, name, sa, ip string, meshed bool) *pod {
	t := c.t
	n := c.nodes[nodeName]
	p := &pod{name: name, uid: "uid-" + name, sa: sa, ip: netip.MustParseAddr(ip), node: n, ns: netnstest.New(t, "zpod"), meshed: meshed}
	_, hostSide := netnstest.Veth(t, p.ns, ip+"/24", n.ns, "")
	n.ns.Run(t, "ip", "link", "set", hostSide, "master", n.bridge)
	p.ns.Run(t, "ip", "route", "add", "default", "via", n.gateway)
	var err error
	if p.net, err = inpod.OpenNetNS(p.ns.Path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.net.Close() })
	if meshed {
		r, err := rules.New(c.backend)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Install(p.ns.Path, rules.DefaultPodConfig()); err != nil {
			t.Fatal(err)
		}
	}
	c.pods[name] = p
	return p
}

// publish sends every pod's Workload to the control plane (plus extra resources).
func (c *cluster) publish() {
	ws := map[string]proto.Message{}
	for _, p := range c.pods {
		w := &pb.Workload{Uid: p.uid, Name: p.name, Namespace: "shop", ServiceAccount: p.sa, Node: p.node.name, Addresses: []string{p.ip.String()}}
		if p.meshed {
			w.TunnelProtocol = pb.TunnelProtocol_TUNNEL_PROTOCOL_HBONE
		}
		ws[p.uid] = w
	}
	c.xds.Set(c.t, pb.WorkloadTypeURL, ws)
}

// --- the app ---------------------------------------------------------------------------

// serveEcho runs the echo application on :8080 inside the pod.
func (p *pod) serveEcho(t testing.TB) *echoapp.App {
	var l net.Listener
	if err := p.net.Do(func() error {
		var err error
		l, err = net.Listen("tcp", ":8080")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	p.app = echoapp.Serve(t, l)
	return p.app
}

// call connects from inside the pod like its application would, sends one line and reads
// the answer.
func (p *pod) call(dst, msg string) (string, error) {
	var conn net.Conn
	if err := p.net.Do(func() error {
		var err error
		conn, err = net.DialTimeout("tcp", dst, 5*time.Second)
		return err
	}); err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte(msg + "\n")); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	return strings.TrimSpace(line), err
}

// --- ztunnel processes ------------------------------------------------------------------

type ztProc struct {
	*proc
	readiness string
	metrics   string
	adminAddr string
}

func freePort(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startZtunnel runs a ztunnel process for a node (in the host netns: its data sockets all
// live in the pods' namespaces it is handed).
func (c *cluster) startZtunnel(n *node, suffix string) *ztProc {
	t := c.t
	z := &ztProc{readiness: freePort(t), metrics: freePort(t), adminAddr: freePort(t)}
	bin := ztunnelBin
	if v := os.Getenv("ZTUNNEL_BIN"); v != "" {
		bin = v // to compare two builds in one sitting (docs/benchmarks.md)
	}
	cmd := exec.Command(bin,
		"--node", "node-"+n.name,
		"--insecure-control-plane",
		"--xds-address", c.xds.Addr,
		"--ca-address", c.ca.Addr,
		"--token-file", filepath.Join(c.dir, "token"),
		"--handoff-socket", n.socket,
		"--admin-address", z.adminAddr,
		"--metrics-address", z.metrics,
		"--readiness-address", z.readiness,
		"--drain-period", "5s",
		"--handover-grace", "1s",
		"--lazy-start-timeout", "5s",
		"--cert-ttl", "1h",
	)
	z.proc = startProc(t, "ztunnel "+n.name+suffix, cmd, filepath.Join(c.dir, "ztunnel-"+n.name+suffix+".log"), 20*time.Second)
	n.zt = z
	return z
}

func (z *ztProc) ready() bool {
	resp, err := http.Get("http://" + z.readiness + "/healthz/ready")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func (z *ztProc) scrape(t testing.TB) string { return get(t, "http://"+z.metrics+"/metrics") }

func (z *ztProc) admin(t testing.TB, path string) string { return get(t, "http://"+z.adminAddr+path) }

func get(t testing.TB, url string) string {
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// --- the node agent ------------------------------------------------------------------------

// agent plays the CNI node agent's hand-off side: it connects, replays its pods, sends
// SnapshotSent, and reconnects and replays whenever ztunnel goes away or a new ztunnel
// takes over the socket.
type agent struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func (c *cluster) startAgent(n *node) {
	var pods []*pod
	for _, p := range c.pods {
		if p.node == n && p.meshed {
			pods = append(pods, p)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &agent{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(a.done)
		for ctx.Err() == nil {
			if err := replay(ctx, n.socket, pods); err != nil && ctx.Err() == nil {
				time.Sleep(20 * time.Millisecond) // pace the reconnects while no ztunnel listens
			}
		}
	}()
	c.t.Cleanup(func() { cancel(); <-a.done })
	n.agent = a
}

func replay(ctx context.Context, socket string, pods []*pod) error {
	cl, err := handoff.Dial(ctx, socket)
	if err != nil {
		return err
	}
	defer cl.Close()
	if err := sendPods(cl, pods); err != nil {
		return err
	}
	_, err = cl.WaitGone(ctx)
	return err
}

// sendPods hands every pod's network namespace to ztunnel and then says the
// snapshot is complete, as the CNI agent does after each (re)connect.
func sendPods(cl *handoff.Client, pods []*pod) error {
	for _, p := range pods {
		f, err := os.Open(p.ns.Path)
		if err != nil {
			return err
		}
		err = cl.AddWorkload(&handoffpb.AddWorkload{Uid: p.uid, Name: p.name, Namespace: "shop", ServiceAccount: p.sa}, int(f.Fd()))
		f.Close()
		if err != nil {
			return err
		}
	}
	return cl.SnapshotSent()
}

// --- underlay capture ------------------------------------------------------------------------

// capture runs tcpdump on a node's underlay link until stop is called, which returns what
// it printed: a header line per packet, then the payload as ASCII.
func capture(t testing.TB, n *node, dir string) (stop func() (text string)) {
	t.Helper()
	c, err := tcpdump.Start(n.ns.Name, n.underlay, "tcp", filepath.Join(dir, "underlay-"+netnstest.UniqueName("")+".txt"))
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_, _ = c.Stop()
		}
	})
	return func() string {
		t.Helper()
		stopped = true
		text, err := c.Stop()
		if err != nil {
			t.Fatalf("the underlay capture: %v", err)
		}
		return text
	}
}

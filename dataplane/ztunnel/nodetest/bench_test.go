package nodetest

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/dataplane/cni/rules"
	"github.com/ambientmesh/ambient-operator/dataplane/handoff"
	"github.com/ambientmesh/ambient-operator/internal/netnstest"
	"github.com/ambientmesh/ambient-operator/internal/testwait"
)

// BenchmarkDataplane measures the data path against a direct pod→pod baseline in the same
// run and prints one line per figure (make bench-dataplane). Pods: client (node a) →
// server-b (node b) through both ztunnels; the baseline is the same traffic from plain-a
// (node a) to legacy (node b), two pods outside the mesh, over the same underlay.
func BenchmarkDataplane(b *testing.B) {
	netnstest.RequireRoot(b)
	c := meshCluster(b, rules.BackendIPTables)
	c.addPodLate("a", "plain-a", "10.100.1.30")
	for _, name := range []string{"server-b", "legacy"} {
		c.pods[name].serveBench(b)
	}
	mesh := func() (*pod, string) { return c.pods["client"], "10.100.2.10" }
	direct := func() (*pod, string) { return c.pods["plain-a"], "10.100.2.30" }

	// Warm up both paths (certificates, pooled HBONE connection).
	for _, path := range []func() (*pod, string){mesh, direct} {
		p, ip := path()
		if _, err := connectRTT(p, ip+":7000"); err != nil {
			b.Fatalf("warm-up to %s: %v", ip, err)
		}
	}

	// Direct and mesh are measured interleaved (run by run, sample by sample), so that
	// both see the same load from whatever else shares the two CPUs.
	var thrDirectRuns, thrMeshRuns []float64
	var directCPU, meshCPU cpuUse // where the CPU of the runs went
	for range 3 {                 // the median of three runs each
		before := c.cpuUse()
		thrDirectRuns = append(thrDirectRuns, throughput(b, direct, throughputBytes))
		directCPU = directCPU.add(c.cpuUse().sub(before))
		before = c.cpuUse()
		thrMeshRuns = append(thrMeshRuns, throughput(b, mesh, throughputBytes))
		meshCPU = meshCPU.add(c.cpuUse().sub(before))
	}
	thrDirect, thrMesh := median(thrDirectRuns), median(thrMeshRuns)
	rrDirect, rrMesh := requestResponse(b, direct, mesh, 5000)
	// The floor for the added round-trip time on this machine (logged only).
	rrFloorDirect, rrRelayed := requestResponse(b, direct, c.startRelays(b), 5000)
	ncDirect, ncMesh := newConnections(b, direct, mesh, 1000, 2*time.Millisecond)
	// The same without the pause, for comparison (logged only): back to back, each sample
	// also pays for the previous connection's tear-down.
	ncDirectB2B, ncMeshB2B := newConnections(b, direct, mesh, 1000, 0)
	leakedG, leakedFD := leaks(b, c, mesh, 10000)
	rss := idleRSS(b, c, 100)

	fmt.Printf("throughput_ratio_vs_direct: %.2f\n", thrMesh/thrDirect)
	fmt.Printf("rr_added_latency_p50_us: %.0f\n", us(pct(rrMesh, 50)-pct(rrDirect, 50)))
	fmt.Printf("rr_added_latency_p99_us: %.0f\n", us(pct(rrMesh, 99)-pct(rrDirect, 99)))
	fmt.Printf("new_conn_latency_ratio_p50: %.2f\n", float64(pct(ncMesh, 50))/float64(pct(ncDirect, 50)))
	fmt.Printf("ztunnel_rss_mb_100_pods: %.1f\n", rss)
	fmt.Printf("leaked_goroutines_after_10k: %d\n", leakedG)
	fmt.Printf("leaked_fds_after_10k: %d\n", leakedFD)
	gib := float64(3*throughputBytes) / (1 << 30)
	b.Logf("details: CPU seconds per GiB: mesh: ztunnel a %.2f, ztunnel b %.2f, the apps %.2f; direct: the apps %.2f",
		meshCPU.ztA/gib, meshCPU.ztB/gib, meshCPU.apps/gib, directCPU.apps/gib)
	b.Logf("details: throughput (MB/s, %d MiB per run) direct %.0f mesh %.0f (runs: direct %.0f, mesh %.0f); rr p50 direct %v mesh %v, p99 direct %v mesh %v; new conn p50 direct %v mesh %v (back to back: direct %v mesh %v, ratio %.2f)",
		throughputBytes>>20, thrDirect/1e6, thrMesh/1e6, mb(thrDirectRuns), mb(thrMeshRuns), pct(rrDirect, 50), pct(rrMesh, 50), pct(rrDirect, 99), pct(rrMesh, 99), pct(ncDirect, 50), pct(ncMesh, 50),
		pct(ncDirectB2B, 50), pct(ncMeshB2B, 50), float64(pct(ncMeshB2B, 50))/float64(pct(ncDirectB2B, 50)))
	b.Logf("details: two plain TCP relay processes (io.Copy, no TLS; relay_test.go) on the same route add rr p50 %.0f µs, p99 %.0f µs (direct %v, relayed %v): the floor for any pair of user-space proxies here",
		us(pct(rrRelayed, 50)-pct(rrFloorDirect, 50)), us(pct(rrRelayed, 99)-pct(rrFloorDirect, 99)), pct(rrFloorDirect, 50), pct(rrRelayed, 50))
	b.ReportMetric(thrMesh/thrDirect, "throughput_ratio")
}

// cpuUse is CPU time (user + system, seconds) of the two ztunnels and of this process,
// where the client and server apps run.
type cpuUse struct{ ztA, ztB, apps float64 }

func (c *cluster) cpuUse() cpuUse {
	return cpuUse{
		ztA:  cpuSeconds(c.nodes["a"].zt.cmd.Process.Pid),
		ztB:  cpuSeconds(c.nodes["b"].zt.cmd.Process.Pid),
		apps: cpuSeconds(os.Getpid()),
	}
}

func (u cpuUse) sub(v cpuUse) cpuUse { return cpuUse{u.ztA - v.ztA, u.ztB - v.ztB, u.apps - v.apps} }
func (u cpuUse) add(v cpuUse) cpuUse { return cpuUse{u.ztA + v.ztA, u.ztB + v.ztB, u.apps + v.apps} }

// cpuSeconds reads utime + stime of a process (clock ticks of 1/100 s on Linux).
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may contain spaces) start at state (field 3).
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

func mb(v []float64) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = x / 1e6
	}
	return out
}

func pct(samples []time.Duration, p int) time.Duration {
	s := append([]time.Duration(nil), samples...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, len(s)*p/100)]
}

// addPodLate adds a pod outside the mesh after the cluster started.
func (c *cluster) addPodLate(nodeName, name, ip string) *pod {
	return c.addPod(nodeName, name, "default", ip, false)
}

// serveBench runs the benchmark servers in a pod: :7000 echoes fixed 64-byte messages,
// :7001 discards everything and answers the byte count (8 bytes) at EOF.
func (p *pod) serveBench(t testing.TB) {
	listen := func(port int) net.Listener {
		var l net.Listener
		if err := p.net.Do(func() error {
			var err error
			l, err = net.Listen("tcp", fmt.Sprintf(":%d", port))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		return l
	}
	serve := func(l net.Listener, handle func(net.Conn)) {
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go func() { defer c.Close(); handle(c) }()
			}
		}()
	}
	serve(listen(7000), func(c net.Conn) {
		buf := make([]byte, 64)
		for {
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	})
	serve(listen(7001), func(c net.Conn) {
		n, _ := io.Copy(io.Discard, c)
		var out [8]byte
		binary.BigEndian.PutUint64(out[:], uint64(n))
		_, _ = c.Write(out[:])
	})
}

func (p *pod) dial(addr string) (net.Conn, error) {
	var c net.Conn
	err := p.net.Do(func() error {
		var err error
		c, err = net.DialTimeout("tcp", addr, 5*time.Second)
		return err
	})
	return c, err
}

// throughputBytes is what one throughput run sends: a fixed amount (not a fixed time), so
// that every run does the same work.
const throughputBytes = 512 << 20

// throughput sends total bytes over one connection and returns bytes/s, from the first
// write until the server's answer (its count of the bytes received, checked) arrives.
func throughput(t testing.TB, path func() (*pod, string), total int64) float64 {
	p, ip := path()
	c, err := p.dial(ip + ":7001")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 256<<10)
	start := time.Now()
	for sent := int64(0); sent < total; sent += int64(len(buf)) {
		if _, err := c.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	_ = c.(*net.TCPConn).CloseWrite()
	var out [8]byte
	_ = c.SetReadDeadline(time.Now().Add(60 * time.Second))
	if _, err := io.ReadFull(c, out[:]); err != nil {
		t.Fatalf("reading the byte count: %v", err)
	}
	elapsed := time.Since(start)
	if got := int64(binary.BigEndian.Uint64(out[:])); got != total {
		t.Fatalf("the server received %d bytes, want %d", got, total)
	}
	return float64(total) / elapsed.Seconds()
}

// requestResponse times n 64-byte round trips on one open connection per path,
// alternating between the two.
func requestResponse(t testing.TB, direct, mesh func() (*pod, string), n int) (directRTT, meshRTT []time.Duration) {
	open := func(path func() (*pod, string)) net.Conn {
		p, ip := path()
		c, err := p.dial(ip + ":7000")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	dc, mc := open(direct), open(mesh)
	buf := make([]byte, 64)
	rtt := func(c net.Conn) time.Duration {
		start := time.Now()
		if _, err := c.Write(buf); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
		return time.Since(start)
	}
	for range n {
		directRTT = append(directRTT, rtt(dc))
		meshRTT = append(meshRTT, rtt(mc))
	}
	return directRTT, meshRTT
}

// connectRTT opens a new connection and times it until the first answer arrives.
func connectRTT(p *pod, addr string) (time.Duration, error) {
	start := time.Now()
	c, err := p.dial(addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	buf := make([]byte, 64)
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(buf); err != nil {
		return 0, err
	}
	if _, err := io.ReadFull(c, buf); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// newConnections times n new connections per path (connect + first 64-byte round trip),
// alternating between the two. Each sample starts after pause, in which the previous
// connection's tear-down (in the ztunnels: closing both sides, access log, metrics) can
// finish, so that neither path pays for the other's.
func newConnections(t testing.TB, direct, mesh func() (*pod, string), n int, pause time.Duration) (directNC, meshNC []time.Duration) {
	sample := func(path func() (*pod, string)) time.Duration {
		time.Sleep(pause)
		p, ip := path()
		d, err := connectRTT(p, ip+":7000")
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	for range n {
		directNC = append(directNC, sample(direct))
		meshNC = append(meshNC, sample(mesh))
	}
	return directNC, meshNC
}

var metricLine = regexp.MustCompile(`(?m)^(go_goroutines|process_open_fds) (\S+)$`)

// processStats reads goroutines and open fds from a ztunnel's metrics.
func processStats(t testing.TB, z *ztProc) (goroutines, fds int) {
	for _, m := range metricLine.FindAllStringSubmatch(z.scrape(t), -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		if m[1] == "go_goroutines" {
			goroutines = int(v)
		} else {
			fds = int(v)
		}
	}
	return goroutines, fds
}

// leaks opens and closes n connections through both ztunnels and reports how many
// goroutines and fds (summed over both) remain above the level before, once settled.
func leaks(t testing.TB, c *cluster, path func() (*pod, string), n int) (goroutines, fds int) {
	zs := []*ztProc{c.nodes["a"].zt, c.nodes["b"].zt}
	sum := func() (int, int) {
		g, f := 0, 0
		for _, z := range zs {
			zg, zf := processStats(t, z)
			g, f = g+zg, f+zf
		}
		return g, f
	}
	// The earlier samples' connections may still be closing: the baseline is taken once
	// the counts stop falling from one poll to the next.
	g0, f0 := math.MaxInt, math.MaxInt // the first poll only takes a sample
	err := testwait.Until(10*time.Second, func() error {
		g, f := sum()
		falling := g < g0 || f < f0
		g0, f0 = g, f
		if falling {
			return errors.New("goroutines or fds still falling")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	p, ip := path()
	for i := range n {
		if _, err := connectRTT(p, ip+":7000"); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
	}
	// Closed connections finish asynchronously: what is still above the baseline after
	// 10s is the leak (the error only says that some is).
	var g, f int
	_ = testwait.Until(10*time.Second, func() error {
		if g, f = sum(); g > g0 || f > f0 {
			return errors.New("above the baseline")
		}
		return nil
	})
	return max(g-g0, 0), max(f-f0, 0)
}

// idleRSS starts a ztunnel for a third node with `pods` enrolled idle pods (each its own
// service account, so each with its own key and certificate) and returns its RSS in MB.
func idleRSS(t testing.TB, c *cluster, pods int) float64 {
	n := c.addNode("c", "10.100.3.1/24")
	var list []*pod
	ws := map[string]proto.Message{}
	r, err := rules.New(rules.BackendIPTables)
	if err != nil {
		t.Fatal(err)
	}
	for i := range pods {
		p := &pod{name: fmt.Sprintf("idle-%d", i), uid: fmt.Sprintf("uid-idle-%d", i), sa: fmt.Sprintf("sa-%d", i),
			ip: netip.MustParseAddr(fmt.Sprintf("10.100.3.%d", 10+i)), node: n, ns: netnstest.New(t, "zidle"), meshed: true}
		if _, err := r.Install(p.ns.Path, rules.DefaultPodConfig()); err != nil {
			t.Fatal(err)
		}
		list = append(list, p)
		ws[p.uid] = &pb.Workload{Uid: p.uid, Name: p.name, Namespace: "shop", ServiceAccount: p.sa, Node: "node-c",
			Addresses: []string{p.ip.String()}, TunnelProtocol: pb.TunnelProtocol_TUNNEL_PROTOCOL_HBONE}
	}
	c.xds.Set(t, pb.WorkloadTypeURL, ws)
	z := c.startZtunnel(n, "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			_ = replayIdle(ctx, n.socket, list)
		}
	}()
	testwait.For(t, "the 100-pod ztunnel ready", 60*time.Second, z.ready)
	testwait.For(t, "every pod's certificate", 60*time.Second, func() bool {
		return strings.Count(z.admin(t, "/certs"), `"Available"`) == pods
	})
	time.Sleep(2 * time.Second) // measured after a spell of idleness, not at the end of start-up
	return rssMB(t, z.cmd.Process.Pid)
}

func replayIdle(ctx context.Context, socket string, pods []*pod) error {
	cl, err := handoff.Dial(ctx, socket)
	if err != nil {
		time.Sleep(50 * time.Millisecond) // the caller retries at once: pace the redials
		return err
	}
	defer cl.Close()
	if err := sendPods(cl, pods); err != nil {
		return err
	}
	return cl.WaitClosed(ctx)
}

func rssMB(t testing.TB, pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1024
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

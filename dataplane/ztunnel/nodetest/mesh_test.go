package nodetest

import (
	"fmt"
	"os"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/dataplane/cni/rules"
	"github.com/ambientmesh/ambient-operator/internal/netnstest"
	"github.com/ambientmesh/ambient-operator/internal/testwait"
)

const echoService = "shop/echo.shop.svc.cluster.local"

// meshCluster: node a runs client (10.100.1.10) and server-a (10.100.1.20); node b runs
// server-b (10.100.2.10), client-b (10.100.2.20) and legacy (10.100.2.30, not in the mesh).
// Service echo (VIP 10.96.0.50:80 → 8080) selects server-a and server-b.
func meshCluster(t testing.TB, backend string) *cluster {
	c := newCluster(t, backend)
	c.addPod("a", "client", "client", "10.100.1.10", true)
	c.addPod("a", "server-a", "server", "10.100.1.20", true).serveEcho(t)
	c.addPod("b", "server-b", "server", "10.100.2.10", true).serveEcho(t)
	c.addPod("b", "client-b", "client", "10.100.2.20", true)
	c.addPod("b", "legacy", "legacy", "10.100.2.30", false).serveEcho(t)
	c.publish()
	ports := map[string]*pb.PortList{echoService: {Ports: []*pb.Port{{ServicePort: 80, TargetPort: 8080}}}}
	for _, name := range []string{"server-a", "server-b"} {
		p := c.pods[name]
		c.xds.Set(t, pb.WorkloadTypeURL, map[string]proto.Message{p.uid: &pb.Workload{Uid: p.uid, Name: p.name, Namespace: "shop", ServiceAccount: p.sa,
			Node: p.node.name, Addresses: []string{p.ip.String()}, TunnelProtocol: pb.TunnelProtocol_TUNNEL_PROTOCOL_HBONE, Services: ports}})
	}
	c.xds.Set(t, pb.ServiceTypeURL, map[string]proto.Message{echoService: &pb.Service{Name: "echo", Namespace: "shop",
		Hostname: "echo.shop.svc.cluster.local", Vips: []string{"10.96.0.50"}, Ports: []*pb.Port{{ServicePort: 80, TargetPort: 8080}}}})
	for _, name := range []string{"a", "b"} {
		c.startZtunnel(c.nodes[name], "")
		c.startAgent(c.nodes[name])
	}
	testwait.For(t, "both ztunnels ready", 20*time.Second, func() bool { return c.nodes["a"].zt.ready() && c.nodes["b"].zt.ready() })
	return c
}

func TestMeshOnRealNamespaces(t *testing.T) {
	for _, backend := range []string{rules.BackendIPTables, rules.BackendNFTables} {
		t.Run(backend, func(t *testing.T) {
			c := meshCluster(t, backend)
			client := c.pods["client"]

			t.Run("cross-node traffic is mTLS and the underlay carries no plaintext", func(t *testing.T) {
				stop := capture(t, c.nodes["a"], c.dir)
				marker := "SECRET-" + netnstest.UniqueName("m")
				got, err := client.call("10.100.2.10:8080", marker)
				text := stop()
				if err != nil || got != "echo "+marker {
					t.Fatalf("client → server-b: %q, %v", got, err)
				}
				if !c.pods["server-b"].app.Received(marker) {
					t.Fatal("server-b's app did not see the payload")
				}
				if strings.Contains(text, marker) {
					t.Fatal("the payload crossed the underlay in plaintext")
				}
				if !strings.Contains(text, "10.100.1.10.") || !strings.Contains(text, "10.100.2.10.15008") {
					t.Fatalf("no HBONE (client pod → server-b:15008) seen on the underlay:\n%s", tail(text, 10))
				}
				metrics := c.nodes["b"].zt.scrape(t)
				if !containsLine(metrics, "istio_tcp_connections_opened_total{", `reporter="destination"`, `source_principal="spiffe://cluster.local/ns/shop/sa/client"`,
					`destination_workload="server-b"`, `connection_security_policy="mutual_tls"`) {
					t.Fatalf("server-b's ztunnel metrics lack the mTLS connection from the client identity:\n%s", grep(metrics, "istio_tcp_connections_opened"))
				}
				// The default worker threads: half the CPUs, at least one.
				want := fmt.Sprintf("go_sched_gomaxprocs_threads %d", max(1, (runtime.GOMAXPROCS(0)+1)/2))
				if !strings.Contains(metrics, "\n"+want+"\n") {
					t.Fatalf("ztunnel's GOMAXPROCS: want %q in\n%s", want, grep(metrics, "gomaxprocs"))
				}
				// Started without that setting, the ztunnel re-executed itself with sysmon kept awake.
				environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", c.nodes["b"].zt.cmd.Process.Pid))
				if err != nil || !regexp.MustCompile(`(^|\x00)GODEBUG=([^\x00]*,)?schedtrace=2147483647(,|\x00)`).Match(environ) {
					t.Fatalf("ztunnel's environment lacks GODEBUG schedtrace=2147483647 (%v)", err)
				}
			})

			t.Run("control: plaintext to a pod outside the mesh is visible on the underlay", func(t *testing.T) {
				stop := capture(t, c.nodes["a"], c.dir)
				marker := "VISIBLE-" + netnstest.UniqueName("m")
				got, err := client.call("10.100.2.30:8080", marker)
				text := stop()
				if err != nil || got != "echo "+marker {
					t.Fatalf("client → legacy (passthrough): %q, %v", got, err)
				}
				if !strings.Contains(text, marker) {
					t.Fatal("the capture does not see plaintext payloads: the no-plaintext check above proves nothing")
				}
			})

			t.Run("same node", func(t *testing.T) {
				before := c.pods["server-a"].app.Connections()
				got, err := client.call("10.100.1.20:8080", "same-node")
				if err != nil || got != "echo same-node" {
					t.Fatalf("client → server-a: %q, %v", got, err)
				}
				if c.pods["server-a"].app.Connections() != before+1 {
					t.Fatal("server-a's app did not get the connection")
				}
				// Polled: once (CI, 7 Dec) the line was missing when read right after the
				// echo came back, although the destination ztunnel counts a connection before
				// it relays a byte; the cause was not found. A count that never comes still
				// fails here.
				testwait.For(t, "the same-node connection carried over HBONE to server-a (destination metrics)", 5*time.Second, func() bool {
					return containsLine(c.nodes["a"].zt.scrape(t), "istio_tcp_connections_opened_total{", `reporter="destination"`, `destination_workload="server-a"`, `source_principal="spiffe://cluster.local/ns/shop/sa/client"`)
				})
			})

			t.Run("a client cannot relay through a pod's own mesh ports", func(t *testing.T) {
				// The client's ztunnel carries these like any connection to server-b: a
				// CONNECT for 10.100.2.10:<port>. Relayed, the inner connection would come
				// from server-b's own address (and on 15001 leave with its identity).
				for _, port := range []string{"15001", "15006", "15008"} {
					if got, err := client.call("10.100.2.10:"+port, "launder"); err == nil {
						t.Errorf("client → server-b:%s answered %q: a mesh port was relayed", port, got)
					}
				}
				log, err := os.ReadFile(c.nodes["b"].zt.logPath)
				if err != nil {
					t.Fatal(err)
				}
				for _, port := range []string{"15001", "15006", "15008"} {
					if !strings.Contains(string(log), "10.100.2.10:"+port+" is ztunnel's own port") {
						t.Errorf("server-b's ztunnel did not log the refusal of a CONNECT to its port %s:\n%s", port, tail(string(log), 10))
					}
				}
			})

			t.Run("service VIP balances over both endpoints", func(t *testing.T) {
				a0, b0 := c.pods["server-a"].app.Connections(), c.pods["server-b"].app.Connections()
				for i := range 20 {
					got, err := client.call("10.96.0.50:80", fmt.Sprintf("vip-%d", i))
					if err != nil || got != fmt.Sprintf("echo vip-%d", i) {
						t.Fatalf("call %d through the VIP: %q, %v", i, got, err)
					}
				}
				da, db := c.pods["server-a"].app.Connections()-a0, c.pods["server-b"].app.Connections()-b0
				if da+db != 20 || da == 0 || db == 0 {
					t.Fatalf("20 calls to the VIP reached server-a %d times and server-b %d times", da, db)
				}
			})
		})
	}
}

func containsLine(metrics, prefix string, parts ...string) bool {
	for _, line := range strings.Split(metrics, "\n") {
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return true
		}
	}
	return false
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// restartTraffic keeps two clients opening connections through node a's ztunnel, outbound
// (client → server-b) and inbound (client-b → server-a), while a new ztunnel replaces the
// old one as a rolling update does: the new one starts and becomes ready (it took the pods
// over from the agent), then stopOld ends the old one. It returns the number of successful
// connections and the failures, each with the time it happened relative to stopOld.
func restartTraffic(t *testing.T, stopOld func(old *ztProc)) (ok int64, failures []failure) {
	c := meshCluster(t, rules.BackendIPTables)
	old := c.nodes["a"].zt
	var okCount atomic.Int64
	var mu sync.Mutex
	var stoppedAt time.Time
	stop := make(chan struct{})
	var wg sync.WaitGroup
	loop := func(from *pod, dst string) {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			msg := fmt.Sprintf("%s-%d", from.name, i)
			got, err := from.call(dst, msg)
			if err != nil || got != "echo "+msg {
				mu.Lock()
				failures = append(failures, failure{at: time.Since(stoppedAt), what: fmt.Sprintf("%s → %s: %q %v", from.name, dst, got, err)})
				mu.Unlock()
				continue
			}
			okCount.Add(1)
		}
	}
	wg.Add(2)
	go loop(c.pods["client"], "10.100.2.10:8080")
	go loop(c.pods["client-b"], "10.100.1.20:8080")
	testwait.For(t, "traffic through the old ztunnel", 10*time.Second, func() bool { return okCount.Load() >= 10 })

	next := c.startZtunnel(c.nodes["a"], "-next")
	testwait.For(t, "the new ztunnel ready (it got the pods from the agent)", 20*time.Second, next.ready)
	mu.Lock()
	stoppedAt = time.Now()
	mu.Unlock()
	stopOld(old)
	afterStop := okCount.Load()
	testwait.For(t, "traffic through the new ztunnel alone", 10*time.Second, func() bool { return okCount.Load() >= afterStop+20 })
	close(stop)
	wg.Wait()
	if okCount.Load() < 20 {
		t.Fatalf("only %d connections made during the restart: the test did not exercise it", okCount.Load())
	}
	if !containsLine(next.scrape(t), "istio_tcp_connections_opened_total{", `reporter="destination"`, `destination_workload="server-a"`) {
		t.Fatal("the new ztunnel never served inbound connections")
	}
	return okCount.Load(), failures
}

type failure struct {
	at   time.Duration // since the old ztunnel was told to stop
	what string
}

// TestRestartRefusesNoConnection: SIGTERM makes the old ztunnel drain; no connection fails.
func TestRestartRefusesNoConnection(t *testing.T) {
	ok, failures := restartTraffic(t, func(old *ztProc) { old.stop(t) })
	if len(failures) > 0 {
		t.Fatalf("%d of %d connections failed during the restart; first: %+v", len(failures), int64(len(failures))+ok, failures[:min(len(failures), 5)])
	}
	t.Logf("%d connections, none refused, across the restart", ok)
}

// TestCrashRefusesNoNewConnection: even when the old ztunnel is killed (SIGKILL) after its
// successor took over, only connections it was carrying at that instant break (at most one
// per client here); every connection opened afterwards succeeds.
func TestCrashRefusesNoNewConnection(t *testing.T) {
	ok, failures := restartTraffic(t, func(old *ztProc) {
		_ = old.cmd.Process.Kill() // by PID
		<-old.done
		old.done <- nil
	})
	if len(failures) > 2 {
		t.Fatalf("%d connections failed after the kill (want at most the 2 in flight): %+v", len(failures), failures[:min(len(failures), 5)])
	}
	for _, f := range failures {
		if f.at < 0 || f.at > 200*time.Millisecond {
			t.Fatalf("a connection failed %v after the kill, not at the kill: %s", f.at, f.what)
		}
	}
	t.Logf("%d connections; %d in flight through the killed ztunnel broke", ok, len(failures))
}

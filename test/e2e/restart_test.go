package e2e

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ambientmesh/ambient-operator/controllers/ambientmesh/manifests"
	"github.com/ambientmesh/ambient-operator/internal/testwait"
	"github.com/ambientmesh/ambient-operator/test/e2e/localmesh"
)

func TestEnrollmentWithoutRestart(t *testing.T) {
	requireMesh(t)
	ctx := context.Background()
	if err := mesh.EnsureNamespace(ctx, "late", nil); err != nil {
		t.Fatal(err)
	}
	client, err := mesh.AddPod(ctx, "late", "client", "late-client", mesh.Nodes[0], map[string]string{"app": "client"})
	if err != nil {
		t.Fatal(err)
	}
	server, err := mesh.AddPod(ctx, "late", "server", "late-server", mesh.Nodes[1], map[string]string{"app": "server"})
	if err != nil {
		t.Fatal(err)
	}
	mustReach(t, client, server.Addr())
	if lines := ztunnelMetric(t, server.Node, "istio_tcp_connections_opened_total", `source_principal="`+localmesh.Principal(client)+`"`); len(lines) > 0 {
		t.Fatalf("before the namespace is labelled, ztunnel already carries its traffic: %v", lines)
	}
	if err := mesh.EnsureNamespace(ctx, "late", map[string]string{localmesh.EnrollLabel: "ambient"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "after labelling namespace late, its running pods' traffic should go through ztunnel with mTLS", func() error {
		if _, err := client.Request(server.Addr(), 3*time.Second); err != nil {
			return err
		}
		lines := ztunnelMetric(t, server.Node, "istio_tcp_connections_opened_total", `reporter="destination"`,
			`source_principal="`+localmesh.Principal(client)+`"`, `connection_security_policy="mutual_tls"`)
		if len(lines) == 0 {
			return fmt.Errorf("no mutual-TLS connection from %s in ztunnel metrics on %s", localmesh.Principal(client), server.Node.Name)
		}
		return nil
	})
	pod, err := mesh.Clientset.CoreV1().Pods("late").Get(ctx, "client", metav1.GetOptions{})
	if err != nil || string(pod.UID) != client.UID {
		t.Errorf("the pod was replaced (uid %s → %v, %v): enrollment must not restart pods", client.UID, pod.UID, err)
	}
}

// traffic keeps opening connections client → server-b (cross node) and
// client → server-a (same node) until stopped, counting failures.
type traffic struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	firstErr   error
	stop       chan struct{}
	wg         sync.WaitGroup
}

func startTraffic(targets ...string) *traffic {
	tr := &traffic{stop: make(chan struct{})}
	for _, target := range targets {
		tr.wg.Add(1)
		go func() {
			defer tr.wg.Done()
			for {
				select {
				case <-tr.stop:
					return
				default:
				}
				if _, err := w.Client.Request(target, 3*time.Second); err != nil {
					tr.failed.Add(1)
					tr.mu.Lock()
					if tr.firstErr == nil {
						tr.firstErr = fmt.Errorf("%s: %w", target, err)
					}
					tr.mu.Unlock()
				} else {
					tr.ok.Add(1)
				}
				time.Sleep(20 * time.Millisecond) // paces the load: steady traffic, not a flood
			}
		}()
	}
	return tr
}

func (tr *traffic) finish(t *testing.T, during string) {
	t.Helper()
	close(tr.stop)
	tr.wg.Wait()
	if tr.ok.Load() < 10 {
		t.Errorf("only %d connections succeeded %s: the test did not exercise it", tr.ok.Load(), during)
	}
	if n := tr.failed.Load(); n > 0 {
		t.Errorf("%d of %d connections failed %s; first: %v", n, n+tr.ok.Load(), during, tr.firstErr)
	}
	t.Logf("%d connections, %d failed, %s", tr.ok.Load(), tr.failed.Load(), during)
}

func TestZtunnelRestartRefusesNoNewConnection(t *testing.T) {
	requireMesh(t)
	mustReach(t, w.Client, w.ServerB.Addr())
	old, err := mesh.Component(manifests.ZTunnelName, w.Client.Node.Name)
	if err != nil {
		t.Fatal(err)
	}
	tr := startTraffic(w.ServerB.Addr(), w.ServerA.Addr())
	testwait.For(t, "traffic before the restart", 10*time.Second, func() bool { return tr.ok.Load() >= 10 })
	if err := mesh.RestartComponent(context.Background(), manifests.ZTunnelName, w.Client.Node.Name, 40*time.Second, true); err != nil {
		t.Fatalf("restarting ztunnel on %s: %v", w.Client.Node.Name, err)
	}
	// The traffic runs through the whole hand-over: until the old ztunnel has drained and
	// exited, then through the new one alone.
	testwait.For(t, "the old ztunnel to exit", 45*time.Second, old.Exited)
	afterExit := tr.ok.Load()
	testwait.For(t, "traffic through the new ztunnel alone", 10*time.Second, func() bool { return tr.ok.Load() >= afterExit+10 })
	tr.finish(t, "while ztunnel on "+w.Client.Node.Name+" was replaced")
}

func TestCNIAgentRestartLosesNoPod(t *testing.T) {
	requireMesh(t)
	ctx := context.Background()
	node := w.Client.Node
	before := len(ztunnelMetric(t, w.ServerB.Node, "istio_tcp_connections_opened_total", `source_principal="`+localmesh.Principal(w.Client)+`"`))
	if err := mesh.RestartComponent(ctx, manifests.CNIName, node.Name, 30*time.Second, false); err != nil {
		t.Fatalf("restarting the CNI agent on %s: %v", node.Name, err)
	}
	// The pods enrolled before the restart are still in the mesh.
	eventually(t, 30*time.Second, "shop/client still meshed after the CNI agent restarted", func() error {
		if _, err := w.Client.Request(w.ServerB.Addr(), 3*time.Second); err != nil {
			return err
		}
		out, err := ambientctl(t, "ztunnel", "workloads", "--via", "netns", "--node", node.Name)
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	_ = before
	lines := ztunnelMetric(t, w.ServerB.Node, "istio_tcp_connections_opened_total", `reporter="destination"`,
		`source_principal="`+localmesh.Principal(w.Client)+`"`, `connection_security_policy="mutual_tls"`)
	if len(lines) == 0 {
		t.Errorf("after the CNI agent restart, shop/client's connections are no longer mTLS")
	}
	// A pod created after the restart is enrolled too.
	p, err := mesh.AddPod(ctx, "shop", "after-agent-restart", "client", node, map[string]string{"app": "client"})
	if err != nil {
		t.Fatalf("a pod created after the CNI agent restart: %v", err)
	}
	eventually(t, 30*time.Second, "a pod created after the CNI agent restart is meshed", func() error {
		if _, err := p.Request(w.ServerB.Addr(), 3*time.Second); err != nil {
			return err
		}
		if len(ztunnelMetric(t, node, "istio_tcp_connections_opened_total", `reporter="source"`, `source_workload="after-agent-restart"`)) == 0 {
			return fmt.Errorf("its ztunnel reports no outbound connection from it")
		}
		return nil
	})
}

func TestControlPlaneRestartKeepsTrafficAndResumesUpdates(t *testing.T) {
	requireMesh(t)
	ctx := context.Background()
	mustReach(t, w.Client, w.ServerB.Addr())
	tr := startTraffic(w.ServerB.Addr())
	if err := mesh.RestartComponent(ctx, manifests.ControlPlaneName, "", 20*time.Second, false); err != nil {
		t.Fatalf("restarting the control plane: %v", err)
	}
	tr.finish(t, "while the control plane restarted")
	// Updates resume: a DENY policy made after the restart is enforced.
	deny := denyClientPolicy(t, "deny-after-restart")
	mustBeRefused(t, w.Client, w.ServerB.Addr(), "a DENY policy created after the control plane restarted")
	if err := mesh.Client.Delete(ctx, deny); err != nil {
		t.Fatal(err)
	}
	mustReach(t, w.Client, w.ServerB.Addr())
}

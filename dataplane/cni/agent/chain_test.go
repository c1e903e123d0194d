package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/ambientmesh/ambient-operator/dataplane/cni/conflist"
	"github.com/ambientmesh/ambient-operator/dataplane/cni/plugin"
	"github.com/ambientmesh/ambient-operator/dataplane/cni/rules"
	"github.com/ambientmesh/ambient-operator/dataplane/cni/wire"
	"github.com/ambientmesh/ambient-operator/internal/netnstest"
	"github.com/ambientmesh/ambient-operator/internal/testwait"
)

// debianCNIDir holds Debian's containernetworking-plugins.
const debianCNIDir = "/usr/lib/cni"

const bridgeConflist = `{
  "cniVersion": "1.0.0",
  "name": "podnet",
  "plugins": [
    {"type": "bridge", "bridge": "amb0", "isGateway": true, "ipMasq": true,
     "ipam": {"type": "host-local", "dataDir": "%s", "ranges": [[{"subnet": "10.251.0.0/24"}]]}}
  ]
}`

// buildPlugin compiles cmd/cni-plugin as dir/ambient-cni.
func buildPlugin(t *testing.T, dir string) string {
	t.Helper()
	out := filepath.Join(dir, plugin.Type)
	cmd := exec.Command("go", "build", "-o", out, "github.com/ambientmesh/ambient-operator/cmd/cni-plugin")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the plugin: %v\n%s", err, b)
	}
	return out
}

type chainEnv struct {
	node    *netnstest.NS
	cni     *libcni.CNIConfig
	list    *libcni.NetworkConfigList
	backend rules.Rules
}

func (c *chainEnv) rt(pod *corev1.Pod, netns string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: "ctr-" + string(pod.UID), NetNS: netns, IfName: "eth0",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", pod.Namespace},
			{"K8S_POD_NAME", pod.Name}, {"K8S_POD_INFRA_CONTAINER_ID", "ctr-" + string(pod.UID)}, {"K8S_POD_UID", string(pod.UID)}},
	}
}

// add runs the chain the way a runtime does, from the node's netns.
func (c *chainEnv) add(pod *corev1.Pod, netns string) (*current.Result, error) {
	var res types.Result
	err := c.node.Do(func() (err error) {
		res, err = c.cni.AddNetworkList(context.Background(), c.list, c.rt(pod, netns))
		return err
	})
	if err != nil {
		return nil, err
	}
	return current.NewResultFromResult(res)
}

func (c *chainEnv) del(pod *corev1.Pod, netns string) error {
	return c.node.Do(func() error { return c.cni.DelNetworkList(context.Background(), c.list, c.rt(pod, netns)) })
}

func testPod(ns, name, uid string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: k8stypes.UID(uid), Labels: labels},
		Spec:   corev1.PodSpec{NodeName: "node-a", ServiceAccountName: "web"},
		Status: corev1.PodStatus{Phase: corev1.PodPending}}
}

// TestRealCNIChain: Debian's bridge + host-local as the primary network, our
// plugin chained by the conflist installer, driven by libcni as a runtime
// would, into namespaces the test creates. The pod lookup reads a fake
// client (the apiserver path is covered by the envtest suite); everything
// else is real: plugin binary, unix socket, rules, hand-off socket and fds.
func TestRealCNIChain(t *testing.T) {
	netnstest.RequireRoot(t)
	if _, err := os.Stat(filepath.Join(debianCNIDir, "bridge")); err != nil {
		t.Fatalf("Debian's CNI plugins are missing (apt-get install containernetworking-plugins): %v", err)
	}
	for _, backend := range []string{rules.BackendIPTables, rules.BackendNFTables} {
		t.Run(backend, func(t *testing.T) { runChain(t, backend) })
	}
}

func runChain(t *testing.T, backendName string) {
	work := t.TempDir()
	binDir, confDir := filepath.Join(work, "bin"), filepath.Join(work, "net.d")
	for _, d := range []string{binDir, confDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	src := buildPlugin(t, work)
	sockDir, err := os.MkdirTemp("", "cni")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	cniSocket, stateFile := filepath.Join(sockDir, "agent.sock"), filepath.Join(sockDir, "enrollment.json")

	// The primary network, then our installer chains the plugin into it.
	if err := os.WriteFile(filepath.Join(confDir, "10-podnet.conflist"), fmt.Appendf(nil, bridgeConflist, filepath.Join(work, "ipam")), 0o644); err != nil {
		t.Fatal(err)
	}
	inst := &conflist.Installer{BinarySource: src, BinDir: binDir, ConfDir: confDir, Log: testr.New(t),
		Entry: map[string]any{"type": plugin.Type, "agentSocket": cniSocket, "stateFile": stateFile, "timeoutSeconds": 5}}
	if err := inst.Sync(); err != nil || !inst.Installed() {
		t.Fatalf("installing the plugin: %v", err)
	}
	primary, _ := conflist.Primary(confDir)
	list, err := libcni.ConfListFromFile(primary)
	if err != nil {
		t.Fatal(err)
	}
	if last := list.Plugins[len(list.Plugins)-1].Network.Type; last != plugin.Type {
		t.Fatalf("last plugin in the chain is %q", last)
	}

	node := netnstest.New(t, "cnode")
	env := &chainEnv{node: node, list: list,
		cni: libcni.NewCNIConfigWithCacheDir([]string{binDir, debianCNIDir}, filepath.Join(work, "cache"), nil)}
	env.backend, _ = rules.New(backendName)

	enrolledNS := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"ambientmesh.dev/dataplane-mode": "ambient"}}}
	plainNS := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "plain"}}
	web := testPod("shop", "web", "uid-web", nil)
	legacy := testPod("shop", "legacy", "uid-legacy", map[string]string{"ambientmesh.dev/dataplane-mode": "none"})
	other := testPod("plain", "other", "uid-other", nil)
	late := testPod("shop", "late", "uid-late", nil)
	reader := fake.NewClientBuilder().WithObjects(enrolledNS, plainNS, web, legacy, other, late).Build()

	zt := startFakeZtunnel(t, rules.DefaultOutboundPort)
	metrics := NewMetrics(prometheus.NewRegistry())
	ztc := &Ztunnel{SocketPath: zt.Socket, Log: testr.New(t), RetryInterval: 100 * time.Millisecond}
	enroller := &Enroller{Rules: env.backend, PodConfig: rules.DefaultPodConfig(), HostNetns: node.Path, Ztunnel: ztc, Metrics: metrics, Log: testr.New(t)}
	srv := &CNIServer{Enroller: enroller, Cache: reader, Log: testr.New(t)}
	ctx, cancel := context.WithCancel(context.Background())
	srvDone, ztDone := make(chan error, 1), make(chan error, 1)
	go func() { srvDone <- srv.Serve(ctx, cniSocket) }()
	go func() { ztDone <- ztc.Run(ctx) }()
	stopAgent := func() { cancel(); <-srvDone; <-ztDone }
	defer func() {
		if ctx.Err() == nil {
			stopAgent()
		}
	}()
	testwait.For(t, "agent socket and ztunnel connection", 5*time.Second, func() bool {
		_, err := os.Stat(cniSocket)
		return err == nil && ztc.Connected()
	})
	// The agent's reconciler would have written this; here the test does.
	if err := writeStateFrom(reader, stateFile); err != nil {
		t.Fatal(err)
	}

	podNS := map[string]*netnstest.NS{}
	for _, p := range []*corev1.Pod{web, legacy, other, late} {
		podNS[p.Name] = netnstest.New(t, "cpod")
	}
	plainBefore := podNS["other"].Ruleset(t)

	// ADD of an enrolled pod: rules in place and ztunnel holding its netns
	// before the runtime gets the result.
	res, err := env.add(web, podNS["web"].Path)
	if err != nil {
		t.Fatalf("ADD of an enrolled pod: %v", err)
	}
	if len(res.IPs) != 1 || !strings.HasPrefix(res.IPs[0].Address.IP.String(), "10.251.0.") {
		t.Fatalf("ADD did not pass the bridge's result through: %+v", res)
	}
	if err := env.backend.Check(podNS["web"].Path, rules.DefaultPodConfig()); err != nil {
		t.Fatalf("rules after ADD: %v", err)
	}
	got, ok := zt.get("uid-web")
	if !ok {
		t.Fatal("ztunnel was not given the pod")
	}
	if got.inode != inode(t, podNS["web"].Path) || got.msg.GetServiceAccount() != "web" || got.msg.GetNamespace() != "shop" {
		t.Fatalf("ztunnel got %+v (netns inode %d), want the pod's netns inode %d", got.msg, got.inode, inode(t, podNS["web"].Path))
	}
	// The fd was usable: the fake ztunnel listens on 15001 inside it, and the
	// pod's outbound connection lands there.
	gw := "10.251.0.1:7777"
	conn, err := podNS["web"].Dial(gw, 0)
	if err != nil {
		t.Fatalf("outbound dial from the enrolled pod: %v", err)
	}
	accepted, err := netnstest.AcceptOne(zt.listener("uid-web"))
	if err != nil {
		t.Fatalf("outbound connection did not reach the listener opened through the handed-over fd: %v", err)
	}
	if dst, _ := netnstest.OriginalDst(accepted); dst.String() != gw {
		t.Fatalf("original destination %s, want %s", dst, gw)
	}
	conn.Close()
	accepted.Close()
	// The host probe SNAT covers the pod.
	if out := node.Run(t, "iptables-save", "-t", "nat") + node.Run(t, "nft", "list", "ruleset"); !strings.Contains(out, res.IPs[0].Address.IP.String()) {
		t.Fatalf("no probe SNAT for %s on the node:\n%s", res.IPs[0].Address.IP, out)
	}

	if got := metricValue(metrics.EnrolledPods); got != 1 {
		t.Fatalf("ambient_cni_enrolled_pods = %v after one ADD", got)
	}
	if got := metricValue(metrics.RuleOperations.WithLabelValues(backendName, "install", "changed")); got != 1 {
		t.Fatalf("install operations = %v, want 1", got)
	}

	// Not enrolled (opted out; unlabeled namespace): untouched.
	for _, p := range []*corev1.Pod{legacy, other} {
		if _, err := env.add(p, podNS[p.Name].Path); err != nil {
			t.Fatalf("ADD of non-enrolled pod %s: %v", p.Name, err)
		}
		if err := env.backend.Check(podNS[p.Name].Path, rules.DefaultPodConfig()); !errors.Is(err, rules.ErrNotInstalled) {
			t.Fatalf("pod %s has capture rules: %v", p.Name, err)
		}
		if zt.Has(string(p.UID)) {
			t.Fatalf("ztunnel was given non-enrolled pod %s", p.Name)
		}
	}
	if got := podNS["other"].Ruleset(t); got != plainBefore {
		t.Fatalf("non-enrolled pod's ruleset changed:\n%s\nbefore:\n%s", got, plainBefore)
	}

	// DEL cleans up: rules, SNAT, ztunnel.
	if err := env.del(web, podNS["web"].Path); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if err := env.backend.Check(podNS["web"].Path, rules.DefaultPodConfig()); !errors.Is(err, rules.ErrNotInstalled) {
		t.Fatalf("rules after DEL: %v", err)
	}
	if zt.Has("uid-web") {
		t.Fatal("ztunnel still holds the pod after DEL")
	}
	if out := node.Run(t, "nft", "list", "ruleset"); strings.Contains(out, "ambientmesh") {
		t.Fatalf("probe SNAT left on the node after DEL:\n%s", out)
	}
	if got := metricValue(metrics.EnrolledPods); got != 0 {
		t.Fatalf("ambient_cni_enrolled_pods = %v after DEL", got)
	}

	// Agent down: an enrolled pod fails ADD with a clear message; others start.
	stopAgent()
	_, err = env.add(late, podNS["late"].Path)
	if err == nil || !strings.Contains(err.Error(), "unreachable") || !strings.Contains(err.Error(), "shop/late") {
		t.Fatalf("ADD of an enrolled pod with the agent down = %v, want a clear refusal", err)
	}
	_ = env.del(late, podNS["late"].Path) // the runtime cleans up the failed sandbox
	if err := env.del(other, podNS["other"].Path); err != nil {
		t.Fatalf("DEL with the agent down must succeed: %v", err)
	}
	if _, err := env.add(other, podNS["other"].Path); err != nil {
		t.Fatalf("ADD of a non-enrolled pod with the agent down: %v", err)
	}
	for _, p := range []*corev1.Pod{legacy, other} {
		_ = env.del(p, podNS[p.Name].Path)
	}
}

func writeStateFrom(r client.Reader, path string) error {
	state, err := BuildState(context.Background(), r)
	if err != nil {
		return err
	}
	return wire.WriteState(path, state)
}

// metricValue reads a gauge or counter.
func metricValue(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		return -1
	}
	if d.Gauge != nil {
		return d.Gauge.GetValue()
	}
	return d.Counter.GetValue()
}

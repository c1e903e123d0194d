// Package localmesh is the local mesh of real parts: a real kube-apiserver
// and etcd, the real cert-manager controller, the operator and the control
// plane as processes of the root network namespace (the control-plane
// node), and "nodes" that are network namespaces joined by an underlay,
// each running the real ztunnel and CNI node agent, and the pods of
// waypoints' Deployments (the real waypoint proxy) and of the tests, each
// in its own network namespace on a node. The harness plays the kubelet
// and the workload controllers (test/testenv/kubestandin, running pods
// through kubelet.go and sandbox.go; the tests' pods: pods.go) and the
// garbage collector (kubestandin for pods, gc.go for waypoints). `make
// demo` and `make test-e2e` both bring it up through Up; Down (or `make
// demo-down`) removes it from its state file.
package localmesh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ambientmesh/ambient-operator/internal/testwait"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/internal/meshscheme"
	"github.com/ambientmesh/ambient-operator/test/testenv"
	"github.com/ambientmesh/ambient-operator/test/testenv/kubestandin"
)

// MeshName is the AmbientMesh singleton's name.
const MeshName = "default"

// Options configure Up.
type Options struct {
	// RepoRoot is the checkout (bin/ and config/ are read from it).
	RepoRoot string
	// StateDir holds the state file, logs, certificates and each node's
	// and pod's files. It must not hold a running mesh.
	StateDir string
	// Nodes is the number of node namespaces (default 2).
	Nodes int
	// BinDir holds the component binaries (default <RepoRoot>/bin). The
	// cert-manager controller and kubectl always come from <RepoRoot>/bin.
	BinDir string
	// Log receives progress lines (nil: discarded).
	Log io.Writer
}

// Mesh is a running local mesh.
type Mesh struct {
	StateDir  string
	BinDir    string
	RepoRoot  string
	Namespace string
	Nodes     []*Node

	Config     *rest.Config
	Clientset  kubernetes.Interface
	Client     client.Client
	Kubeconfig string
	APIPort    int

	env        *envtest.Environment
	state      *State
	log        io.Writer
	kubelet    *kubelet
	standin    *kubestandin.StandIn[*container]
	forwarders []*Forwarder
	system     []*Proc // cert-manager, operator
	stopSync   context.CancelFunc
	syncDone   chan struct{}
	apps       *apps
	downOnce   sync.Once
}

func (m *Mesh) logf(format string, args ...any) {
	if m.log != nil {
		fmt.Fprintf(m.log, "  · "+format+"\n", args...)
	}
}

// debugf appends a line to the harness's own log.
func (m *Mesh) debugf(format string, args ...any) {
	f, err := os.OpenFile(filepath.Join(m.LogDir(), "kubelet.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "%s "+format+"\n", append([]any{time.Now().Format(time.RFC3339)}, args...)...)
}

// LogDir holds one log file per process.
func (m *Mesh) LogDir() string { return filepath.Join(m.StateDir, "logs") }

// RequiredBinaries are what `make tools build` must have produced.
func RequiredBinaries(root, binDir string) []string {
	out := []string{filepath.Join(root, "bin", "cert-manager-controller")}
	for _, b := range ComponentBinaries {
		out = append(out, filepath.Join(binDir, b))
	}
	return out
}

// ComponentBinaries are the cmd/ binaries the local mesh runs.
var ComponentBinaries = []string{"operator", "controlplane", "ztunnel", "cni-agent", "cni-plugin", "waypoint"}

// Up brings the whole local mesh up: apiserver, cert-manager, topology,
// operator, the AmbientMesh sample (kubectl apply), and the component
// processes; it returns when the AmbientMesh is Ready. On error it tears
// down what it started.
func Up(ctx context.Context, o Options) (m *Mesh, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the local mesh needs root: it creates network namespaces and iptables rules")
	}
	if o.BinDir == "" {
		o.BinDir = filepath.Join(o.RepoRoot, "bin")
	}
	for _, b := range RequiredBinaries(o.RepoRoot, o.BinDir) {
		if _, err := os.Stat(b); err != nil {
			return nil, fmt.Errorf("%s is missing: run `make tools build`", b)
		}
	}
	if o.Nodes == 0 {
		o.Nodes = 2
	}
	if _, err := LoadState(o.StateDir); err == nil {
		return nil, fmt.Errorf("%s holds a local mesh already: run `make demo-down` first", o.StateDir)
	}
	if err := os.MkdirAll(o.StateDir, 0o755); err != nil {
		return nil, err
	}
	m = &Mesh{StateDir: o.StateDir, BinDir: o.BinDir, RepoRoot: o.RepoRoot,
		Namespace: meshv1alpha1.DefaultNamespace, log: o.Log,
		state: &State{dir: o.StateDir, DriverPID: os.Getpid()}}
	m.kubelet = &kubelet{m: m, cpDir: filepath.Join(o.StateDir, "nodes", ControlPlaneNode)}
	if err := m.state.update(func(*State) {}); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			m.Down()
			m = nil
		}
	}()
	for i := 1; i <= o.Nodes; i++ {
		m.Nodes = append(m.Nodes, newNode(o.StateDir, i))
	}
	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"kube-apiserver and etcd", m.startAPIServer},
		{"cert-manager controller", m.startCertManager},
		{"nodes (network namespaces on an underlay)", m.startNodes},
		{"operator", m.startOperator},
		{"AmbientMesh sample (kubectl apply)", m.applySample},
		{"component pods (ztunnel, CNI agent, control plane) until the AmbientMesh is Ready", m.waitReady},
	}
	for _, s := range steps {
		start := time.Now()
		if err := s.fn(ctx); err != nil {
			return m, fmt.Errorf("%s: %w", s.name, err)
		}
		m.logf("%s: up in %s", s.name, time.Since(start).Round(100*time.Millisecond))
	}
	return m, nil
}

func (m *Mesh) startAPIServer(ctx context.Context) error {
	// envtest logs through controller-runtime's logger; its progress is ours to print.
	ctrllog.SetLogger(logr.Discard())
	// The experimental channel, so that HTTPRoute retries (the L7 story's
	// flaky backend) are kept by the API server.
	env, err := testenv.NewWithGatewayAPI(testenv.GatewayExperimental)
	if err != nil {
		return err
	}
	env.ControlPlane.Etcd = &envtest.Etcd{DataDir: filepath.Join(m.StateDir, "etcd")}
	env.ControlPlane.APIServer = &envtest.APIServer{CertDir: filepath.Join(m.StateDir, "apiserver")}
	for _, d := range []string{env.ControlPlane.Etcd.DataDir, env.ControlPlane.APIServer.CertDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	m.env = env
	cfg, err := env.Start()
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = 100, 200
	m.Config = cfg
	if m.Clientset, err = kubernetes.NewForConfig(cfg); err != nil {
		return err
	}
	if m.Client, err = client.New(cfg, client.Options{Scheme: meshscheme.New()}); err != nil {
		return err
	}
	m.Kubeconfig = filepath.Join(m.StateDir, "kubeconfig")
	if err := testenv.WriteKubeconfig(cfg, m.Kubeconfig); err != nil {
		return err
	}
	u := env.ControlPlane.APIServer.SecureServing.Port
	if m.APIPort, err = strconv.Atoi(u); err != nil {
		return fmt.Errorf("apiserver port %q: %w", u, err)
	}
	return m.state.update(func(s *State) { s.Kubeconfig = m.Kubeconfig })
}

// writeTokenKubeconfig writes a kubeconfig for the apiserver with a bearer
// token (a component's service account).
func (m *Mesh) writeTokenKubeconfig(path, token string) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["local"] = &clientcmdapi.Cluster{Server: "https://127.0.0.1:" + strconv.Itoa(m.APIPort), CertificateAuthorityData: m.Config.CAData}
	kc.AuthInfos["local"] = &clientcmdapi.AuthInfo{Token: token}
	kc.Contexts["local"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: "local"}
	kc.CurrentContext = "local"
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return clientcmd.WriteToFile(*kc, path)
}

func (m *Mesh) startCertManager(ctx context.Context) error {
	bin, err := testenv.CertManagerBinary()
	if err != nil {
		return err
	}
	p, err := startProc(m.state, m.LogDir(), "cert-manager-controller", "", bin,
		[]string{"--kubeconfig=" + m.Kubeconfig, "--v=2"}, nil)
	if err != nil {
		return err
	}
	m.system = append(m.system, p)
	return nil
}

// startNodes builds the topology, registers the Node objects and starts
// the port forwarders to the apiserver and the control plane.
func (m *Mesh) startNodes(ctx context.Context) error {
	if err := buildTopology(m.state, m.Nodes); err != nil {
		return err
	}
	for _, n := range m.Nodes {
		if err := m.writePrimaryCNIConfig(n); err != nil {
			return err
		}
		f, err := m.reachControlPlane(n.Name)
		if err != nil {
			return err
		}
		m.forwarders = append(m.forwarders, f)
	}
	nodes := []string{ControlPlaneNode}
	for _, n := range m.Nodes {
		nodes = append(nodes, n.Name)
	}
	for _, name := range nodes {
		if err := m.createNode(ctx, name); err != nil {
			return err
		}
	}
	return m.state.update(func(s *State) { s.Nodes = nodes[1:] })
}

func (m *Mesh) createNode(ctx context.Context, name string) error {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: nodeLabels(name)}}
	created, err := m.Clientset.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	created.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue,
		Reason: "KubeletReady", LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
	_, err = m.Clientset.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{})
	return err
}

// writePrimaryCNIConfig is the node's primary network: Debian's bridge +
// host-local, with the IPAM state in the node's own directory. The CNI agent
// chains our plugin into it.
func (m *Mesh) writePrimaryCNIConfig(n *Node) error {
	confDir := n.HostPath(meshv1alpha1.DefaultCNIConfDir)
	for _, d := range []string{confDir, n.HostPath(meshv1alpha1.DefaultCNIBinDir)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	conf := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "podnet",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cbr0",
      "isGateway": true,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": %q, "gateway": %q}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": %q
      }
    }
  ]
}
`, n.PodCIDR, n.Gateway, n.HostPath("/var/lib/cni/networks"))
	return os.WriteFile(filepath.Join(confDir, "10-podnet.conflist"), []byte(conf), 0o644)
}

func (m *Mesh) startOperator(ctx context.Context) error {
	p, err := startProc(m.state, m.LogDir(), "operator", "", filepath.Join(m.BinDir, "operator"), []string{
		"--metrics-bind-address=0", "--health-probe-bind-address=127.0.0.1:18081",
		"--enable-webhooks=false", "--leader-elect=false",
	}, []string{"KUBECONFIG=" + m.Kubeconfig})
	if err != nil {
		return err
	}
	m.system = append(m.system, p)
	return nil
}

// Kubectl runs the kubectl `make tools` built against the local apiserver.
func (m *Mesh) Kubectl(args ...string) (string, error) {
	kubectl, err := testenv.KubectlPath()
	if err != nil {
		return "", err
	}
	out, err := exec.Command(kubectl, append([]string{"--kubeconfig=" + m.Kubeconfig}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// Apply runs `kubectl apply -f -` with manifest on its standard input.
func (m *Mesh) Apply(manifest string) (string, error) {
	kubectl, err := testenv.KubectlPath()
	if err != nil {
		return "", err
	}
	cmd := exec.Command(kubectl, "--kubeconfig="+m.Kubeconfig, "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(manifest)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl apply: %w: %s", err, out)
	}
	return string(out), nil
}

func (m *Mesh) applySample(ctx context.Context) error {
	_, err := m.Kubectl("apply", "-f", filepath.Join(m.RepoRoot, "config", "samples", "mesh_v1alpha1_ambientmesh.yaml"))
	if err != nil {
		return err
	}
	// The stand-in needs the API client and the nodes, which exist by now.
	m.standin = m.newStandIn()
	sctx, cancel := context.WithCancel(context.Background())
	m.stopSync, m.syncDone = cancel, make(chan struct{})
	go m.syncLoop(sctx)
	return nil
}

// syncLoop runs the kubelet stand-in until stopped; errors are logged to
// the state dir (they are expected while cert-manager issues secrets).
func (m *Mesh) syncLoop(ctx context.Context) {
	defer close(m.syncDone)
	logf, _ := os.OpenFile(filepath.Join(m.LogDir(), "kubelet.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	defer logf.Close()
	last := ""
	for ctx.Err() == nil {
		if err := m.syncWorkloads(ctx); err != nil && ctx.Err() == nil && err.Error() != last {
			last = err.Error()
			fmt.Fprintf(logf, "%s %v\n", time.Now().Format(time.RFC3339), err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// AmbientMesh reads the mesh.
func (m *Mesh) AmbientMesh(ctx context.Context) (*meshv1alpha1.AmbientMesh, error) {
	mesh := &meshv1alpha1.AmbientMesh{}
	err := m.Client.Get(ctx, client.ObjectKey{Name: MeshName}, mesh)
	return mesh, err
}

// MeshReady reports whether the AmbientMesh has Ready=True for its generation.
func MeshReady(mesh *meshv1alpha1.AmbientMesh) bool {
	for _, c := range mesh.Status.Conditions {
		if c.Type == "Ready" {
			return c.Status == metav1.ConditionTrue && c.ObservedGeneration == mesh.Generation
		}
	}
	return false
}

func (m *Mesh) waitReady(ctx context.Context) error {
	// The limit bounds each request as well as the wait.
	ctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	err := testwait.UntilContext(ctx, 4*time.Minute, func() error {
		mesh, err := m.AmbientMesh(ctx)
		if err != nil {
			return err
		}
		if !MeshReady(mesh) {
			return fmt.Errorf("generation %d: %s", mesh.Generation, conditions(mesh))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("the AmbientMesh did not become Ready: %w; logs in %s", err, m.LogDir())
	}
	return nil
}

// conditions lists the mesh's status conditions for a message.
func conditions(mesh *meshv1alpha1.AmbientMesh) string {
	if len(mesh.Status.Conditions) == 0 {
		return "no status"
	}
	var out []string
	for _, c := range mesh.Status.Conditions {
		out = append(out, fmt.Sprintf("%s=%s %s: %s", c.Type, c.Status, c.Reason, c.Message))
	}
	return strings.Join(out, "; ")
}

// Down stops everything Up started and removes the state (logs are kept
// in <state dir>/logs only while the state dir exists).
func (m *Mesh) Down() {
	m.downOnce.Do(func() {
		if m.stopSync != nil {
			m.stopSync()
			<-m.syncDone
		}
		if m.apps != nil {
			m.apps.close()
		}
		if m.standin != nil {
			m.stopAll(5 * time.Second)
		}
		for i := len(m.system) - 1; i >= 0; i-- {
			m.system[i].Stop(10 * time.Second)
		}
		for _, f := range m.forwarders {
			_ = f.Close()
		}
		if m.env != nil {
			_ = m.env.Stop()
		}
		if err := Down(m.StateDir, 10*time.Second); err != nil {
			m.logf("teardown: %v", err)
		}
	})
}

// ignoreExists treats AlreadyExists as success.
func ignoreExists(err error) error {
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

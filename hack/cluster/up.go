package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// upOptions are the flags of `cluster up`.
type upOptions struct {
	stateDir  string
	nodes     int
	k8sBinDir string // etcd and the Kubernetes binaries (bin/k8s/<version>-<os>-<arch>)
	pause     string // the pause binary (hack/cluster/pause)
	coredns   string // the coredns binary (hack/coredns, hack/tools.sh coredns)
	proxyMode string // kube-proxy mode: iptables or nftables
	timeout   time.Duration
}

// cluster is the cluster of a state directory: where its files and nodes
// are, and, while `up` runs, its settings and an admin client.
type cluster struct {
	dir       string
	nodes     []Node
	k8sBinDir string
	settings  hostSettings
	proxyMode string
	pki       pki
	state     *state
	kube      kubernetes.Interface
	started   time.Time
}

func (c *cluster) logf(format string, args ...any) {
	fmt.Printf("[cluster %5.1fs] %s\n", time.Since(c.started).Seconds(), fmt.Sprintf(format, args...))
}

func (c *cluster) bin(name string) string { return filepath.Join(c.k8sBinDir, name) }

func newCluster(dir string, nodes int) *cluster {
	c := &cluster{dir: dir, started: time.Now(), state: &state{dir: dir}}
	for i := 1; i <= nodes; i++ {
		c.nodes = append(c.nodes, newNode(dir, i))
	}
	c.pki = pki{dir: filepath.Join(dir, "pki"), kubeconfigDir: filepath.Join(dir, "kubeconfig")}
	return c
}

// requiredCommands are run by this program or by the cluster's processes.
var requiredCommands = []string{"ip", "nsenter", "unshare", "mount", "iptables", "nft", "containerd", "runc", "ctr", "containerd-shim-runc-v2"}

// requiredCNIPlugins come from Debian's containernetworking-plugins.
var requiredCNIPlugins = []string{"bridge", "host-local", "loopback", "portmap"}

const debianCNIDir = "/usr/lib/cni"

func up(ctx context.Context, opts upOptions) error {
	if os.Geteuid() != 0 {
		return errors.New("cluster up needs root: it creates network and mount namespaces, cgroups and a bridge")
	}
	if opts.nodes < 1 || opts.nodes > 9 {
		return fmt.Errorf("--nodes %d: between 1 and 9", opts.nodes)
	}
	if opts.proxyMode != "iptables" && opts.proxyMode != "nftables" {
		return fmt.Errorf("--proxy-mode %q: iptables or nftables", opts.proxyMode)
	}
	if _, err := os.Stat(statePath(opts.stateDir)); err == nil {
		return errAlreadyUp
	}
	c := newCluster(opts.stateDir, opts.nodes)
	c.k8sBinDir, c.proxyMode = opts.k8sBinDir, opts.proxyMode
	if err := c.preflight(opts); err != nil {
		return err
	}
	facts, err := probeHost()
	if err != nil {
		return err
	}
	c.settings = settingsFor(facts)
	c.logf("host: %+v -> %+v", facts, c.settings)

	ctx, cancel := context.WithTimeout(ctx, opts.timeout)
	defer cancel()
	for _, dir := range []string{c.dir, filepath.Join(c.dir, "logs"), filepath.Join(c.dir, "images")} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	if err := c.state.update(func(s *state) {
		for _, n := range c.nodes {
			s.Nodes = append(s.Nodes, n.Name)
		}
	}); err != nil {
		return err
	}
	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"PKI and kubeconfigs", func(context.Context) error { return writePKI(c.pki, c.nodes, time.Now()) }},
		{"bridge and node network namespaces", func(context.Context) error { return c.setupNetwork() }},
		{"cgroups", func(context.Context) error { return c.setupCgroups() }},
		{"node mount namespaces", func(context.Context) error { return c.setupMountNamespaces() }},
		{"control plane", c.startControlPlane},
		{"pause image", func(context.Context) error { return c.writePauseImage(opts.pause) }},
		{"nodes", c.startNodes},
		{"nodes Ready", c.waitNodesReady},
		{"cluster DNS (CoreDNS) Ready", func(ctx context.Context) error { return c.startDNS(ctx, opts.coredns) }},
	}
	for _, step := range steps {
		if err := step.fn(ctx); err != nil {
			return fmt.Errorf("%s: %w (logs in %s; `make cluster-down` removes what was created)", step.name, err, filepath.Join(c.dir, "logs"))
		}
		c.logf("%s: done", step.name)
	}
	// The kubelets have set their kernel settings by now; the host is shared
	// with other work, so it gets its own values back (docs/cluster.md).
	if err := restoreSysctls(c.state); err != nil {
		return err
	}
	c.logf("cluster up: %d node(s); export KUBECONFIG=%s", len(c.nodes), c.pki.Kubeconfig("admin"))
	return nil
}

// preflight checks every binary before anything is created.
func (c *cluster) preflight(opts upOptions) error {
	var missing []string
	for _, name := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl"} {
		if _, err := os.Stat(c.bin(name)); err != nil {
			missing = append(missing, c.bin(name)+" (hack/tools.sh kubernetes etcd kubernetes-cluster)")
		}
	}
	for _, name := range requiredCommands {
		if _, err := exec.LookPath(name); err != nil {
			missing = append(missing, name+" (Debian packages: hack/tools.sh apt)")
		}
	}
	for _, name := range requiredCNIPlugins {
		if _, err := os.Stat(filepath.Join(debianCNIDir, name)); err != nil {
			missing = append(missing, filepath.Join(debianCNIDir, name)+" (Debian package containernetworking-plugins)")
		}
	}
	// sun_path holds 107 bytes and a NUL; containerd adds ".ttrpc".
	if sock := c.nodes[0].ContainerdSocket() + ".ttrpc"; len(sock) > 107 {
		missing = append(missing, fmt.Sprintf("a shorter --state-dir (socket path %s is longer than 107 bytes)", sock))
	}
	if _, err := os.Stat(opts.pause); err != nil {
		missing = append(missing, opts.pause+" (go build ./hack/cluster/pause)")
	}
	if _, err := os.Stat(opts.coredns); err != nil {
		missing = append(missing, opts.coredns+" (hack/tools.sh coredns)")
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing: %v", missing)
	}
	return nil
}

func (c *cluster) startControlPlane(ctx context.Context) error {
	if err := c.start("etcd", "", c.bin("etcd"), append([]string{c.bin("etcd")}, etcdArgs(filepath.Join(c.dir, "etcd"))...)); err != nil {
		return err
	}
	err := poll(ctx, "etcd healthy", func() (bool, error) {
		if err := c.checkRunning("etcd"); err != nil {
			return false, err
		}
		resp, err := http.Get(etcdClientURL + "/health")
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		return err
	}
	if err := c.start("kube-apiserver", "", c.bin("kube-apiserver"), append([]string{c.bin("kube-apiserver")}, apiServerArgs(c.pki)...)); err != nil {
		return err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", c.pki.Kubeconfig("admin"))
	if err != nil {
		return err
	}
	if c.kube, err = kubernetes.NewForConfig(cfg); err != nil {
		return err
	}
	err = poll(ctx, "apiserver ready", func() (bool, error) {
		if err := c.checkRunning("kube-apiserver"); err != nil {
			return false, err
		}
		_, err := c.kube.CoreV1().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err == nil, nil
	})
	if err != nil {
		return err
	}
	if err := c.start("kube-controller-manager", "", c.bin("kube-controller-manager"),
		append([]string{c.bin("kube-controller-manager")}, controllerManagerArgs(c.pki)...)); err != nil {
		return err
	}
	return c.start("kube-scheduler", "", c.bin("kube-scheduler"), append([]string{c.bin("kube-scheduler")}, schedulerArgs(c.pki)...))
}

func (c *cluster) pauseImagePath() string { return filepath.Join(c.dir, "images", "pause.tar") }

func (c *cluster) writePauseImage(binary string) error {
	return writeImageFile(c.pauseImagePath(), imageSpec{Ref: pauseImage, BinaryPath: binary, Entrypoint: "/pause", User: "65535:65535"})
}

func (c *cluster) startNodes(ctx context.Context) error {
	if err := c.saveSysctls(); err != nil {
		return err
	}
	for _, n := range c.nodes {
		if err := c.startNode(ctx, n); err != nil {
			return fmt.Errorf("%s: %w", n.Name, err)
		}
	}
	return nil
}

// startNode writes a node's configuration and starts its containerd
// (with the pause image imported), kubelet and kube-proxy.
func (c *cluster) startNode(ctx context.Context, n Node) error {
	if err := copyDir(debianCNIDir, n.Own("/opt/cni/bin")); err != nil {
		return err
	}
	conflist, err := cniConfList(n)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(n.Own("/etc/cni/net.d"), "10-"+podNetworkName+".conflist"), conflist, 0o644); err != nil {
		return err
	}
	containerdConf := filepath.Join(n.Dir, "containerd.toml")
	if err := os.WriteFile(containerdConf, []byte(containerdConfig(n, c.settings)), 0o644); err != nil {
		return err
	}
	containerd, _ := exec.LookPath("containerd")
	if err := c.start(n.Name+"-containerd", n.Name, containerd, inNode(c.dir, n, containerd, "--config", containerdConf)); err != nil {
		return err
	}
	err = poll(ctx, n.Name+" containerd serving", func() (bool, error) {
		if err := c.checkRunning(n.Name + "-containerd"); err != nil {
			return false, err
		}
		conn, err := net.Dial("unix", n.ContainerdSocket())
		if err != nil {
			return false, nil
		}
		conn.Close()
		return true, nil
	})
	if err != nil {
		return err
	}
	if err := importImage(n, c.pauseImagePath()); err != nil {
		return err
	}

	kubeletConf, err := kubeletConfig(n, c.settings, c.pki)
	if err != nil {
		return err
	}
	kubeletConfFile := filepath.Join(n.Dir, "kubelet.yaml")
	if err := os.WriteFile(kubeletConfFile, kubeletConf, 0o644); err != nil {
		return err
	}
	if err := c.start(n.Name+"-kubelet", n.Name, c.bin("kubelet"),
		inNode(c.dir, n, append([]string{c.bin("kubelet")}, kubeletArgs(n, kubeletConfFile, c.pki)...)...)); err != nil {
		return err
	}

	proxyConf, err := kubeProxyConfig(n, c.settings, c.proxyMode, c.pki.Kubeconfig("kube-proxy"))
	if err != nil {
		return err
	}
	proxyConfFile := filepath.Join(n.Dir, "kube-proxy.yaml")
	if err := os.WriteFile(proxyConfFile, proxyConf, 0o644); err != nil {
		return err
	}
	return c.start(n.Name+"-kube-proxy", n.Name, c.bin("kube-proxy"),
		inNode(c.dir, n, c.bin("kube-proxy"), "--config="+proxyConfFile))
}

// importImage imports an image tarball (writeImage's) into a node's
// containerd, in the namespace the CRI plugin (the kubelet's view) uses.
func importImage(n Node, tarball string) error {
	return run("ctr", "--address", n.ContainerdSocket(), "--namespace", "k8s.io", "images", "import", tarball)
}

// waitNodesReady waits for every node to register, gives it its pod CIDR
// (static, one per node: the controller-manager does not allocate them),
// and waits for it to be Ready.
func (c *cluster) waitNodesReady(ctx context.Context) error {
	for _, n := range c.nodes {
		err := poll(ctx, n.Name+" Ready", func() (bool, error) {
			for _, proc := range c.state.procsOf(n.Name) {
				if err := c.checkRunning(proc.Name); err != nil {
					return false, err
				}
			}
			node, err := c.kube.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			if node.Spec.PodCIDR == "" {
				patch := fmt.Sprintf(`{"spec":{"podCIDR":%q,"podCIDRs":[%q]}}`, n.PodCIDR, n.PodCIDR)
				if _, err := c.kube.CoreV1().Nodes().Patch(ctx, n.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
					return false, fmt.Errorf("set pod CIDR: %w", err)
				}
			}
			for _, cond := range node.Status.Conditions {
				if cond.Type == corev1.NodeReady {
					return cond.Status == corev1.ConditionTrue, nil
				}
			}
			return false, nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// poll calls check every 200ms until it returns true or an error, or ctx ends.
func poll(ctx context.Context, what string, check func() (bool, error)) error {
	ticker := time.NewTicker(200 * time.Millisecond)
	defer ticker.Stop()
	for {
		done, err := check()
		if err != nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-ticker.C:
		}
	}
}

// copyDir copies the regular files of src (the CNI plugins) into dst.
func copyDir(src, dst string) error {
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), data, fs.FileMode(0o755)); err != nil {
			return err
		}
	}
	return nil
}

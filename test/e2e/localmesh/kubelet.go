package localmesh

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controllers/ambientmesh/manifests"
	"github.com/ambientmesh/ambient-operator/internal/testwait"
	"github.com/ambientmesh/ambient-operator/test/testenv/kubestandin"
)

// The local mesh's container runtime for the kubelet stand-in
// (test/testenv/kubestandin, shared with the lifecycle suite). The stand-in
// creates the Pod objects the workload controllers would for every
// Deployment and DaemonSet the mesh runs, rolls them, finishes their
// deletions and reports their status; here a pod's container is the
// component binary, started with exactly the args and env the pod spec
// declares, and probed for readiness.
//
// Where pods run: the mesh's own Deployment (the control plane) on the
// control-plane node, in the root netns; its DaemonSets on every node, in
// the node's netns (they are host-network pods). Waypoints' Deployments
// (label ambientmesh.dev/waypoint, any namespace) are ordinary pods: each
// replica is placed on a node that its nodeSelector admits and gets its own
// netns wired by the node's CNI chain, as an app pod does (the CNI agent
// enrolls it or not per its labels). Nothing else differs: the pod runs
// what its template says.
//
// Paths: a container sees its volumes at its mountPaths; here every volume
// is a directory under the state dir (hostPath volumes: the node's own
// directory), and each mountPath in the args, and in the mesh config
// file the pod mounts, is replaced by that directory.

// imagePaths maps files that the component images carry to the binaries
// `make build` writes. The container's own binary is bin/<container name>
// (ztunnel, cni-agent, controlplane, waypoint).
var imagePaths = map[string]string{manifests.CNIPluginBinary: "cni-plugin"}

// container is what the runtime keeps of a pod: its (single) container's
// process and where it runs.
type container struct {
	node *Node // nil: the control-plane node (root netns)
	proc *Proc
	// sandbox is the pod's own netns (nil: it runs in its node's netns, or
	// in the root netns). It outlives container restarts.
	sandbox *podSandbox
	// configMaps are the pod's ConfigMap volumes, refreshed while it runs
	// as a kubelet does (components may re-read them).
	configMaps []configMapVolume
}

// componentPod is a pod of the mesh's or a waypoint's workload.
type componentPod = kubestandin.Pod[*container]

type configMapVolume struct {
	name  string
	items []corev1.KeyToPath
	dir   string
	paths pathMap
}

// kubelet is the stand-in's Runtime.
type kubelet struct {
	m     *Mesh
	cpDir string
}

// newStandIn runs the mesh's workloads (in its namespace) and the
// waypoints' (in any) on the mesh's nodes.
func (m *Mesh) newStandIn() *kubestandin.StandIn[*container] {
	o := kubestandin.Options{
		Client: m.Client,
		Selects: func(w client.Object) bool {
			if _, ok := w.GetLabels()[meshv1alpha1.LabelWaypoint]; ok {
				return true
			}
			return w.GetNamespace() == m.Namespace && manifests.MeshSelector(MeshName).Matches(labels.Set(w.GetLabels()))
		},
		// The control plane listens in the root netns, where the nodes'
		// forwarders reach it.
		HostNetworkOn: func(d *appsv1.Deployment) string {
			if _, ok := d.Labels[meshv1alpha1.LabelWaypoint]; ok {
				return ""
			}
			return ControlPlaneNode
		},
	}
	for _, n := range m.Nodes {
		o.Nodes = append(o.Nodes, kubestandin.Node{Name: n.Name, Labels: nodeLabels(n.Name)})
	}
	return kubestandin.New[*container](o, m.kubelet)
}

// Sandbox places the pod: a waypoint's pod gets its own netns through
// its node's CNI chain; the others run in their node's netns.
func (k *kubelet) Sandbox(ctx context.Context, p *componentPod) (string, string, error) {
	pod := p.Object
	if p.State == nil {
		p.State = &container{node: k.m.Node(pod.Spec.NodeName)}
		if p.Kind == kubestandin.KindDeployment && p.State.node != nil {
			p.State.sandbox = &podSandbox{Namespace: pod.Namespace, Name: pod.Name, UID: string(pod.UID), Node: p.State.node,
				Netns: podNetnsName(pod.Namespace, pod.Name)}
		}
	}
	hostIP := "127.0.0.1"
	if n := p.State.node; n != nil {
		hostIP = n.UnderlayIP
	}
	if p.State.sandbox == nil {
		return hostIP, hostIP, nil
	}
	if err := k.m.addSandbox(ctx, p.State.sandbox); err != nil {
		return "", "", err
	}
	return p.State.sandbox.IP, hostIP, nil
}

// Run starts the container when it does not run, else refreshes its
// ConfigMap volumes, and probes it.
func (k *kubelet) Run(ctx context.Context, p *componentPod) (bool, error) {
	if c := p.State; c.proc == nil || c.proc.Exited() {
		if err := k.start(ctx, p); err != nil {
			return false, err
		}
	} else if err := k.refreshConfigMaps(ctx, p); err != nil {
		return false, err
	}
	return k.probe(p), nil
}

// Stop stops the container within grace and removes the pod's netns.
func (k *kubelet) Stop(ctx context.Context, p *componentPod, _ kubestandin.StopReason, grace time.Duration) error {
	c := p.State
	if c == nil {
		return nil
	}
	if c.proc != nil {
		c.proc.Stop(grace)
	}
	if c.sandbox != nil {
		return k.m.removeSandbox(ctx, c.sandbox)
	}
	return nil
}

// start fills the pod's volumes and starts its (single) container.
func (k *kubelet) start(ctx context.Context, p *componentPod) error {
	pod := p.Object
	if len(pod.Spec.Containers) != 1 {
		return fmt.Errorf("expected one container, found %d", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]
	dir := filepath.Join(k.m.StateDir, "pods", pod.Namespace, pod.Name)
	paths, err := k.volumes(ctx, p, dir, c)
	if err != nil {
		return err
	}
	env, err := k.env(ctx, p, dir, c)
	if err != nil {
		return err
	}
	values := map[string]string{}
	for _, e := range env {
		name, value, _ := strings.Cut(e, "=")
		values[name] = value
	}
	args := make([]string, 0, len(c.Args))
	for _, a := range c.Args {
		args = append(args, paths.translate(expandVars(a, values)))
	}
	bin := filepath.Join(k.m.BinDir, c.Name)
	netns := ""
	switch {
	case p.State.sandbox != nil:
		netns = p.State.sandbox.Netns
	case p.State.node != nil:
		netns = p.State.node.Name
	}
	k.m.debugf("%s: paths %v", pod.Name, paths)
	proc, err := startProc(k.m.state, k.m.LogDir(), pod.Name, netns, bin, args, env)
	if err != nil {
		return err
	}
	p.State.proc, p.Ready = proc, false
	k.m.logf("started %s (pid %d) on %s", pod.Name, proc.PID(), pod.Spec.NodeName)
	return nil
}

// pathMap maps container paths to directories of the state dir.
type pathMap [][2]string

func (p pathMap) translate(s string) string {
	// One pass, longest container path first (/a/b wins over /a), so a
	// replacement is never translated again.
	pairs := make([]string, 0, 2*len(p))
	for _, m := range p {
		pairs = append(pairs, m[0], m[1])
	}
	return strings.NewReplacer(pairs...).Replace(s)
}

func (p *pathMap) add(container, host string) {
	*p = append(*p, [2]string{container, host})
	sort.SliceStable(*p, func(i, j int) bool { return len((*p)[i][0]) > len((*p)[j][0]) })
}

var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// expandVars expands $(NAME) the way the kubelet does for container args.
func expandVars(s string, values map[string]string) string {
	return varRef.ReplaceAllStringFunc(s, func(ref string) string {
		if v, ok := values[ref[2:len(ref)-1]]; ok {
			return v
		}
		return ref
	})
}

// volumes writes each mounted volume into dir and returns the path map.
func (k *kubelet) volumes(ctx context.Context, p *componentPod, dir string, c corev1.Container) (pathMap, error) {
	var paths pathMap
	for image, bin := range imagePaths {
		paths.add(image, filepath.Join(k.m.BinDir, bin))
	}
	byName := map[string]corev1.Volume{}
	for _, v := range p.Object.Spec.Volumes {
		byName[v.Name] = v
	}
	var configFiles []string
	for _, mount := range c.VolumeMounts {
		v, ok := byName[mount.Name]
		if !ok {
			return nil, fmt.Errorf("volume %s not in the pod", mount.Name)
		}
		src := filepath.Join(dir, "volumes", v.Name)
		switch {
		case v.HostPath != nil:
			src = k.hostPath(p.State.node, v.HostPath.Path)
			if err := os.MkdirAll(src, 0o755); err != nil {
				return nil, err
			}
		case v.ConfigMap != nil:
			files, err := k.configMapFiles(ctx, p.Object.Namespace, v.ConfigMap.Name, v.ConfigMap.Items)
			if err != nil {
				return nil, err
			}
			if err := writeFiles(src, files); err != nil {
				return nil, err
			}
			for name := range files {
				configFiles = append(configFiles, filepath.Join(src, name))
			}
		case v.Secret != nil:
			files, err := k.secretFiles(ctx, p.Object.Namespace, v.Secret.SecretName, v.Secret.Items)
			if err != nil {
				return nil, err
			}
			if err := writeFiles(src, files); err != nil {
				return nil, err
			}
		case v.Projected != nil:
			files, err := k.projectedFiles(ctx, p.Object, v.Projected)
			if err != nil {
				return nil, err
			}
			if err := writeFiles(src, files); err != nil {
				return nil, err
			}
		case v.EmptyDir != nil:
			if err := os.MkdirAll(src, 0o755); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("volume %s: unsupported source", v.Name)
		}
		paths.add(mount.MountPath, src)
	}
	// Files the pod mounts name container paths too (the mesh config's
	// hand-off socket, CNI dirs): rewrite them the same way.
	for _, f := range configFiles {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(f, []byte(paths.translate(string(data))), 0o644); err != nil {
			return nil, err
		}
	}
	p.State.configMaps = nil
	for _, v := range p.Object.Spec.Volumes {
		if v.ConfigMap != nil {
			p.State.configMaps = append(p.State.configMaps, configMapVolume{name: v.ConfigMap.Name, items: v.ConfigMap.Items,
				dir: filepath.Join(dir, "volumes", v.Name), paths: paths})
		}
	}
	return paths, nil
}

// refreshConfigMaps rewrites a running pod's ConfigMap volumes when the
// ConfigMaps changed, as the kubelet's volume sync does.
func (k *kubelet) refreshConfigMaps(ctx context.Context, p *componentPod) error {
	for _, v := range p.State.configMaps {
		files, err := k.configMapFiles(ctx, p.Object.Namespace, v.name, v.items)
		if err != nil {
			continue // a deleted ConfigMap leaves the last content, like the kubelet
		}
		for name, data := range files {
			path := filepath.Join(v.dir, name)
			want := []byte(v.paths.translate(string(data)))
			if cur, err := os.ReadFile(path); err == nil && string(cur) == string(want) {
				continue
			}
			if err := os.WriteFile(path, want, 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}

func (k *kubelet) hostPath(node *Node, p string) string {
	if node == nil {
		return filepath.Join(k.cpDir, p)
	}
	return node.HostPath(p)
}

func writeFiles(dir string, files map[string][]byte) error {
	for name, data := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

func pick[T any](data map[string]T, items []corev1.KeyToPath, conv func(T) []byte) (map[string][]byte, error) {
	out := map[string][]byte{}
	if len(items) == 0 {
		for key, v := range data {
			out[key] = conv(v)
		}
		return out, nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			return nil, fmt.Errorf("key %s missing", it.Key)
		}
		out[it.Path] = conv(v)
	}
	return out, nil
}

func (k *kubelet) configMapFiles(ctx context.Context, ns, name string, items []corev1.KeyToPath) (map[string][]byte, error) {
	cm, err := k.m.Clientset.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("configmap %s: %w", name, err)
	}
	return pick(cm.Data, items, func(s string) []byte { return []byte(s) })
}

func (k *kubelet) secretFiles(ctx context.Context, ns, name string, items []corev1.KeyToPath) (map[string][]byte, error) {
	s, err := k.m.Clientset.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("secret %s (waiting for cert-manager?): %w", name, err)
	}
	return pick(s.Data, items, func(b []byte) []byte { return b })
}

// projectedFiles fills a projected volume: service-account tokens through
// the TokenRequest API, bound to the pod (the CA checks the pod's node).
func (k *kubelet) projectedFiles(ctx context.Context, pod *corev1.Pod, v *corev1.ProjectedVolumeSource) (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, src := range v.Sources {
		switch {
		case src.ServiceAccountToken != nil:
			t := src.ServiceAccountToken
			tok, err := k.m.podToken(ctx, pod, t.Audience, ptr.Deref(t.ExpirationSeconds, 3600))
			if err != nil {
				return nil, err
			}
			out[t.Path] = []byte(tok)
		case src.ConfigMap != nil:
			files, err := k.configMapFiles(ctx, pod.Namespace, src.ConfigMap.Name, src.ConfigMap.Items)
			if err != nil && !ptr.Deref(src.ConfigMap.Optional, false) {
				return nil, err
			}
			for n, d := range files {
				out[n] = d
			}
		case src.Secret != nil:
			files, err := k.secretFiles(ctx, pod.Namespace, src.Secret.Name, src.Secret.Items)
			if err != nil && !ptr.Deref(src.Secret.Optional, false) {
				return nil, err
			}
			for n, d := range files {
				out[n] = d
			}
		}
	}
	return out, nil
}

// podToken asks the TokenRequest API for a token of the pod's service
// account, bound to the pod.
func (m *Mesh) podToken(ctx context.Context, pod *corev1.Pod, audience string, seconds int64) (string, error) {
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	var auds []string
	if audience != "" {
		auds = []string{audience}
	}
	tr, err := m.Clientset.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			Audiences:         auds,
			ExpirationSeconds: ptr.To(seconds),
			BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token for %s/%s: %w", pod.Namespace, sa, err)
	}
	return tr.Status.Token, nil
}

// env resolves the container's env (values and downward API) and adds
// KUBECONFIG: a kubeconfig with the pod's service-account token, which
// stands in for the in-cluster config (there is no cluster network); not
// for a pod whose spec turns the token's automount off.
func (k *kubelet) env(ctx context.Context, p *componentPod, dir string, c corev1.Container) ([]string, error) {
	pod := p.Object
	var env []string
	for _, e := range c.Env {
		value := e.Value
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			switch e.ValueFrom.FieldRef.FieldPath {
			case "metadata.name":
				value = pod.Name
			case "metadata.namespace":
				value = pod.Namespace
			case "spec.nodeName":
				value = pod.Spec.NodeName
			case "spec.serviceAccountName":
				value = pod.Spec.ServiceAccountName
			case "status.podIP":
				value = p.IP
			default:
				return nil, fmt.Errorf("env %s: field %s not supported", e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
		}
		env = append(env, e.Name+"="+value)
	}
	if !ptr.Deref(pod.Spec.AutomountServiceAccountToken, true) {
		return env, nil
	}
	token, err := k.m.podToken(ctx, pod, "", 24*3600)
	if err != nil {
		return nil, err
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := k.m.writeTokenKubeconfig(kubeconfig, token); err != nil {
		return nil, err
	}
	return append(env, "KUBECONFIG="+kubeconfig), nil
}

// netnsPath is where the pod's container runs ("": the root netns).
func (c *container) netnsPath() string {
	switch {
	case c == nil:
		return ""
	case c.sandbox != nil:
		return c.sandbox.NetnsPath()
	case c.node != nil:
		return c.node.NetnsPath()
	}
	return ""
}

// probe runs the container's HTTP readiness probe (inside the pod's netns).
func (k *kubelet) probe(p *componentPod) bool {
	if c := p.State; c.proc == nil || c.proc.Exited() {
		return false
	}
	probe := p.Object.Spec.Containers[0].ReadinessProbe
	if probe == nil || probe.HTTPGet == nil {
		return true
	}
	url := fmt.Sprintf("http://127.0.0.1:%d%s", probe.HTTPGet.Port.IntValue(), probe.HTTPGet.Path)
	hc := &http.Client{Timeout: time.Second}
	if path := p.State.netnsPath(); path != "" {
		hc = HTTPClientIn(path, time.Second)
	}
	resp, err := hc.Get(url)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode < 400
}

// componentPods returns the pods of a workload in namespace (and on node,
// when node is not empty), sorted by name.
func (m *Mesh) componentPods(namespace, workload, node string) []*componentPod {
	var out []*componentPod
	for _, p := range m.standin.Pods() {
		if p.Object.Namespace == namespace && p.Workload == workload && (node == "" || p.Object.Spec.NodeName == node) {
			out = append(out, p)
		}
	}
	return out
}

// stopAll stops every component process (the control plane last). Pod
// netns are left to Down, which deletes every netns the mesh made.
func (m *Mesh) stopAll(grace time.Duration) {
	var running []*container
	for _, p := range m.standin.Pods() {
		if p.State != nil {
			running = append(running, p.State)
		}
	}
	var wg sync.WaitGroup
	for _, c := range running {
		if c.sandbox != nil {
			c.sandbox.closeForwarder()
		}
		if c.proc != nil && c.node != nil {
			wg.Add(1)
			go func() { defer wg.Done(); c.proc.Stop(grace) }()
		}
	}
	wg.Wait()
	for _, c := range running {
		if c.proc != nil {
			c.proc.Stop(grace)
		}
	}
}

// Component returns the running process of a workload's pod on node
// ("" for the control-plane node's Deployment pod).
func (m *Mesh) Component(workload, node string) (*Proc, error) {
	p, err := m.runningPod(workload, node)
	if err != nil {
		return nil, err
	}
	return p.State.proc, nil
}

// runningPod is the mesh workload's first pod on node ("": the
// control-plane node) that has a process.
func (m *Mesh) runningPod(workload, node string) (*componentPod, error) {
	if node == "" {
		node = ControlPlaneNode
	}
	pods := m.componentPods(m.Namespace, workload, node)
	if len(pods) == 0 || pods[0].State == nil || pods[0].State.proc == nil {
		return nil, fmt.Errorf("no %s pod runs on %s", workload, node)
	}
	return pods[0], nil
}

// RestartComponent restarts a component's container the way a kubelet
// does: SIGTERM, wait (up to grace), start again with the same pod.
// With surge, the new process starts right after SIGTERM, beside the
// draining one, as a rolling DaemonSet update with surge does.
func (m *Mesh) RestartComponent(ctx context.Context, workload, node string, grace time.Duration, surge bool) error {
	p, err := m.runningPod(workload, node)
	if err != nil {
		return err
	}
	old := p.State.proc
	if surge {
		_ = old.cmd.Process.Signal(syscall.SIGTERM)
		if err := m.kubelet.start(ctx, p); err != nil {
			return err
		}
		go old.Stop(grace)
	} else {
		old.Stop(grace)
	}
	return m.WaitComponentReady(ctx, workload, node, 60*time.Second)
}

// WaitComponentReady waits until the workload's pod on node runs a
// process that passes its readiness probe.
func (m *Mesh) WaitComponentReady(ctx context.Context, workload, node string, timeout time.Duration) error {
	return testwait.Until(timeout, func() error {
		p, err := m.runningPod(workload, node)
		if err != nil || p.State.proc.Exited() || !p.Ready {
			return fmt.Errorf("%s on %s is not ready (see %s)", workload, node, m.LogDir())
		}
		return nil
	})
}

// ComponentPIDs lists the PIDs of every component process still running.
func (m *Mesh) ComponentPIDs() []int {
	var out []int
	for _, p := range m.standin.Pods() {
		if c := p.State; c != nil && c.proc != nil && !c.proc.Exited() {
			out = append(out, c.proc.PID())
		}
	}
	return out
}

// WorkloadPod is a pod the kubelet stand-in runs for a Deployment or
// DaemonSet.
type WorkloadPod struct {
	Name, Node, IP string
	// NetnsPath is where its container runs ("": the root netns).
	NetnsPath string
	Ready     bool
	Proc      *Proc
}

// WorkloadPods lists the pods of a Deployment or DaemonSet, sorted by name.
func (m *Mesh) WorkloadPods(namespace, workload string) []WorkloadPod {
	var out []WorkloadPod
	for _, p := range m.componentPods(namespace, workload, "") {
		wp := WorkloadPod{Name: p.Object.Name, Node: p.Object.Spec.NodeName, IP: p.IP, Ready: p.Ready}
		if p.State != nil {
			wp.NetnsPath, wp.Proc = p.State.netnsPath(), p.State.proc
		}
		out = append(out, wp)
	}
	return out
}

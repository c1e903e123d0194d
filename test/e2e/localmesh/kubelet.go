package localmesh

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/ptr"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controllers/ambientmesh/manifests"
	"github.com/ambientmesh/ambient-operator/internal/testwait"
)

// The kubelet stand-in. There is no container runtime here: for every
// Deployment and DaemonSet the operator applies, it creates the Pod objects
// a scheduler and the workload controllers would (one per node for a
// DaemonSet, spec.replicas for a Deployment), starts the component binary
// with exactly the args and env the pod spec declares, and reports
// readiness in Pod and workload status.
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

// componentPod is one Pod the stand-in runs.
type componentPod struct {
	Workload string
	Node     *Node // nil: the control-plane node (root netns)
	Pod      *corev1.Pod
	Proc     *Proc
	Ready    bool
	hash     string
	// sandbox is the pod's own netns (nil: a host-network pod, which runs
	// in its node's netns). It outlives container restarts.
	sandbox *podSandbox
	// configMaps are the pod's ConfigMap volumes, refreshed while it runs
	// as a kubelet does (components may re-read them).
	configMaps []configMapVolume
}

type configMapVolume struct {
	name  string
	items []corev1.KeyToPath
	dir   string
	paths pathMap
}

type kubelet struct {
	m     *Mesh
	mu    sync.Mutex
	pods  map[string]*componentPod // by namespace/name
	cpDir string
}

func podKey(ns, name string) string { return ns + "/" + name }

// podPlan is a pod the stand-in should run.
type podPlan struct {
	namespace, workload, name string
	node                      *Node // nil: the control-plane node
	ownNetns                  bool
	tmpl                      corev1.PodTemplateSpec
	hash                      string
}

// sync is one pass: create missing pods, start processes, probe, report.
func (k *kubelet) sync(ctx context.Context) error {
	cs := k.m.Clientset
	ns := k.m.Namespace
	meshOnly := manifests.MeshSelector(MeshName).String() + ",!" + meshv1alpha1.LabelWaypoint
	deps, err := cs.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{LabelSelector: meshOnly})
	if err != nil {
		return err
	}
	dss, err := cs.AppsV1().DaemonSets(ns).List(ctx, metav1.ListOptions{LabelSelector: meshOnly})
	if err != nil {
		return err
	}
	waypoints, err := cs.AppsV1().Deployments("").List(ctx, metav1.ListOptions{LabelSelector: meshv1alpha1.LabelWaypoint})
	if err != nil {
		return err
	}
	var plans []podPlan
	for i := range deps.Items {
		d := &deps.Items[i]
		plans = append(plans, podPlan{namespace: ns, workload: d.Name, name: d.Name + "-" + shortHash(templateHash(d.Spec.Template)),
			tmpl: d.Spec.Template, hash: templateHash(d.Spec.Template)})
	}
	for i := range dss.Items {
		ds := &dss.Items[i]
		for _, n := range k.m.Nodes {
			plans = append(plans, podPlan{namespace: ns, workload: ds.Name, name: ds.Name + "-" + strings.TrimPrefix(n.Name, "am-"),
				node: n, tmpl: ds.Spec.Template, hash: templateHash(ds.Spec.Template)})
		}
	}
	var errs []error
	var live []*appsv1.Deployment
	for i := range waypoints.Items {
		d := &waypoints.Items[i]
		// No garbage collector runs here: a Deployment whose owner is gone is
		// deleted with the owner's other objects, as the collector would.
		if orphan, err := k.m.collectOrphan(ctx, d); orphan || err != nil {
			errs = append(errs, err)
			continue
		}
		live = append(live, d)
		plans = append(plans, k.deploymentPods(d)...)
	}
	want := map[string]bool{}
	for _, p := range plans {
		want[podKey(p.namespace, p.name)] = true
		errs = append(errs, k.ensurePod(ctx, p))
	}
	for _, d := range live {
		for _, old := range k.outdatedPods(d) {
			want[podKey(d.Namespace, old.Pod.Name)] = true
		}
	}
	errs = append(errs, k.reapDeleted(ctx, want))
	for i := range deps.Items {
		errs = append(errs, k.deploymentStatus(ctx, &deps.Items[i]))
	}
	for _, d := range live {
		errs = append(errs, k.deploymentStatus(ctx, d))
	}
	for i := range dss.Items {
		errs = append(errs, k.daemonSetStatus(ctx, &dss.Items[i]))
	}
	return errors.Join(errs...)
}

// templateHash is the operator's hash annotation of a pod template, or one
// computed the same way when the template has none (waypoint templates).
func templateHash(t corev1.PodTemplateSpec) string {
	if h := t.Annotations[manifests.AnnotationTemplateHash]; h != "" {
		return h
	}
	return manifests.TemplateHash(t)
}

func shortHash(h string) string {
	if len(h) > 10 {
		h = h[:10]
	}
	return h
}

// deploymentPods places a Deployment's replicas of its current template,
// round robin over the nodes its nodeSelector admits, each in its own netns.
func (k *kubelet) deploymentPods(d *appsv1.Deployment) []podPlan {
	hash := templateHash(d.Spec.Template)
	var nodes []*Node
	for _, n := range k.m.Nodes {
		if labels.SelectorFromSet(d.Spec.Template.Spec.NodeSelector).Matches(labels.Set(nodeLabels(n.Name))) {
			nodes = append(nodes, n)
		}
	}
	if len(nodes) == 0 {
		return nil // unschedulable, as with a scheduler
	}
	var out []podPlan
	for i := range int(ptr.Deref(d.Spec.Replicas, 1)) {
		out = append(out, podPlan{namespace: d.Namespace, workload: d.Name, name: fmt.Sprintf("%s-%s-%d", d.Name, shortHash(hash), i),
			node: nodes[i%len(nodes)], ownNetns: true, tmpl: d.Spec.Template, hash: hash})
	}
	return out
}

// outdatedPods are the pods of a Deployment's previous templates that a
// rolling update keeps until every replica of the current template is
// ready (maxUnavailable 0, as the waypoint's Deployment asks).
func (k *kubelet) outdatedPods(d *appsv1.Deployment) []*componentPod {
	hash := templateHash(d.Spec.Template)
	var current int32
	var old []*componentPod
	for _, cp := range k.componentPodsIn(d.Namespace, d.Name) {
		switch {
		case cp.hash != hash:
			old = append(old, cp)
		case cp.Ready:
			current++
		}
	}
	if current >= ptr.Deref(d.Spec.Replicas, 1) {
		return nil
	}
	return old
}

// ensurePod creates the Pod object when missing, starts its process
// when its volumes can be filled, and probes it.
func (k *kubelet) ensurePod(ctx context.Context, plan podPlan) error {
	cs := k.m.Clientset
	ns, name, node, tmpl := plan.namespace, plan.name, plan.node, plan.tmpl
	key := podKey(ns, name)
	k.mu.Lock()
	cp := k.pods[key]
	k.mu.Unlock()
	pod, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		if cp != nil {
			k.stopPod(cp)
		}
		pod = &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: tmpl.Labels, Annotations: tmpl.Annotations},
			Spec:       *tmpl.Spec.DeepCopy(),
		}
		pod.Spec.NodeName = ControlPlaneNode
		if node != nil {
			pod.Spec.NodeName = node.Name
		}
		if pod, err = cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("creating pod %s/%s: %w", ns, name, err)
		}
		cp = k.track(plan, pod)
	case err != nil:
		return err
	case cp == nil || cp.Pod.UID != pod.UID:
		if cp != nil {
			k.stopPod(cp)
		}
		cp = k.track(plan, pod)
	}
	cp.Pod = pod
	if pod.DeletionTimestamp != nil {
		return k.finishDeletion(ctx, cp)
	}
	if cp.Proc == nil || cp.Proc.Exited() {
		if err := k.start(ctx, cp); err != nil {
			return fmt.Errorf("pod %s/%s: %w", ns, name, err)
		}
	} else if err := k.refreshConfigMaps(ctx, cp); err != nil {
		return err
	}
	return k.probe(ctx, cp)
}

func (k *kubelet) track(plan podPlan, pod *corev1.Pod) *componentPod {
	cp := &componentPod{Workload: plan.workload, Node: plan.node, Pod: pod, hash: plan.hash}
	if plan.ownNetns {
		cp.sandbox = &podSandbox{Namespace: pod.Namespace, Name: pod.Name, UID: string(pod.UID), Node: plan.node,
			Netns: podNetnsName(pod.Namespace, pod.Name)}
	}
	k.mu.Lock()
	k.pods[podKey(pod.Namespace, pod.Name)] = cp
	k.mu.Unlock()
	return cp
}

// stopPod stops the pod's container and removes its netns (an untracked
// pod's leftovers: its object was replaced or removed behind our back).
func (k *kubelet) stopPod(cp *componentPod) {
	if cp.Proc != nil {
		cp.Proc.Stop(10 * time.Second)
	}
	if cp.sandbox != nil {
		if err := k.m.removeSandbox(context.Background(), cp.sandbox); err != nil {
			k.m.debugf("%s: removing its netns: %v", cp.Pod.Name, err)
		}
	}
}

// finishDeletion does what a kubelet does for a pod being deleted: stop its
// container within the grace period, tear its network down, then remove
// the object.
func (k *kubelet) finishDeletion(ctx context.Context, cp *componentPod) error {
	if cp.Proc != nil {
		grace := time.Duration(ptr.Deref(cp.Pod.DeletionGracePeriodSeconds, 30)) * time.Second
		cp.Proc.Stop(grace)
	}
	if cp.sandbox != nil {
		if err := k.m.removeSandbox(ctx, cp.sandbox); err != nil {
			return fmt.Errorf("pod %s/%s: %w", cp.Pod.Namespace, cp.Pod.Name, err)
		}
	}
	err := k.m.Clientset.CoreV1().Pods(cp.Pod.Namespace).Delete(ctx, cp.Pod.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To(int64(0))})
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	k.mu.Lock()
	delete(k.pods, podKey(cp.Pod.Namespace, cp.Pod.Name))
	k.mu.Unlock()
	return nil
}

// reapDeleted deletes the pods no workload wants any more (scaled down,
// replaced by a rollout, or of a deleted workload: the workload
// controllers' and the garbage collector's part). The delete is graceful
// first, so that the control plane sees the pod terminating while its
// container drains, then final.
func (k *kubelet) reapDeleted(ctx context.Context, want map[string]bool) error {
	k.mu.Lock()
	var gone []*componentPod
	for key, cp := range k.pods {
		if !want[key] {
			gone = append(gone, cp)
		}
	}
	k.mu.Unlock()
	var errs []error
	for _, cp := range gone {
		pods := k.m.Clientset.CoreV1().Pods(cp.Pod.Namespace)
		if err := pods.Delete(ctx, cp.Pod.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
			continue
		}
		if pod, err := pods.Get(ctx, cp.Pod.Name, metav1.GetOptions{}); err == nil {
			cp.Pod = pod
		}
		errs = append(errs, k.finishDeletion(ctx, cp))
	}
	return errors.Join(errs...)
}

// start fills the pod's volumes and starts its (single) container.
func (k *kubelet) start(ctx context.Context, cp *componentPod) error {
	pod := cp.Pod
	if len(pod.Spec.Containers) != 1 {
		return fmt.Errorf("expected one container, found %d", len(pod.Spec.Containers))
	}
	if cp.sandbox != nil && cp.sandbox.IP == "" {
		if err := k.m.addSandbox(ctx, cp.sandbox); err != nil {
			return err
		}
		// The IP is known before the container starts, as with a runtime.
		if err := k.m.setPodStatus(ctx, cp.Pod, cp.sandbox.IP, k.hostIP(cp), false); err != nil {
			return err
		}
	}
	c := pod.Spec.Containers[0]
	dir := filepath.Join(k.m.StateDir, "pods", pod.Namespace, pod.Name)
	paths, err := k.volumes(ctx, cp, dir, c)
	if err != nil {
		return err
	}
	env, err := k.env(ctx, cp, dir, c)
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
	case cp.sandbox != nil:
		netns = cp.sandbox.Netns
	case cp.Node != nil:
		netns = cp.Node.Name
	}
	k.m.debugf("%s: paths %v", pod.Name, paths)
	proc, err := startProc(k.m.state, k.m.LogDir(), pod.Name, netns, bin, args, env)
	if err != nil {
		return err
	}
	cp.Proc, cp.Ready = proc, false
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
func (k *kubelet) volumes(ctx context.Context, cp *componentPod, dir string, c corev1.Container) (pathMap, error) {
	var paths pathMap
	for image, bin := range imagePaths {
		paths.add(image, filepath.Join(k.m.BinDir, bin))
	}
	byName := map[string]corev1.Volume{}
	for _, v := range cp.Pod.Spec.Volumes {
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
			src = k.hostPath(cp.Node, v.HostPath.Path)
			if err := os.MkdirAll(src, 0o755); err != nil {
				return nil, err
			}
		case v.ConfigMap != nil:
			files, err := k.configMapFiles(ctx, cp.Pod.Namespace, v.ConfigMap.Name, v.ConfigMap.Items)
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
			files, err := k.secretFiles(ctx, cp.Pod.Namespace, v.Secret.SecretName, v.Secret.Items)
			if err != nil {
				return nil, err
			}
			if err := writeFiles(src, files); err != nil {
				return nil, err
			}
		case v.Projected != nil:
			files, err := k.projectedFiles(ctx, cp.Pod, v.Projected)
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
	cp.configMaps = nil
	for _, v := range cp.Pod.Spec.Volumes {
		if v.ConfigMap != nil {
			cp.configMaps = append(cp.configMaps, configMapVolume{name: v.ConfigMap.Name, items: v.ConfigMap.Items,
				dir: filepath.Join(dir, "volumes", v.Name), paths: paths})
		}
	}
	return paths, nil
}

// refreshConfigMaps rewrites a running pod's ConfigMap volumes when the
// ConfigMaps changed, as the kubelet's volume sync does.
func (k *kubelet) refreshConfigMaps(ctx context.Context, cp *componentPod) error {
	for _, v := range cp.configMaps {
		files, err := k.configMapFiles(ctx, cp.Pod.Namespace, v.name, v.items)
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
func (k *kubelet) env(ctx context.Context, cp *componentPod, dir string, c corev1.Container) ([]string, error) {
	pod := cp.Pod
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
				value = k.podIP(cp)
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

// podIP is the pod's own address, or its node's for a host-network pod.
func (k *kubelet) podIP(cp *componentPod) string {
	if cp.sandbox != nil {
		return cp.sandbox.IP
	}
	return k.hostIP(cp)
}

func (k *kubelet) hostIP(cp *componentPod) string {
	if cp.Node == nil {
		return "127.0.0.1"
	}
	return cp.Node.UnderlayIP
}

// netnsPath is where the pod's container runs ("": the root netns).
func (cp *componentPod) netnsPath() string {
	switch {
	case cp.sandbox != nil:
		return cp.sandbox.NetnsPath()
	case cp.Node != nil:
		return cp.Node.NetnsPath()
	}
	return ""
}

// probe runs the container's HTTP readiness probe (inside the pod's netns)
// and reports the result in the Pod's status.
func (k *kubelet) probe(ctx context.Context, cp *componentPod) error {
	c := cp.Pod.Spec.Containers[0]
	ready := false
	if cp.Proc != nil && !cp.Proc.Exited() {
		ready = true
		if p := c.ReadinessProbe; p != nil && p.HTTPGet != nil {
			url := fmt.Sprintf("http://127.0.0.1:%d%s", p.HTTPGet.Port.IntValue(), p.HTTPGet.Path)
			client := &http.Client{Timeout: time.Second}
			if path := cp.netnsPath(); path != "" {
				client = HTTPClientIn(path, time.Second)
			}
			resp, err := client.Get(url)
			ready = err == nil && resp.StatusCode < 400
			if err == nil {
				resp.Body.Close()
			}
		}
	}
	if ready == cp.Ready && cp.Pod.Status.Phase == corev1.PodRunning {
		return nil
	}
	cp.Ready = ready
	return k.m.setPodStatus(ctx, cp.Pod, k.podIP(cp), k.hostIP(cp), ready)
}

// setPodStatus writes what a kubelet reports: Running, the IPs, readiness.
func (m *Mesh) setPodStatus(ctx context.Context, pod *corev1.Pod, ip, hostIP string, ready bool) error {
	cond := corev1.ConditionFalse
	if ready {
		cond = corev1.ConditionTrue
	}
	now := metav1.Now()
	p := pod.DeepCopy()
	p.Status.Phase = corev1.PodRunning
	p.Status.PodIP = ip
	p.Status.PodIPs = []corev1.PodIP{{IP: ip}}
	p.Status.HostIP = hostIP
	p.Status.HostIPs = []corev1.HostIP{{IP: hostIP}}
	if p.Status.StartTime == nil {
		p.Status.StartTime = &now
	}
	p.Status.Conditions = []corev1.PodCondition{
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.ContainersReady, Status: cond, LastTransitionTime: now},
		{Type: corev1.PodReady, Status: cond, LastTransitionTime: now},
	}
	var statuses []corev1.ContainerStatus
	for _, c := range p.Spec.Containers {
		statuses = append(statuses, corev1.ContainerStatus{Name: c.Name, Image: c.Image, Ready: ready, Started: ptr.To(true),
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: *p.Status.StartTime}}})
	}
	p.Status.ContainerStatuses = statuses
	updated, err := m.Clientset.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{})
	if err != nil {
		return fmt.Errorf("pod %s status: %w", p.Name, err)
	}
	*pod = *updated
	return nil
}

func (k *kubelet) counts(namespace, workload, hash string) (total, ready, updated int32) {
	for _, cp := range k.componentPodsIn(namespace, workload) {
		total++
		if cp.hash == hash {
			updated++
		}
		if cp.Ready {
			ready++
		}
	}
	return
}

func (k *kubelet) deploymentStatus(ctx context.Context, d *appsv1.Deployment) error {
	total, ready, updated := k.counts(d.Namespace, d.Name, templateHash(d.Spec.Template))
	s := appsv1.DeploymentStatus{
		ObservedGeneration: d.Generation, Replicas: total, UpdatedReplicas: updated,
		ReadyReplicas: ready, AvailableReplicas: ready, UnavailableReplicas: total - ready,
	}
	if d.Status.ObservedGeneration == s.ObservedGeneration && d.Status.Replicas == s.Replicas &&
		d.Status.ReadyReplicas == s.ReadyReplicas && d.Status.UpdatedReplicas == s.UpdatedReplicas {
		return nil
	}
	d.Status = s
	_, err := k.m.Clientset.AppsV1().Deployments(d.Namespace).UpdateStatus(ctx, d, metav1.UpdateOptions{})
	return ignoreConflict(err)
}

func (k *kubelet) daemonSetStatus(ctx context.Context, ds *appsv1.DaemonSet) error {
	total, ready, updated := k.counts(ds.Namespace, ds.Name, templateHash(ds.Spec.Template))
	desired := int32(len(k.m.Nodes))
	s := appsv1.DaemonSetStatus{
		ObservedGeneration: ds.Generation, DesiredNumberScheduled: desired, CurrentNumberScheduled: total,
		NumberReady: ready, NumberAvailable: ready, UpdatedNumberScheduled: updated, NumberUnavailable: max(desired-ready, 0),
	}
	old := ds.Status
	if old.ObservedGeneration == s.ObservedGeneration && old.DesiredNumberScheduled == s.DesiredNumberScheduled &&
		old.CurrentNumberScheduled == s.CurrentNumberScheduled && old.NumberReady == s.NumberReady &&
		old.UpdatedNumberScheduled == s.UpdatedNumberScheduled {
		return nil
	}
	ds.Status = s
	_, err := k.m.Clientset.AppsV1().DaemonSets(ds.Namespace).UpdateStatus(ctx, ds, metav1.UpdateOptions{})
	return ignoreConflict(err)
}

func ignoreConflict(err error) error {
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// componentPods returns the mesh's component pods whose workload is name
// (and on node, when node is not empty), sorted by pod name.
func (k *kubelet) componentPods(workload, node string) []*componentPod {
	var out []*componentPod
	for _, cp := range k.componentPodsIn(k.m.Namespace, workload) {
		if node == "" || cp.Pod.Spec.NodeName == node {
			out = append(out, cp)
		}
	}
	return out
}

// componentPodsIn returns the pods of a workload in namespace, sorted by name.
func (k *kubelet) componentPodsIn(namespace, workload string) []*componentPod {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []*componentPod
	for _, cp := range k.pods {
		if cp.Workload == workload && cp.Pod.Namespace == namespace {
			out = append(out, cp)
		}
	}
	slices.SortFunc(out, func(a, b *componentPod) int { return strings.Compare(a.Pod.Name, b.Pod.Name) })
	return out
}

// stopAll stops every component process (the control plane last). Pod
// netns are left to Down, which deletes every netns the mesh made.
func (k *kubelet) stopAll(grace time.Duration) {
	k.mu.Lock()
	pods := make([]*componentPod, 0, len(k.pods))
	for _, cp := range k.pods {
		pods = append(pods, cp)
	}
	k.mu.Unlock()
	var wg sync.WaitGroup
	for _, cp := range pods {
		if cp.sandbox != nil {
			cp.sandbox.closeForwarder()
		}
		if cp.Proc != nil && cp.Node != nil {
			wg.Add(1)
			go func() { defer wg.Done(); cp.Proc.Stop(grace) }()
		}
	}
	wg.Wait()
	for _, cp := range pods {
		if cp.Proc != nil {
			cp.Proc.Stop(grace)
		}
	}
}

// Component returns the running process of a workload's pod on node
// ("" for the control-plane node's Deployment pod).
func (m *Mesh) Component(workload, node string) (*Proc, error) {
	if node == "" {
		node = ControlPlaneNode
	}
	pods := m.kubelet.componentPods(workload, node)
	if len(pods) == 0 || pods[0].Proc == nil {
		return nil, fmt.Errorf("no %s pod runs on %s", workload, node)
	}
	return pods[0].Proc, nil
}

// RestartComponent restarts a component's container the way a kubelet
// does: SIGTERM, wait (up to grace), start again with the same pod.
// With surge, the new process starts right after SIGTERM, beside the
// draining one, as a rolling DaemonSet update with surge does.
func (m *Mesh) RestartComponent(ctx context.Context, workload, node string, grace time.Duration, surge bool) error {
	if node == "" {
		node = ControlPlaneNode
	}
	pods := m.kubelet.componentPods(workload, node)
	if len(pods) == 0 || pods[0].Proc == nil {
		return fmt.Errorf("no %s pod runs on %s", workload, node)
	}
	cp := pods[0]
	old := cp.Proc
	if surge {
		_ = old.cmd.Process.Signal(syscall.SIGTERM)
		if err := m.kubelet.start(ctx, cp); err != nil {
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
		pods := m.kubelet.componentPods(workload, node)
		if len(pods) == 0 || pods[0].Proc == nil || pods[0].Proc.Exited() || !pods[0].Ready {
			return fmt.Errorf("%s on %s is not ready (see %s)", workload, node, m.LogDir())
		}
		return nil
	})
}

// ComponentPIDs lists the PIDs of every component process still running.
func (m *Mesh) ComponentPIDs() []int {
	m.kubelet.mu.Lock()
	defer m.kubelet.mu.Unlock()
	var out []int
	for _, cp := range m.kubelet.pods {
		if cp.Proc != nil && !cp.Proc.Exited() {
			out = append(out, cp.Proc.PID())
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
	for _, cp := range m.kubelet.componentPodsIn(namespace, workload) {
		out = append(out, WorkloadPod{Name: cp.Pod.Name, Node: cp.Pod.Spec.NodeName, IP: m.kubelet.podIP(cp),
			NetnsPath: cp.netnsPath(), Ready: cp.Ready, Proc: cp.Proc})
	}
	return out
}

package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/internal/spiffe"
)

// ambientctlBin is the ambientctl binary built from this tree for the current
// Ordered container (describeAmbientctl's BeforeAll).
var ambientctlBin string

// describeAmbientctl declares, in describeMesh's Ordered container and after
// the app pods are up, the checks a user would make with ambientctl: a
// node's ztunnel, chosen by node or by pod name, reached through the API
// server (the default --via port-forward: the apiserver, the real kubelet and
// containerd's port forwarding into the pod's network namespace). The
// waypoint's admin is checked while the waypoint spec has one deployed
// (expectAmbientctlShowsWaypoint).
func describeAmbientctl() {
	BeforeAll(func(ctx SpecContext) {
		dir, err := os.MkdirTemp("", "ambientctl-cluster-")
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(os.RemoveAll, dir)
		bin := filepath.Join(dir, "ambientctl")
		cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/ambientctl")
		cmd.Dir = e.repo
		out, err := cmd.CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), "go build ./cmd/ambientctl: %s", out)
		ambientctlBin = bin
	})

	It("ambientctl reaches each node's ztunnel through the API server, by node or by pod, and shows the app pods as it knows them", func(ctx SpecContext) {
		apps := append(appPods(ctx, "server"), appPods(ctx, "client")...)
		ztunnels, err := clientset.CoreV1().Pods(meshv1alpha1.DefaultNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=ztunnel"})
		Expect(err).NotTo(HaveOccurred())
		Expect(ztunnels.Items).NotTo(BeEmpty())
		kubeContext := kubeconfigContext()
		for _, zt := range ztunnels.Items {
			node := zt.Spec.NodeName
			By("node " + node + ", ztunnel " + zt.Name)
			// Without -n: the ztunnels' namespace comes from the AmbientMesh.
			Eventually(ctx, func(ctx context.Context) error {
				out, err := ambientctl(ctx, "ztunnel", "workloads", "--node", node, "-o", "json")
				if err != nil {
					return err
				}
				return workloadsListPods(out, apps)
			}).Should(Succeed())
			// The same view by pod name, with -n and --context, as a table.
			out, err := ambientctl(ctx, "ztunnel", "workloads", "--pod", zt.Name, "-n", zt.Namespace, "--context", kubeContext)
			Expect(err).NotTo(HaveOccurred())
			Expect(tableListsPods(out, apps)).To(Succeed())
			// Certificates are per node: only the identities of the pods it serves.
			Eventually(ctx, func(ctx context.Context) error {
				out, err := ambientctl(ctx, "ztunnel", "certs", "--node", node, "-o", "yaml")
				if err != nil {
					return err
				}
				return certsCoverPods(out, podsOn(apps, node))
			}).Should(Succeed())
		}
	})
}

// ambientctl runs the built ambientctl against the cluster with the suite's
// kubeconfig and returns its stdout; stderr goes into the error.
func ambientctl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, ambientctlBin, append([]string{"--kubeconfig", e.kubeconfig}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("ambientctl %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// kubeconfigContext is the name of the suite's kubeconfig's current context,
// to name it with --context as a user would.
func kubeconfigContext() string {
	cfg, err := clientcmd.LoadFromFile(e.kubeconfig)
	Expect(err).NotTo(HaveOccurred())
	Expect(cfg.CurrentContext).NotTo(BeEmpty())
	return cfg.CurrentContext
}

// workload is what the checks read of an entry of `ztunnel workloads -o json`.
type workload struct {
	Name      string   `json:"name"`
	Namespace string   `json:"namespace"`
	Addresses []string `json:"addresses"`
	Node      string   `json:"node"`
}

// workloadsListPods checks that the ztunnel's workloads include every pod,
// with its namespace, IP and node.
func workloadsListPods(out string, pods []corev1.Pod) error {
	var workloads []workload
	if err := json.Unmarshal([]byte(out), &workloads); err != nil {
		return fmt.Errorf("ztunnel workloads: %w: %s", err, out)
	}
	for _, p := range pods {
		want := workload{Name: p.Name, Namespace: p.Namespace, Addresses: []string{p.Status.PodIP}, Node: p.Spec.NodeName}
		if !slices.ContainsFunc(workloads, func(w workload) bool {
			return w.Name == want.Name && w.Namespace == want.Namespace && w.Node == want.Node && slices.Equal(w.Addresses, want.Addresses)
		}) {
			return fmt.Errorf("the ztunnel's workloads have no %+v: %s", want, out)
		}
	}
	return nil
}

// tableListsPods checks that the workloads table has a row for every pod:
// NAME, NAMESPACE and ADDRESSES as its first columns.
func tableListsPods(out string, pods []corev1.Pod) error {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if header := strings.Fields(lines[0]); len(header) < 3 || !slices.Equal(header[:3], []string{"NAME", "NAMESPACE", "ADDRESSES"}) {
		return fmt.Errorf("not the workloads table: %s", out)
	}
	for _, p := range pods {
		if !slices.ContainsFunc(lines[1:], func(line string) bool {
			f := strings.Fields(line)
			return len(f) >= 3 && f[0] == p.Name && f[1] == p.Namespace && f[2] == p.Status.PodIP
		}) {
			return fmt.Errorf("no row for %s/%s at %s: %s", p.Namespace, p.Name, p.Status.PodIP, out)
		}
	}
	return nil
}

// certsCoverPods checks that the ztunnel holds an Available certificate for
// the identity of each pod, used by at least as many pods as run under it.
func certsCoverPods(out string, pods []corev1.Pod) error {
	type cert struct {
		Identity string `json:"identity"`
		State    string `json:"state"`
		Pods     int    `json:"pods"`
	}
	var certs []cert
	if err := yaml.Unmarshal([]byte(out), &certs); err != nil {
		return fmt.Errorf("ztunnel certs: %w: %s", err, out)
	}
	want := map[string]int{}
	for _, p := range pods {
		want[spiffe.ID{TrustDomain: "cluster.local", Namespace: p.Namespace, ServiceAccount: p.Spec.ServiceAccountName}.String()]++
	}
	for id, n := range want {
		if !slices.ContainsFunc(certs, func(c cert) bool {
			return c.Identity == id && c.State == "Available" && c.Pods >= n
		}) {
			return fmt.Errorf("no Available certificate of %s for %d pods: %s", id, n, out)
		}
	}
	return nil
}

func podsOn(pods []corev1.Pod, node string) []corev1.Pod {
	return slices.DeleteFunc(slices.Clone(pods), func(p corev1.Pod) bool { return p.Spec.NodeName != node })
}

// expectAmbientctlShowsWaypoint checks, while the app namespace's Waypoint
// serves its traffic, what ambientctl reads through the API server from its
// pods' admin: the status (Ready, each pod connected to xDS and holding
// listeners), and each pod's clusters, with every server pod as an endpoint
// of the server's identity and the requests sent so far counted.
func expectAmbientctlShowsWaypoint(ctx context.Context) {
	Eventually(ctx, func(ctx context.Context) error {
		out, err := ambientctl(ctx, "waypoint", "status", "waypoint", "-n", appNamespace, "-o", "json")
		if err != nil {
			return err
		}
		return waypointStatusConnected(out)
	}).Should(Succeed())

	servers := appPods(ctx, "server")
	waypoints, err := clientset.CoreV1().Pods(appNamespace).List(ctx, metav1.ListOptions{LabelSelector: meshv1alpha1.LabelWaypoint + "=waypoint"})
	Expect(err).NotTo(HaveOccurred())
	Expect(waypoints.Items).NotTo(BeEmpty())
	successes := uint64(0)
	for _, wp := range waypoints.Items {
		out, err := ambientctl(ctx, "waypoint", "clusters", "waypoint", "-n", appNamespace, "--pod", wp.Name, "-o", "json")
		Expect(err).NotTo(HaveOccurred())
		n, err := serverEndpoints(out, servers)
		Expect(err).NotTo(HaveOccurred())
		successes += n
	}
	Expect(successes).To(BeNumerically(">=", 1), "no waypoint pod counted a request to a server pod")
}

// waypointStatusConnected checks `waypoint status -o json`: the Waypoint
// Ready, and every pod reached, ready, connected to xDS, holding listeners.
func waypointStatusConnected(out string) error {
	var report struct {
		Waypoint struct {
			Conditions []metav1.Condition `json:"conditions"`
		} `json:"waypoint"`
		Pods []struct {
			Name      string         `json:"name"`
			Ready     bool           `json:"ready"`
			Resources map[string]int `json:"resources"`
			XDS       struct{ Connected bool }
			Error     string `json:"error"`
		} `json:"pods"`
	}
	if err := json.Unmarshal([]byte(out), &report); err != nil {
		return fmt.Errorf("waypoint status: %w: %s", err, out)
	}
	if !slices.ContainsFunc(report.Waypoint.Conditions, func(c metav1.Condition) bool {
		return c.Type == meshv1alpha1.WaypointConditionReady && c.Status == metav1.ConditionTrue
	}) {
		return fmt.Errorf("the Waypoint is not Ready: %s", out)
	}
	if len(report.Pods) == 0 {
		return fmt.Errorf("no waypoint pod: %s", out)
	}
	for _, p := range report.Pods {
		if p.Error != "" || !p.Ready || !p.XDS.Connected || p.Resources["Listener"] == 0 {
			return fmt.Errorf("waypoint pod %s not reached, ready, connected and configured: %s", p.Name, out)
		}
	}
	return nil
}

// serverEndpoints checks that a waypoint pod's clusters (`waypoint clusters
// -o json`) have every server pod as an endpoint with the server's identity,
// and returns the requests those endpoints answered.
func serverEndpoints(out string, servers []corev1.Pod) (uint64, error) {
	type host struct {
		Address   string `json:"address"`
		Identity  string `json:"identity"`
		Successes uint64 `json:"successes"`
	}
	var clusters []struct {
		Hosts []host `json:"hosts"`
	}
	if err := json.Unmarshal([]byte(out), &clusters); err != nil {
		return 0, fmt.Errorf("waypoint clusters: %w: %s", err, out)
	}
	serverID := spiffe.ID{TrustDomain: "cluster.local", Namespace: appNamespace, ServiceAccount: "server"}.String()
	successes := uint64(0)
	for _, p := range servers {
		found := false
		for _, c := range clusters {
			for _, h := range c.Hosts {
				if strings.HasPrefix(h.Address, p.Status.PodIP+":") {
					if h.Identity != serverID {
						return 0, fmt.Errorf("endpoint %s has identity %q: %s", h.Address, h.Identity, out)
					}
					found = true
					successes += h.Successes
				}
			}
		}
		if !found {
			return 0, fmt.Errorf("server pod %s (%s) is no endpoint of the waypoint: %s", p.Name, p.Status.PodIP, out)
		}
	}
	return successes, nil
}

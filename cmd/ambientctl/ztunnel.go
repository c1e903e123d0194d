package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controllers/ambientmesh/manifests"
)

// ztunnelView is one of ztunnel's admin endpoint paths that ambientctl shows.
type ztunnelView struct {
	name, short string
	method      string // GET, or POST for an action
	path        string
	columns     []string // of the table, in order
}

var ztunnelViews = []ztunnelView{
	{"workloads", "the workloads the ztunnel knows", http.MethodGet, "/workloads",
		[]string{"name", "namespace", "addresses", "service_account", "node", "tunnel_protocol", "uid"}},
	{"services", "the services the ztunnel knows", http.MethodGet, "/services",
		[]string{"name", "namespace", "hostname", "addresses", "ports", "endpoints"}},
	{"policies", "the L4 policies the ztunnel enforces", http.MethodGet, "/policies",
		[]string{"name", "namespace", "scope", "action", "rules"}},
	{"certs", "the ztunnel's workload certificates", http.MethodGet, "/certs",
		[]string{"identity", "state", "serial", "notBefore", "notAfter", "renewAt", "pods", "lastError"}},
	{"connections", "the ztunnel's open connections", http.MethodGet, "/connections",
		[]string{"direction", "pod", "source", "destination", "sourceIdentity", "destinationIdentity", "started", "bytesSent", "bytesReceived"}},
	{"renew-certs", "renew every certificate of the ztunnel now", http.MethodPost, "/certs/renew",
		[]string{"identity", "previousSerial", "serial", "error"}},
}

func ztunnelCommand(g *globalFlags) *cobra.Command {
	cmd := groupCommand("ztunnel", "a node's ztunnel: its view of the mesh, from its admin endpoint")
	for _, v := range ztunnelViews {
		cmd.AddCommand(ztunnelViewCommand(g, v))
	}
	return cmd
}

func ztunnelViewCommand(g *globalFlags, view ztunnelView) *cobra.Command {
	var (
		node, podName, meshName string
		admin                   adminFlags
	)
	cmd := &cobra.Command{
		Use:   view.name + " (--node NODE | --pod POD)",
		Short: view.short,
		Long: view.short + ".\n\nThe ztunnel pod is the one on --node, or --pod, among the pods of the mesh's ztunnel DaemonSet " +
			"in its install namespace (or -n). With --via netns, --node names the node's network namespace instead.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := admin.resolve(cmd); err != nil {
				return err
			}
			dial, addr, where, err := ztunnelDialer(g, admin, meshName, node, podName)
			if err != nil {
				return err
			}
			body, err := adminRequest(dial, addr, view.method, view.path)
			if err != nil {
				return fmt.Errorf("ztunnel admin of %s: %w", where, err)
			}
			var items []map[string]any
			if err := json.Unmarshal(body, &items); err != nil {
				return fmt.Errorf("ztunnel admin of %s: %s is not a JSON list: %w", where, view.path, err)
			}
			return write(cmd.OutOrStdout(), g.output, items, objectTable(items, view.columns))
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "the node whose ztunnel to ask")
	cmd.Flags().StringVar(&podName, "pod", "", "the ztunnel pod to ask (instead of --node)")
	cmd.Flags().StringVar(&meshName, "mesh", "default", "the AmbientMesh whose ztunnels these are")
	admin.bind(cmd)
	return cmd
}

// ztunnelDialer is how to reach the chosen ztunnel's admin endpoint, the address to
// ask there, and what to call it in errors.
func ztunnelDialer(g *globalFlags, admin adminFlags, meshName, node, podName string) (dialFunc, string, string, error) {
	if admin.via != viaPortForward && podName != "" {
		return nil, "", "", fmt.Errorf("--pod is for --via %s", viaPortForward)
	}
	switch admin.via {
	case viaAddress:
		if node != "" {
			return nil, "", "", fmt.Errorf("--node is not for --via %s: the address says where the ztunnel is", viaAddress)
		}
		return dialHere, admin.address, admin.address, nil
	case viaNetns:
		if node == "" {
			return nil, "", "", fmt.Errorf("--via netns needs --node")
		}
		nsPath := filepath.Join(admin.netnsDir, node)
		if _, err := os.Stat(nsPath); err != nil {
			return nil, "", "", fmt.Errorf("node %s is not a network namespace here (%v): --via netns is for the local mesh", node, err)
		}
		return dialerIn(nsPath), localAdmin, "node " + node, nil
	}
	if node == "" && podName == "" {
		return nil, "", "", fmt.Errorf("--node NODE or --pod POD is required")
	}
	cl, cfg, err := g.client()
	if err != nil {
		return nil, "", "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	namespace := g.namespace
	if namespace == "" {
		if namespace, err = installNamespace(ctx, cl, meshName); err != nil {
			return nil, "", "", err
		}
	}
	pod, err := ztunnelPod(ctx, cl, meshName, namespace, node, podName)
	if err != nil {
		return nil, "", "", err
	}
	dial, err := portForwardDialer(cfg, pod.Namespace, pod.Name, meshv1alpha1.PortAdmin)
	return dial, localAdmin, fmt.Sprintf("pod %s/%s on node %s", pod.Namespace, pod.Name, pod.Spec.NodeName), err
}

// installNamespace is where the mesh's components run.
func installNamespace(ctx context.Context, cl client.Client, meshName string) (string, error) {
	mesh := &meshv1alpha1.AmbientMesh{}
	if err := cl.Get(ctx, client.ObjectKey{Name: meshName}, mesh); err != nil {
		return "", fmt.Errorf("reading AmbientMesh %q for its install namespace: %w (or name the namespace with -n)", meshName, err)
	}
	return mesh.Spec.InstallNamespace(), nil
}

// ztunnelPod lists the pods of the mesh's ztunnel DaemonSet in namespace (by the
// labels the operator gives them) and picks one.
func ztunnelPod(ctx context.Context, cl client.Client, meshName, namespace, node, podName string) (corev1.Pod, error) {
	selector := manifests.ComponentSelector(meshName, manifests.ZTunnelName)
	var list corev1.PodList
	if err := cl.List(ctx, &list, client.InNamespace(namespace), client.MatchingLabelsSelector{Selector: selector}); err != nil {
		return corev1.Pod{}, fmt.Errorf("listing the ztunnel pods in %s: %w", namespace, err)
	}
	if len(list.Items) == 0 {
		return corev1.Pod{}, fmt.Errorf("no ztunnel pods in namespace %s (kubectl get pods -n %s -l %s); on the local mesh, use --via netns",
			namespace, namespace, selector)
	}
	return pickZtunnel(list.Items, node, podName)
}

// pickZtunnel chooses among the ztunnel pods the one named podName, else the one on
// node. During a rollout a node has two for a moment: the ready one that is not being
// deleted wins.
func pickZtunnel(pods []corev1.Pod, node, podName string) (corev1.Pod, error) {
	var candidates []corev1.Pod
	for _, p := range pods {
		if (podName == "" || p.Name == podName) && (node == "" || p.Spec.NodeName == node) {
			candidates = append(candidates, p)
		}
	}
	if len(candidates) == 0 {
		var where []string
		for _, p := range pods {
			where = append(where, p.Name+" on "+p.Spec.NodeName)
		}
		slices.Sort(where)
		what := "on node " + node
		if podName != "" {
			what = "named " + podName
			if node != "" {
				what += " on node " + node
			}
		}
		return corev1.Pod{}, fmt.Errorf("no ztunnel pod %s; there are: %s", what, strings.Join(where, ", "))
	}
	return preferred(candidates), nil
}

// preferred is the pod to ask among several: a ready one that is not being deleted,
// else one not being deleted, else the first; by name among equals.
func preferred(pods []corev1.Pod) corev1.Pod {
	rank := func(p corev1.Pod) int {
		switch {
		case p.DeletionTimestamp != nil:
			return 0
		case podReady(p):
			return 2
		}
		return 1
	}
	return slices.MinFunc(pods, func(a, b corev1.Pod) int {
		if ra, rb := rank(a), rank(b); ra != rb {
			return rb - ra
		}
		return strings.Compare(a.Name, b.Name)
	})
}

func podReady(p corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

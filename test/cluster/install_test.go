package cluster

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/dataplane/cni/plugin"
	"github.com/ambientmesh/ambient-operator/test/e2e/localmesh"
)

const (
	operatorNamespace = "ambient-operator-system"
	operatorName      = "ambient-operator-controller-manager"
	appNamespace      = "shop"
)

// The operator installed as the README tells a user: make deploy, then the
// AmbientMesh sample; then the mesh as a user would check it, an upgrade
// under traffic, the uninstall.
var _ = Describe("the operator installed by make deploy", Ordered, func() {
	It("runs the operator from its image, with its webhooks' CA injected by cert-manager", func(ctx SpecContext) {
		makeTarget(ctx, "deploy", "IMG="+e.operator)
		Eventually(ctx, deploymentAvailable(operatorNamespace, operatorName)).Should(Succeed())
		Eventually(ctx, webhooksHaveCABundle).Should(Succeed())
	})

	describeMesh(true)

	It("is removed by make undeploy", func(ctx SpecContext) {
		makeTarget(ctx, "undeploy", "IMG="+e.operator)
		expectOperatorGone(ctx)
	})

	AfterAll(func(ctx SpecContext) {
		removeLeftovers(ctx, func(ctx context.Context) { makeTarget(ctx, "undeploy", "IMG="+e.operator) })
	})

})

// The operator installed from its OLM bundle: only what the CSV declares
// (and the bundle's other manifests, which OLM applies too), as OLM would
// create it. A rule missing from the CSV's permissions is missing here too.
var _ = Describe("the operator installed from its bundle as OLM would", Ordered, func() {
	It("runs the operator from the CSV's install strategy, its webhooks served with the installer's certificate", func(ctx SpecContext) {
		Expect(installBundle(ctx, k8s, filepath.Join(e.repo, "bundle"), operatorNamespace)).To(Succeed())
		Eventually(ctx, deploymentAvailable(operatorNamespace, operatorName)).Should(Succeed())
		Expect(webhooksHaveCABundle(ctx)).To(Succeed())
	})

	describeMesh(false)

	It("is removed with everything the bundle installed", func(ctx SpecContext) {
		Expect(uninstallBundle(ctx, k8s, filepath.Join(e.repo, "bundle"), operatorNamespace)).To(Succeed())
		expectOperatorGone(ctx)
	})

	AfterAll(func(ctx SpecContext) {
		removeLeftovers(ctx, func(ctx context.Context) {
			Expect(uninstallBundle(ctx, k8s, filepath.Join(e.repo, "bundle"), operatorNamespace)).To(Succeed())
		})
	})
})

// describeMesh declares, in an Ordered container, the checks of a mesh made
// from the AmbientMesh sample by an installed operator, from its installation
// to its deletion; with upgrade, also an upgrade under traffic.
func describeMesh(upgrade bool) {
	var nodes []string

	AfterEach(func(ctx SpecContext) {
		if CurrentSpecReport().Failed() {
			dumpState(ctx)
		}
	})

	BeforeAll(func(ctx SpecContext) {
		list, err := clientset.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		Expect(err).NotTo(HaveOccurred())
		nodes = nil
		for _, n := range list.Items {
			nodes = append(nodes, n.Name)
		}
		Expect(nodes).NotTo(BeEmpty())
	})

	It("makes the AmbientMesh sample Ready, its components scheduled on every node from the imported images", func(ctx SpecContext) {
		_, err := kubectl(ctx, "", "apply", "-f", filepath.Join(e.repo, "config/samples/mesh_v1alpha1_ambientmesh.yaml"))
		Expect(err).NotTo(HaveOccurred())
		Eventually(ctx, meshReady).Should(Succeed())
		for _, ds := range []string{"ztunnel", "ambientmesh-cni"} {
			Eventually(ctx, daemonSetReadyEverywhere(meshv1alpha1.DefaultNamespace, ds, len(nodes))).Should(Succeed())
		}
		expectImagesOf(ctx, e.version)
	})

	It("chains the CNI plugin into each node's CNI config and installs its binary", func() {
		for _, node := range nodes {
			Expect(cniConfigsChaining(node)).NotTo(BeEmpty(), "node %s: no conflist in %s names the %s plugin", node, meshv1alpha1.DefaultCNIConfDir, plugin.Type)
			Expect(nodeFile(node, filepath.Join(meshv1alpha1.DefaultCNIBinDir, plugin.Type))).To(BeAnExistingFile())
		}
	})

	It("captures app pods created after it in an enrolled namespace from their first connection, and they talk over mutual TLS, never in plaintext", func(ctx SpecContext) {
		applyApp(ctx, len(nodes))
		Eventually(ctx, deploymentAvailable(appNamespace, "server")).Should(Succeed())
		Eventually(ctx, deploymentAvailable(appNamespace, "client")).Should(Succeed())
		// The client's init container, its first process, got an answer before the
		// suite sent anything: that first connection was already mutual TLS.
		Expect(clientConnections(ctx, nodes)).To(BeNumerically(">=", 1), "the client pod's first connection was not captured")
		expectMutualTLS(ctx, nodes, "http://server."+appNamespace)
	})

	describeAmbientctl()

	It("sends the namespace's service traffic through a Waypoint, which enforces an L7 policy", func(ctx SpecContext) {
		_, err := kubectl(ctx, "", "-n", appNamespace, "apply", "-f", filepath.Join(e.repo, "config/samples/mesh_v1alpha1_waypoint.yaml"))
		Expect(err).NotTo(HaveOccurred())
		Eventually(ctx, waypointReady).Should(Succeed())
		_, err = kubectl(ctx, denyAdminPolicy, "apply", "-f", "-")
		Expect(err).NotTo(HaveOccurred())
		_, err = kubectl(ctx, "", "label", "namespace", appNamespace, meshv1alpha1.LabelUseWaypoint+"=waypoint")
		Expect(err).NotTo(HaveOccurred())
		Eventually(ctx, func(ctx context.Context) error {
			r, err := echoGet(ctx, "http://server."+appNamespace+"/admin")
			if err != nil {
				return err
			}
			if r.Code != http.StatusForbidden || r.Hostname != "" {
				return fmt.Errorf("want 403 from the waypoint, not the server; got %d from %q", r.Code, r.Hostname)
			}
			return nil
		}).Should(Succeed())
		// Allowed requests reach the server with their headers, and with the trace
		// context the waypoint adds: they went through its HTTP filters.
		r, err := echoOK(ctx, "http://server."+appNamespace+"/hello", "X-Shop-Check:via-waypoint")
		Expect(err).NotTo(HaveOccurred())
		Expect(r.Headers.Get("X-Shop-Check")).To(Equal("via-waypoint"))
		Expect(r.Headers.Get("Traceparent")).NotTo(BeEmpty(), "the waypoint sets traceparent: %v", r.Headers)
		Expect(r.Headers.Get("X-Request-Id")).NotTo(BeEmpty(), "the waypoint sets x-request-id: %v", r.Headers)
		expectAmbientctlShowsWaypoint(ctx)

		_, err = kubectl(ctx, "", "label", "namespace", appNamespace, meshv1alpha1.LabelUseWaypoint+"-")
		Expect(err).NotTo(HaveOccurred())
		_, err = kubectl(ctx, "", "-n", appNamespace, "delete", "meshpolicy", "deny-admin", "--wait=true")
		Expect(err).NotTo(HaveOccurred())
		_, err = kubectl(ctx, "", "-n", appNamespace, "delete", "waypoint", "waypoint", "--wait=true")
		Expect(err).NotTo(HaveOccurred())
		Eventually(ctx, func(ctx context.Context) error {
			r, err := echoOK(ctx, "http://server."+appNamespace+"/admin")
			if err == nil && r.Headers.Get("Traceparent") != "" {
				return fmt.Errorf("still through the waypoint: %v", r.Headers)
			}
			return err
		}).Should(Succeed(), "without the waypoint nothing enforces the L7 policy, and requests go straight to the server")
	})

	It("applies an L4 DENY and lifts it when the policy is deleted", func(ctx SpecContext) {
		_, err := kubectl(ctx, denyClientPolicy, "apply", "-f", "-")
		Expect(err).NotTo(HaveOccurred())
		Eventually(ctx, func(ctx context.Context) error {
			r, err := echoGet(ctx, "http://server."+appNamespace+"/denied")
			if err == nil {
				return fmt.Errorf("the request went through: %d from %q", r.Code, r.Hostname)
			}
			if !strings.Contains(err.Error(), "requests had errors") {
				return fmt.Errorf("not the echo client's request failing: %w", err)
			}
			return nil
		}).Should(Succeed(), "the ztunnel should refuse shop/client once the DENY applies")
		_, err = kubectl(ctx, "", "-n", appNamespace, "delete", "meshpolicy", "deny-client")
		Expect(err).NotTo(HaveOccurred())
		Eventually(ctx, func(ctx context.Context) error {
			_, err := echoOK(ctx, "http://server."+appNamespace+"/allowed-again")
			return err
		}).Should(Succeed())
	})

	It("keeps a pod enrolled when the kubelet restarts its container", func(ctx SpecContext) {
		server := appPods(ctx, "server")[0]
		killContainer(ctx, server)
		Eventually(ctx, func(ctx context.Context) error {
			p, err := clientset.CoreV1().Pods(appNamespace).Get(ctx, server.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if cs := p.Status.ContainerStatuses; len(cs) != 1 || cs[0].RestartCount != 1 || !cs[0].Ready {
				return fmt.Errorf("pod %s not restarted and ready yet: %+v", p.Name, cs)
			}
			return nil
		}).Should(Succeed())
		expectMutualTLS(ctx, nodes, fmt.Sprintf("http://%s:8080", server.Status.PodIP))
	})

	It("keeps the kubelet's probes of enrolled pods passing", func(ctx SpecContext) {
		// Probes fail while a container (re)starts, before its server listens; what
		// must hold is that, once up, no probe through the mesh's rules fails.
		Eventually(ctx, appPodsReady).Should(Succeed())
		from := time.Now().Add(time.Second).Truncate(time.Second) // event times have seconds only
		Consistently(ctx, appPodsReady).WithTimeout(10 * time.Second).Should(Succeed())
		events, err := clientset.CoreV1().Events(appNamespace).List(ctx, metav1.ListOptions{FieldSelector: "reason=Unhealthy"})
		Expect(err).NotTo(HaveOccurred())
		for _, ev := range events.Items {
			Expect(ev.LastTimestamp.Time.Before(from)).To(BeTrue(), "a probe of %s failed: %s", ev.InvolvedObject.Name, ev.Message)
		}
	})

	if upgrade {
		// With the RollingUpdate strategy the new ztunnel starts beside the old
		// one on each node in turn. (NodeByNode deletes the old pod first: on a
		// real kubelet the node then has no ztunnel until the new pod runs, and
		// connections are refused meanwhile; see docs/api.md.)
		It("upgrades to the next version node by node (RollingUpdate) under steady traffic without a failed request", func(ctx SpecContext) {
			load := startLoad(ctx)
			Eventually(ctx, load.sent).Should(BeNumerically(">=", loadBatch))

			watch := watchZtunnels(ctx, len(nodes))
			_, err := kubectl(ctx, "", "patch", "ambientmesh", meshv1alpha1.MeshName, "--type=merge",
				"-p", fmt.Sprintf(`{"spec":{"version":%q,"ztunnel":{"updateStrategy":"RollingUpdate"}}}`, e.nextVer))
			Expect(err).NotTo(HaveOccurred())
			Eventually(ctx, func(ctx context.Context) error {
				if err := meshReady(ctx); err != nil {
					return err
				}
				var mesh meshv1alpha1.AmbientMesh
				if err := k8s.Get(ctx, client.ObjectKey{Name: meshv1alpha1.MeshName}, &mesh); err != nil {
					return err
				}
				if mesh.Status.Version != e.nextVer {
					return fmt.Errorf("status.version %q, want %q", mesh.Status.Version, e.nextVer)
				}
				return nil
			}).WithTimeout(8 * time.Minute).Should(Succeed())
			Expect(watch.stop()).To(BeNumerically("<=", 1), "at most one node may be without a ready ztunnel at a time")
			expectImagesOf(ctx, e.nextVer)

			// The traffic goes on after the upgrade (two batches more, so at least one
			// whole batch after it); then every request sent is counted.
			after := load.sent()
			Eventually(ctx, load.sent).Should(BeNumerically(">=", after+2*loadBatch))
			totals := load.finish()
			Expect(totals.Failures).To(BeEmpty())
			Expect(totals.Failed).To(BeZero())
			GinkgoWriter.Printf("upgrade under load: %d requests, %d failed\n", totals.Sent, totals.Failed)
		})
	}

	It("leaves no DaemonSet, namespace, CNI entry or in-pod rule behind when the AmbientMesh is deleted", func(ctx SpecContext) {
		_, err := kubectl(ctx, "", "delete", "ambientmesh", meshv1alpha1.MeshName, "--wait=true", "--timeout=3m")
		Expect(err).NotTo(HaveOccurred())
		Eventually(ctx, func(ctx context.Context) error {
			_, err := clientset.CoreV1().Namespaces().Get(ctx, meshv1alpha1.DefaultNamespace, metav1.GetOptions{})
			if !apierrors.IsNotFound(err) {
				return fmt.Errorf("namespace %s still there (%v)", meshv1alpha1.DefaultNamespace, err)
			}
			return nil
		}).Should(Succeed())
		daemonSets, err := clientset.AppsV1().DaemonSets("").List(ctx, metav1.ListOptions{})
		Expect(err).NotTo(HaveOccurred())
		Expect(daemonSets.Items).To(BeEmpty())
		for _, node := range nodes {
			Expect(cniConfigsChaining(node)).To(BeEmpty(), "node %s", node)
			Expect(nodeFile(node, filepath.Join(meshv1alpha1.DefaultCNIBinDir, plugin.Type))).NotTo(BeAnExistingFile())
			expectNoMeshRules(ctx, node)
		}
		// Outside the mesh the connection goes straight from pod to pod, routed and
		// not masqueraded, so the server sees the client pod's own address.
		clientIP := appPods(ctx, "client")[0].Status.PodIP
		Eventually(ctx, func(ctx context.Context) error {
			r, err := echoOK(ctx, "http://server."+appNamespace+"/outside-the-mesh")
			if err == nil && r.IP != clientIP {
				return fmt.Errorf("the server saw source %s, want the client pod's %s", r.IP, clientIP)
			}
			return err
		}).Should(Succeed(), "pods keep working outside the mesh")
		_, err = kubectl(ctx, "", "delete", "namespace", appNamespace, "--wait=true", "--timeout=2m")
		Expect(err).NotTo(HaveOccurred())
	})
}

// applyApp renders testdata/app.yaml with the echo image and
// one server replica per node, and applies it.
func applyApp(ctx context.Context, replicas int) {
	tmpl := template.Must(template.ParseFiles("testdata/app.yaml"))
	var b strings.Builder
	Expect(tmpl.Execute(&b, map[string]any{"Image": e.appImage, "Nodes": replicas})).To(Succeed())
	_, err := kubectl(ctx, b.String(), "apply", "-f", "-")
	Expect(err).NotTo(HaveOccurred())
}

func deploymentAvailable(ns, name string) func(context.Context) error {
	return func(ctx context.Context) error {
		var d appsv1.Deployment
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &d); err != nil {
			return err
		}
		for _, c := range d.Status.Conditions {
			if c.Type == appsv1.DeploymentAvailable && c.Status == corev1.ConditionTrue && d.Status.UpdatedReplicas == d.Status.Replicas {
				return nil
			}
		}
		return fmt.Errorf("deployment %s/%s not available: %+v", ns, name, d.Status)
	}
}

func daemonSetReadyEverywhere(ns, name string, nodes int) func(context.Context) error {
	return func(ctx context.Context) error {
		var ds appsv1.DaemonSet
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &ds); err != nil {
			return err
		}
		if int(ds.Status.NumberReady) != nodes || ds.Status.UpdatedNumberScheduled != ds.Status.DesiredNumberScheduled {
			return fmt.Errorf("daemonset %s/%s: %d of %d nodes ready", ns, name, ds.Status.NumberReady, nodes)
		}
		return nil
	}
}

// webhooksHaveCABundle checks that every webhook served from the operator's
// namespace has a CA bundle (injected by cert-manager's cainjector after make
// deploy, written by the installer after a bundle install).
func webhooksHaveCABundle(ctx context.Context) error {
	var validating admissionregistrationv1.ValidatingWebhookConfigurationList
	if err := k8s.List(ctx, &validating); err != nil {
		return err
	}
	var mutating admissionregistrationv1.MutatingWebhookConfigurationList
	if err := k8s.List(ctx, &mutating); err != nil {
		return err
	}
	var configs []admissionregistrationv1.WebhookClientConfig
	for _, w := range validating.Items {
		for _, h := range w.Webhooks {
			configs = append(configs, h.ClientConfig)
		}
	}
	for _, w := range mutating.Items {
		for _, h := range w.Webhooks {
			configs = append(configs, h.ClientConfig)
		}
	}
	found := 0
	for _, c := range configs {
		if c.Service == nil || c.Service.Namespace != operatorNamespace {
			continue
		}
		found++
		if len(c.CABundle) == 0 {
			return fmt.Errorf("webhook %s%s has no caBundle yet", c.Service.Name, ptr.Deref(c.Service.Path, ""))
		}
	}
	if found == 0 {
		return fmt.Errorf("no webhook configuration of the operator")
	}
	return nil
}

func meshReady(ctx context.Context) error {
	var mesh meshv1alpha1.AmbientMesh
	if err := k8s.Get(ctx, client.ObjectKey{Name: meshv1alpha1.MeshName}, &mesh); err != nil {
		return err
	}
	if !meta.IsStatusConditionTrue(mesh.Status.Conditions, meshv1alpha1.MeshConditionReady) {
		return fmt.Errorf("AmbientMesh not Ready: phase %s, conditions %+v", mesh.Status.Phase, mesh.Status.Conditions)
	}
	return nil
}

// cniConfigsChaining lists the node's CNI config files that name our plugin.
func cniConfigsChaining(node string) []string {
	dir := nodeFile(node, meshv1alpha1.DefaultCNIConfDir)
	entries, err := os.ReadDir(dir)
	Expect(err).NotTo(HaveOccurred())
	var chaining []string
	for _, entry := range entries {
		data, err := os.ReadFile(filepath.Join(dir, entry.Name()))
		Expect(err).NotTo(HaveOccurred())
		if strings.Contains(string(data), `"`+plugin.Type+`"`) {
			chaining = append(chaining, entry.Name())
		}
	}
	return chaining
}

// dumpState prints what a reader of a failure needs: pods, events, and the
// mesh's status.
func dumpState(ctx context.Context) {
	for _, args := range [][]string{
		{"get", "pods", "-A", "-o", "wide"},
		{"get", "events", "-A", "--sort-by=.lastTimestamp"},
		{"get", "ambientmesh", "-o", "yaml"},
		{"-n", meshv1alpha1.DefaultNamespace, "logs", "ds/ztunnel", "--tail=30"},
		{"-n", meshv1alpha1.DefaultNamespace, "logs", "ds/ambientmesh-cni", "--tail=30"},
		{"-n", operatorNamespace, "logs", "deploy/" + operatorName, "--tail=30"},
	} {
		out, err := kubectl(ctx, "", args...)
		GinkgoWriter.Printf("kubectl %s:\n%s%v\n", strings.Join(args, " "), out, err)
	}
}

// denyClientPolicy is an L4 DENY, enforced by the destination's ztunnel, of
// everything from the client's service account.
const denyClientPolicy = `apiVersion: mesh.ambientmesh.dev/v1alpha1
kind: MeshPolicy
metadata: {name: deny-client, namespace: shop}
spec:
  action: DENY
  rules:
  - from:
    - serviceAccounts: [shop/client]
`

// expectMutualTLS sends a request with a unique path and header from the
// client pod to url while every node's traffic is captured, and checks that
// a server pod answered it having seen both, that no node saw them in
// plaintext, and that a destination ztunnel counted a mutual-TLS connection
// from the client's identity.
//
// The server sees the connection come from its own pod address: the
// destination ztunnel dials the app from inside the server pod (the mesh does
// not keep the client's address, docs/security.md). So the source address
// also shows the request came through that ztunnel, not straight from the
// client or the node.
func expectMutualTLS(ctx context.Context, nodes []string, url string) {
	before := clientConnections(ctx, nodes)
	secret := fmt.Sprintf("secret-%d", time.Now().UnixNano())
	var captures []*capture
	for _, node := range nodes {
		captures = append(captures, startCapture(node))
	}
	var r *echoResponse
	Eventually(ctx, func(ctx context.Context) (err error) {
		r, err = echoOK(ctx, url+"/"+secret, "X-Shop-Check:"+secret)
		return err
	}).Should(Succeed())
	Expect(r.Hostname).To(HavePrefix("server-"))
	Expect(r.URL).To(Equal("/" + secret))
	Expect(r.Headers.Get("X-Shop-Check")).To(Equal(secret))
	server, err := clientset.CoreV1().Pods(appNamespace).Get(ctx, r.Hostname, metav1.GetOptions{})
	Expect(err).NotTo(HaveOccurred())
	Expect(r.IP).To(Equal(server.Status.PodIP), "the source address %s server %s saw is not its own (the ztunnel in its pod)", r.IP, server.Name)
	for i, c := range captures {
		text := c.stop()
		Expect(text).NotTo(ContainSubstring(secret), "node %s carried the request in plaintext", nodes[i])
	}
	Eventually(ctx, func(ctx context.Context) float64 { return clientConnections(ctx, nodes) }).
		Should(BeNumerically(">", before), "no destination ztunnel counted a mutual-TLS connection from shop/client")
}

// clientConnections sums, over the nodes' ztunnels, the connections they
// accepted as destination from the client's SPIFFE identity over mutual TLS.
func clientConnections(ctx context.Context, nodes []string) float64 {
	total := 0.0
	for _, node := range nodes {
		text, err := ztunnelMetrics(ctx, node)
		Expect(err).NotTo(HaveOccurred())
		for _, line := range localmesh.MetricLines(text, "istio_tcp_connections_opened_total",
			`reporter="destination"`, `source_principal="spiffe://cluster.local/ns/shop/sa/client"`,
			`connection_security_policy="mutual_tls"`) {
			fields := strings.Fields(line)
			v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
			Expect(err).NotTo(HaveOccurred())
			total += v
		}
	}
	return total
}

// killContainer kills a pod's container through its node's containerd, as
// a crash would, so that the kubelet restarts it in the same pod sandbox.
func killContainer(ctx context.Context, pod corev1.Pod) {
	Expect(pod.Status.ContainerStatuses).To(HaveLen(1))
	id := strings.TrimPrefix(pod.Status.ContainerStatuses[0].ContainerID, "containerd://")
	socket := filepath.Join(e.stateDir, "nodes", pod.Spec.NodeName, "containerd", "containerd.sock")
	out, err := exec.CommandContext(ctx, "ctr", "--address", socket, "-n", "k8s.io", "tasks", "kill", "-s", "SIGKILL", id).CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), "%s", out)
}

// expectNoMeshRules checks every pod network namespace of the node for the
// CNI agent's redirection rules (iptables chains AMBIENT-*, nftables table
// ambientmesh).
func expectNoMeshRules(ctx context.Context, node string) {
	entries, err := os.ReadDir(nodeFile(node, "/run/netns"))
	Expect(err).NotTo(HaveOccurred())
	for _, entry := range entries {
		ipt, err := nodeExec(ctx, node, "ip", "netns", "exec", entry.Name(), "iptables-save")
		Expect(err).NotTo(HaveOccurred())
		nft, err := nodeExec(ctx, node, "ip", "netns", "exec", entry.Name(), "nft", "list", "ruleset")
		Expect(err).NotTo(HaveOccurred())
		Expect(ipt).NotTo(ContainSubstring("AMBIENT-"), "node %s, pod netns %s", node, entry.Name())
		Expect(nft).NotTo(ContainSubstring("ambientmesh"), "node %s, pod netns %s", node, entry.Name())
	}
}

// expectImagesOf checks that every mesh pod runs an image of version.
func expectImagesOf(ctx context.Context, version string) {
	pods, err := clientset.CoreV1().Pods(meshv1alpha1.DefaultNamespace).List(ctx, metav1.ListOptions{})
	Expect(err).NotTo(HaveOccurred())
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		for _, c := range p.Spec.Containers {
			Expect(c.Image).To(HaveSuffix(":"+version), "pod %s runs %s", p.Name, c.Image)
		}
	}
}

// expectOperatorGone checks that nothing of the operator is left: its
// namespace, its CRDs, its webhook configurations.
func expectOperatorGone(ctx context.Context) {
	_, err := clientset.CoreV1().Namespaces().Get(ctx, operatorNamespace, metav1.GetOptions{})
	Expect(apierrors.IsNotFound(err)).To(BeTrue(), "namespace %s: %v", operatorNamespace, err)
	var crds apiextensionsv1.CustomResourceDefinitionList
	Expect(k8s.List(ctx, &crds)).To(Succeed())
	for _, crd := range crds.Items {
		Expect(crd.Spec.Group).NotTo(Equal(meshv1alpha1.GroupVersion.Group))
	}
	Expect(webhooksHaveCABundle(ctx)).To(MatchError(ContainSubstring("no webhook configuration")))
}

// appPodsReady checks that every pod of the test application is Ready.
func appPodsReady(ctx context.Context) error {
	for _, p := range append(appPods(ctx, "server"), appPods(ctx, "client")...) {
		if len(p.Status.ContainerStatuses) != 1 || !p.Status.ContainerStatuses[0].Ready {
			return fmt.Errorf("pod %s is not ready: %+v", p.Name, p.Status.ContainerStatuses)
		}
	}
	return nil
}

// removeLeftovers deletes, in the order that lets the operator finish its
// work, whatever a failed spec left: the mesh, the app namespace, then the
// operator (uninstall). It makes the next container start from a cluster with
// no operator, whatever happened in this one.
func removeLeftovers(ctx context.Context, uninstall func(context.Context)) {
	for _, args := range [][]string{
		{"delete", "ambientmesh", meshv1alpha1.MeshName, "--ignore-not-found", "--timeout=3m"},
		{"delete", "namespace", appNamespace, "--ignore-not-found", "--timeout=2m"},
	} {
		if _, err := kubectl(ctx, "", args...); err != nil {
			GinkgoWriter.Printf("cleanup: %v\n", err)
		}
	}
	uninstall(ctx)
}

// denyAdminPolicy is an L7 DENY of /admin on the server Service, which only a
// waypoint can enforce.
const denyAdminPolicy = `apiVersion: mesh.ambientmesh.dev/v1alpha1
kind: MeshPolicy
metadata: {name: deny-admin, namespace: shop}
spec:
  targetRefs:
  - kind: Service
    name: server
  action: DENY
  rules:
  - to:
    - paths:
      - prefix: /admin
`

func waypointReady(ctx context.Context) error {
	var w meshv1alpha1.Waypoint
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: appNamespace, Name: "waypoint"}, &w); err != nil {
		return err
	}
	if !meta.IsStatusConditionTrue(w.Status.Conditions, meshv1alpha1.WaypointConditionReady) {
		return fmt.Errorf("waypoint not Ready: %+v", w.Status.Conditions)
	}
	return nil
}

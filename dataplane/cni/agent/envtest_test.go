package agent

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/dataplane/cni/rules"
	"github.com/ambientmesh/ambient-operator/dataplane/cni/wire"
	"github.com/ambientmesh/ambient-operator/internal/netnstest"
	"github.com/ambientmesh/ambient-operator/test/testenv"
)

var (
	envCfg    *rest.Config
	k8s       client.Client
	testEnv   *envtest.Environment
	nodeName  = "node-a"
	envLogger logr.Logger
	// podNetnsDir is the agent's netns dir in this suite: links to the
	// suite's own pod namespaces only. The host's /var/run/netns also holds
	// every other test's namespaces (go test runs packages in parallel), and
	// UninstallNode removes the capture of every namespace it finds there:
	// it stripped the rules test's pods between their Install and Check.
	podNetnsDir string
)

// TestAgentAgainstAPIServer runs the agent against a real kube-apiserver
// (envtest binaries built by `make tools`) with pods backed by real netns.
func TestAgentAgainstAPIServer(t *testing.T) {
	if testing.Short() {
		t.Skip("envtest suite: skipped in -short mode, run by make test")
	}
	netnstest.RequireRoot(t)
	RegisterFailHandler(Fail)
	RunSpecs(t, "CNI agent against a real apiserver")
}

var _ = BeforeSuite(func() {
	envLogger = zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true))
	logf.SetLogger(envLogger)
	var err error
	// Only core kinds are needed: the shared harness's binaries, no CRDs.
	assets, err := testenv.AssetsDir()
	Expect(err).NotTo(HaveOccurred())
	testEnv = &envtest.Environment{BinaryAssetsDirectory: assets}
	envCfg, err = testEnv.Start()
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() { Expect(testEnv.Stop()).To(Succeed()) })
	k8s, err = client.New(envCfg, client.Options{})
	Expect(err).NotTo(HaveOccurred())
	podNetnsDir, err = os.MkdirTemp("", "agent-netns")
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(os.RemoveAll, podNetnsDir)
})

// runningAgent is one agent process-equivalent, stoppable.
type runningAgent struct {
	*Agent
	cancel context.CancelFunc
	done   chan error
}

func startAgent(backend, ztSocket, dir string, host *netnstest.NS) *runningAgent {
	a, err := New(envCfg, Options{
		NodeName: nodeName, Backend: backend, PodConfig: rules.DefaultPodConfig(),
		ZtunnelSocket: ztSocket, CNISocket: filepath.Join(dir, "agent.sock"), StateFile: filepath.Join(dir, "enrollment.json"),
		NetnsDirs: []string{podNetnsDir}, HostNetns: host.Path,
		MetricsAddr: "0", ProbeAddr: "0", Resync: time.Minute,
		Registry: prometheus.NewRegistry(), Log: envLogger.WithName("agent"),
	})
	Expect(err).NotTo(HaveOccurred())
	ctx, cancel := context.WithCancel(context.Background())
	r := &runningAgent{Agent: a, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- a.Start(ctx) }()
	return r
}

func (r *runningAgent) stop() {
	r.cancel()
	Eventually(r.done, 30*time.Second).Should(Receive(BeNil()))
}

type podWithNetns struct {
	pod *corev1.Pod
	ns  *netnstest.NS
	ip  string
}

// runningPod plays the kubelet: a netns linked to the node, and a Pod
// object bound to this node whose status carries the netns's IP.
func runningPod(node *netnstest.NS, namespace, name string, subnet int, labels map[string]string) podWithNetns {
	return newPod(node, namespace, name, subnet, labels, true)
}

// newPod is runningPod, or with running=false a pod whose sandbox is being
// created: netns wired, but no IP in its status yet (CNI ADD time).
func newPod(node *netnstest.NS, namespace, name string, subnet int, labels map[string]string, running bool) podWithNetns {
	t := GinkgoT()
	podNS := netnstest.New(t, "epod")
	// The link dangles once the namespace is deleted; the agent skips it.
	Expect(os.Symlink(podNS.Path, filepath.Join(podNetnsDir, podNS.Name))).To(Succeed())
	ip := fmt.Sprintf("10.252.%d.2", subnet)
	netnstest.Veth(t, node, fmt.Sprintf("10.252.%d.1/24", subnet), podNS, ip+"/24")
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: labels},
		Spec: corev1.PodSpec{NodeName: nodeName, ServiceAccountName: "web",
			Containers: []corev1.Container{{Name: "app", Image: "app"}}},
	}
	Expect(k8s.Create(context.Background(), pod)).To(Succeed())
	if !running {
		DeferCleanup(func() { _ = k8s.Delete(context.Background(), pod, client.GracePeriodSeconds(0)) })
		return podWithNetns{pod: pod, ns: podNS, ip: ip}
	}
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}
	Expect(k8s.Status().Update(context.Background(), pod)).To(Succeed())
	DeferCleanup(func() { _ = k8s.Delete(context.Background(), pod, client.GracePeriodSeconds(0)) })
	return podWithNetns{pod: pod, ns: podNS, ip: ip}
}

func setLabel(obj client.Object, value string) {
	ctx := context.Background()
	Expect(k8s.Get(ctx, client.ObjectKeyFromObject(obj), obj)).To(Succeed())
	labels := obj.GetLabels()
	if labels == nil {
		labels = map[string]string{}
	}
	if value == "" {
		delete(labels, meshv1.LabelDataplaneMode)
	} else {
		labels[meshv1.LabelDataplaneMode] = value
	}
	obj.SetLabels(labels)
	Expect(k8s.Update(ctx, obj)).To(Succeed())
}

func annotation(p *corev1.Pod) func() string {
	return func() string {
		got := &corev1.Pod{}
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(p), got); err != nil {
			return "error: " + err.Error()
		}
		return got.Annotations[meshv1.AnnotationStatus]
	}
}

// captured is the user's check: rules in the netns, ztunnel holds the
// pod's netns, the pod is annotated.
func expectCaptured(backend rules.Rules, zt *fakeZtunnel, p podWithNetns) {
	GinkgoHelper()
	Eventually(func() error { return backend.Check(p.ns.Path, rules.DefaultPodConfig()) }, 20*time.Second, 100*time.Millisecond).Should(Succeed())
	Eventually(func() uint64 { w, _ := zt.get(string(p.pod.UID)); return w.inode }, 10*time.Second).Should(Equal(inode(GinkgoT(), p.ns.Path)))
	Eventually(annotation(p.pod), 10*time.Second).Should(Equal(meshv1.StatusEnrolled))
}

func expectReleased(backend rules.Rules, zt *fakeZtunnel, p podWithNetns, rulesetBefore string) {
	GinkgoHelper()
	// ztunnel is told last, after the rules are gone: wait for that, then
	// the pod's ruleset must read exactly as before it was enrolled.
	Eventually(func() bool { return zt.Has(string(p.pod.UID)) }, 20*time.Second).Should(BeFalse())
	Expect(backend.Check(p.ns.Path, rules.DefaultPodConfig())).To(MatchError(rules.ErrNotInstalled))
	Expect(p.ns.Ruleset(GinkgoT())).To(Equal(rulesetBefore))
	Eventually(annotation(p.pod), 10*time.Second).Should(BeEmpty())
}

var _ = Describe("the CNI node agent", func() {
	for i, backendName := range []string{rules.BackendIPTables, rules.BackendNFTables} {
		It("captures and releases running pods as labels change, and survives its restart ("+backendName+")", func(ctx SpecContext) {
			t := GinkgoT()
			backend, _ := rules.New(backendName)
			node := netnstest.New(t, "enode")
			dir, err := os.MkdirTemp("", "agent")
			Expect(err).NotTo(HaveOccurred())
			DeferCleanup(os.RemoveAll, dir)
			zt := startFakeZtunnel(t, 0)

			nsName := fmt.Sprintf("shop-%d", i)
			namespace := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: nsName}}
			Expect(k8s.Create(ctx, namespace)).To(Succeed())
			web := runningPod(node, nsName, "web", 10*i+1, nil)
			api := runningPod(node, nsName, "api", 10*i+2, nil)
			webBefore, apiBefore := web.ns.Ruleset(t), api.ns.Ruleset(t)

			agent := startAgent(backendName, zt.Socket, dir, node)
			DeferCleanup(func() { agent.cancel() })
			Eventually(agent.Ztunnel.Connected, 20*time.Second).Should(BeTrue())
			Consistently(func() bool { return zt.Has(string(web.pod.UID)) }, 2*time.Second).Should(BeFalse(), "unlabeled namespace captured")
			Expect(backend.Check(web.ns.Path, rules.DefaultPodConfig())).To(MatchError(rules.ErrNotInstalled))

			By("labeling the namespace: both running pods are captured without a restart")
			setLabel(namespace, meshv1.DataplaneModeAmbient)
			expectCaptured(backend, zt, web)
			expectCaptured(backend, zt, api)
			Eventually(func() bool {
				s, err := wire.ReadState(filepath.Join(dir, "enrollment.json"))
				return err == nil && s.Enrolled(nsName, "web")
			}, 10*time.Second).Should(BeTrue(), "state file for the plugin")
			Expect(node.Run(t, "iptables-save", "-t", "nat")+node.Run(t, "nft", "list", "ruleset")).To(ContainSubstring(web.ip), "probe SNAT on the node")

			By("a new pod's CNI ADD: captured before the runtime gets the answer")
			fresh := newPod(node, nsName, "fresh", 10*i+3, nil, false)
			freshBefore := fresh.ns.Ruleset(t)
			resp := postCNI(filepath.Join(dir, "agent.sock"), &wire.Request{Command: wire.CommandAdd, ContainerID: "c-fresh",
				Netns: fresh.ns.Path, IfName: "eth0", PodName: "fresh", PodNamespace: nsName, IPs: []string{fresh.ip}})
			Expect(resp).To(Equal(&wire.Response{Enrolled: true}))
			Expect(backend.Check(fresh.ns.Path, rules.DefaultPodConfig())).To(Succeed(), "rules must be in place when ADD returns")
			Expect(zt.Has(string(fresh.pod.UID))).To(BeTrue(), "ztunnel must hold the pod when ADD returns")
			Expect(agent.ready(nil)).To(Succeed())
			Expect(k8s.Delete(ctx, fresh.pod, client.GracePeriodSeconds(0))).To(Succeed())
			resp = postCNI(filepath.Join(dir, "agent.sock"), &wire.Request{Command: wire.CommandDel, ContainerID: "c-fresh",
				Netns: fresh.ns.Path, PodName: "fresh", PodNamespace: nsName})
			Expect(resp.Error).To(BeEmpty())
			expectReleasedGone(backend, zt, fresh, freshBefore)

			By("opting one pod out")
			setLabel(api.pod, meshv1.DataplaneModeNone)
			expectReleased(backend, zt, api, apiBefore)
			Expect(backend.Check(web.ns.Path, rules.DefaultPodConfig())).To(Succeed())

			By("restarting the agent: no pod loses capture, ztunnel gets the replay")
			webRules := web.ns.Ruleset(t)
			snapshots := zt.srv.SnapshotsReceived()
			var gaps atomic.Int32
			watchCtx, stopWatch := context.WithCancel(ctx)
			watched := make(chan struct{})
			go func() {
				defer close(watched)
				for watchCtx.Err() == nil {
					if backend.Check(web.ns.Path, rules.DefaultPodConfig()) != nil || !zt.Has(string(web.pod.UID)) {
						gaps.Add(1)
					}
					time.Sleep(20 * time.Millisecond) // sampling: a lapse longer than this is seen
				}
			}()
			agent.stop()
			agent = startAgent(backendName, zt.Socket, dir, node)
			Eventually(zt.srv.SnapshotsReceived, 30*time.Second).Should(BeNumerically(">", snapshots))
			Eventually(agent.Enroller.UIDs, 10*time.Second).Should(ContainElement(string(web.pod.UID)))
			stopWatch()
			<-watched
			Expect(gaps.Load()).To(BeZero(), "capture or ztunnel's hold on the pod lapsed during the restart")
			Expect(web.ns.Ruleset(t)).To(Equal(webRules), "restart rewrote the pod's rules")
			Expect(zt.Has(string(api.pod.UID))).To(BeFalse(), "opted-out pod came back after restart")

			By("opting the pod back in with its own label, then unlabeling the namespace")
			setLabel(api.pod, meshv1.DataplaneModeAmbient)
			expectCaptured(backend, zt, api)
			setLabel(namespace, "")
			expectReleased(backend, zt, web, webBefore)
			Consistently(func() error { return backend.Check(api.ns.Path, rules.DefaultPodConfig()) }, time.Second).Should(Succeed(), "pod label keeps it in")

			By("deleting the pod: it is released")
			Expect(k8s.Delete(ctx, api.pod, client.GracePeriodSeconds(0))).To(Succeed())
			expectReleasedGone(backend, zt, api, apiBefore)

			By("a pod whose netns cannot be found gets a warning event")
			setLabel(namespace, meshv1.DataplaneModeAmbient)
			ghost := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: nsName, Name: "ghost"},
				Spec: corev1.PodSpec{NodeName: nodeName, Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
			Expect(k8s.Create(ctx, ghost)).To(Succeed())
			ghost.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: fmt.Sprintf("10.252.%d.200", 10*i+9)}
			Expect(k8s.Status().Update(ctx, ghost)).To(Succeed())
			Eventually(func() []string {
				var evs eventsv1.EventList
				_ = k8s.List(ctx, &evs, client.InNamespace(nsName))
				var reasons []string
				for _, e := range evs.Items {
					if e.Regarding.Name == "ghost" {
						reasons = append(reasons, e.Reason)
					}
				}
				return reasons
			}, 20*time.Second).Should(ContainElement("NetnsNotFound"))

			agent.stop()
			Expect(UninstallNode(Options{StateFile: filepath.Join(dir, "enrollment.json"), NetnsDirs: []string{podNetnsDir}, HostNetns: node.Path}, envLogger)).To(Succeed())
			Expect(web.ns.Ruleset(t)).To(Equal(webBefore))
			Expect(node.Run(t, "nft", "list", "ruleset")).NotTo(ContainSubstring("ambientmesh"))
		}, SpecTimeout(3*time.Minute))
	}
})

func expectReleasedGone(backend rules.Rules, zt *fakeZtunnel, p podWithNetns, rulesetBefore string) {
	GinkgoHelper()
	// ztunnel is told last, after the rules are gone: wait for that, then
	// the pod's ruleset must read exactly as before it was enrolled.
	Eventually(func() bool { return zt.Has(string(p.pod.UID)) }, 20*time.Second).Should(BeFalse())
	Expect(backend.Check(p.ns.Path, rules.DefaultPodConfig())).To(MatchError(rules.ErrNotInstalled))
	Expect(p.ns.Ruleset(GinkgoT())).To(Equal(rulesetBefore))
	err := k8s.Get(context.Background(), client.ObjectKeyFromObject(p.pod), &corev1.Pod{})
	Expect(apierrors.IsNotFound(err)).To(BeTrue())
}

// postCNI sends what the plugin sends, over the agent's socket.
func postCNI(socket string, req *wire.Request) *wire.Response {
	GinkgoHelper()
	body, err := req.Encode()
	Expect(err).NotTo(HaveOccurred())
	c := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		}}}
	httpResp, err := c.Post("http://agent"+wire.Path, "application/json", bytes.NewReader(body))
	Expect(err).NotTo(HaveOccurred())
	defer httpResp.Body.Close()
	data, err := io.ReadAll(httpResp.Body)
	Expect(err).NotTo(HaveOccurred())
	Expect(httpResp.StatusCode).To(Equal(http.StatusOK), string(data))
	resp, err := wire.DecodeResponse(bytes.TrimSpace(data))
	Expect(err).NotTo(HaveOccurred())
	return resp
}

package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/dataplane/cni/rules"
	"github.com/ambientmesh/ambient-operator/dataplane/cni/wire"
	"github.com/ambientmesh/ambient-operator/internal/netnstest"
)

// A dual-stack pod on a node whose IPv6 traffic cannot be captured (here:
// no ip6tables binary) is refused, never captured over IPv4 alone: the CNI
// ADD fails and the reconciler reports CaptureFailed, both naming IPv6, the
// failures are counted, and the pod's netns is left as it was. Once
// ip6tables is back, the same pod is captured and annotated.
func TestDualStackPodIsRefusedWhenIPv6CannotBeCaptured(t *testing.T) {
	netnstest.RequireRoot(t)
	node, podNS := netnstest.New(t, "inode"), netnstest.New(t, "ipod")
	podIf, _ := netnstest.Veth(t, podNS, "10.253.0.2/24", node, "10.253.0.1/24")
	podNS.Run(t, "ip", "addr", "add", "fd00:253::2/64", "dev", podIf, "nodad")
	netnsDir := t.TempDir()
	if err := os.Symlink(podNS.Path, filepath.Join(netnsDir, "pod")); err != nil {
		t.Fatal(err)
	}
	rulesetBefore := podNS.Ruleset(t) + podNS.Run(t, "ip6tables-save")

	shop := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{meshv1.LabelDataplaneMode: meshv1.DataplaneModeAmbient}}}
	pod := testPod("shop", "web", "uid-web", nil)
	pod.Status.Phase = corev1.PodRunning
	pod.Status.PodIPs = []corev1.PodIP{{IP: "10.253.0.2"}, {IP: "fd00:253::2"}}
	c := fake.NewClientBuilder().WithObjects(shop, pod).Build()

	backend, _ := rules.New(rules.BackendIPTables)
	metrics := NewMetrics(prometheus.NewRegistry())
	enroller := &Enroller{Rules: backend, PodConfig: rules.DefaultPodConfig(), HostNetns: node.Path,
		Ztunnel: &Ztunnel{Log: testr.New(t)}, Metrics: metrics, Log: testr.New(t)}
	srv := &CNIServer{Enroller: enroller, Cache: c, Log: testr.New(t)}
	recorder := events.NewFakeRecorder(10)
	rec := &PodReconciler{Client: c, Enroller: enroller, Finder: &NetnsFinder{Dirs: []string{netnsDir}},
		Recorder: recorder, StateFile: filepath.Join(t.TempDir(), "enrollment.json")}
	req := reconcile.Request{NamespacedName: client.ObjectKeyFromObject(pod)}

	t.Run("without ip6tables", func(t *testing.T) {
		t.Setenv("PATH", netnstest.IPTablesPathWithout(t, "ip6tables"))
		resp, err := srv.handle(context.Background(), &wire.Request{Command: wire.CommandAdd, ContainerID: "c1",
			Netns: podNS.Path, PodName: "web", PodNamespace: "shop", IPs: []string{"10.253.0.2", "fd00:253::2"}})
		if err != nil || !resp.Enrolled || !strings.Contains(resp.Error, "capturing IPv6") {
			t.Fatalf("CNI ADD answer = %+v, %v; want enrolled with an error about IPv6 (the plugin fails ADD with it)", resp, err)
		}
		if _, err := rec.Reconcile(context.Background(), req); err == nil {
			t.Fatal("Reconcile captured a pod whose IPv6 traffic cannot be captured")
		}
		select {
		case e := <-recorder.Events:
			if !strings.HasPrefix(e, "Warning CaptureFailed") || !strings.Contains(e, "capturing IPv6") {
				t.Fatalf("event %q, want a CaptureFailed warning naming IPv6", e)
			}
		default:
			t.Fatal("no event on the pod")
		}
	})
	if got := metricValue(metrics.Failures.WithLabelValues("rules")); got != 2 {
		t.Fatalf("ambient_cni_failures_total{stage=rules} = %v, want 2 (CNI ADD and reconcile)", got)
	}
	if got := metricValue(metrics.EnrolledPods); got != 0 {
		t.Fatalf("ambient_cni_enrolled_pods = %v, want 0", got)
	}
	if got := podNS.Ruleset(t) + podNS.Run(t, "ip6tables-save"); got != rulesetBefore {
		t.Fatalf("the refused pod's rules changed:\n%s\nbefore:\n%s", got, rulesetBefore)
	}
	if err := backend.Check(podNS.Path, rules.DefaultPodConfig()); !errors.Is(err, rules.ErrNotInstalled) {
		t.Fatalf("Check of the refused pod = %v, want ErrNotInstalled", err)
	}
	if annotated(t, c, pod) {
		t.Fatal("the refused pod is annotated as enrolled")
	}

	// ip6tables is back: the next pass captures both versions.
	if _, err := rec.Reconcile(context.Background(), req); err != nil {
		t.Fatalf("Reconcile with ip6tables: %v", err)
	}
	if err := backend.Check(podNS.Path, rules.DefaultPodConfig()); err != nil {
		t.Fatalf("rules after capture: %v", err)
	}
	if !annotated(t, c, pod) {
		t.Fatal("the captured pod is not annotated")
	}
	host := node.Run(t, "ip6tables-save", "-t", "nat")
	if !strings.Contains(host, "fd00:253::2/128") || !strings.Contains(host, rules.DefaultProbeSourceIPv6.String()) {
		t.Fatalf("no IPv6 probe SNAT for the pod on the node:\n%s", host)
	}
	if err := enroller.Unenroll("uid-web"); err != nil {
		t.Fatal(err)
	}
}

func annotated(t *testing.T, c client.Client, pod *corev1.Pod) bool {
	t.Helper()
	var got corev1.Pod
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(pod), &got); err != nil {
		t.Fatal(err)
	}
	return got.Annotations[meshv1.AnnotationStatus] == meshv1.StatusEnrolled
}

package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ambientmesh/ambient-operator/internal/testwait"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controllers/ambientmesh/manifests"
	"github.com/ambientmesh/ambient-operator/internal/meshscheme"
	"github.com/ambientmesh/ambient-operator/test/testenv"
)

// The application pods of the operator benchmark are spread over operatorBenchNamespaces
// namespaces; every other one is enrolled in the mesh.
const operatorBenchNamespaces = 20

// BenchmarkOperator10kPods runs the real cmd/operator binary against the envtest API
// server (with cert-manager), creates the AmbientMesh, then 10,000 application pods in
// 20 namespaces (half of them enrolled), and reports as the last line of its output:
//
//	operator_rss_mb_10k_pods: the operator process's peak resident set size, sampled from
//	  its start until it has settled.
//
// Settled means the operator has seen the last pod created: after the 10,000 pods, the
// benchmark creates a ready ztunnel pod of the mesh's DaemonSet (envtest runs no kubelet)
// and waits until the mesh status counts it in status.components.ztunnel.updated. Pods
// arrive on one ordered watch, so the operator has then received every earlier pod too.
func BenchmarkOperator10kPods(b *testing.B) {
	for range b.N {
		runOperatorBench(b)
	}
}

func runOperatorBench(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs, err := os.CreateTemp("", "bench-operator-*.log")
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = logs.Close() }()
	b.Logf("cert-manager and operator logs: %s", logs.Name())

	env, err := testenv.New()
	if err != nil {
		b.Fatal(err)
	}
	// Enough headroom to create thousands of pods quickly.
	env.ControlPlane.GetAPIServer().Configure().Set("max-requests-inflight", "2000").Set("max-mutating-requests-inflight", "1000")
	cfg, err := env.Start()
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = env.Stop() }()
	cfg.QPS, cfg.Burst = 2000, 4000
	stopCertManager, err := testenv.StartCertManager(ctx, cfg, testenv.WithCertManagerLogs(logs))
	if err != nil {
		b.Fatal(err)
	}
	defer stopCertManager()
	clientset, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		b.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: meshscheme.New()})
	if err != nil {
		b.Fatal(err)
	}

	kubeconfig := filepath.Join(b.TempDir(), "kubeconfig")
	if err := testenv.WriteKubeconfig(cfg, kubeconfig); err != nil {
		b.Fatal(err)
	}
	operator := startOperator(ctx, b, kubeconfig, logs)
	defer stopProcess(operator)
	stopRSS := sampleRSS(operator.Process.Pid)
	idle := vmRSS(operator.Process.Pid)

	mesh := &meshv1.AmbientMesh{ObjectMeta: metav1.ObjectMeta{Name: meshv1.MeshName}}
	if err := c.Create(ctx, mesh); err != nil {
		b.Fatal(err)
	}
	hash := ztunnelTemplateHash(ctx, b, c)

	b.ResetTimer()
	createOperatorBenchPods(ctx, b, clientset)
	createReadyZTunnelPod(ctx, b, clientset, hash)
	waitForZTunnelCounted(ctx, b, c)
	b.StopTimer()
	rss := stopRSS()

	b.Logf("operator RSS before the mesh and the pods: %.0f MB", float64(idle)/1024/1024)
	fmt.Printf("operator_rss_mb_10k_pods: %.0f\n", float64(rss)/1024/1024)
}

// startOperator builds cmd/operator and runs it (no webhooks, no leader election,
// no metrics) until its readiness probe answers.
func startOperator(ctx context.Context, b *testing.B, kubeconfig string, logs *os.File) *exec.Cmd {
	root, err := testenv.RepoRoot()
	if err != nil {
		b.Fatal(err)
	}
	bin := filepath.Join(b.TempDir(), "operator")
	build := exec.Command("go", "build", "-o", bin, "./cmd/operator")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build operator: %v\n%s", err, out)
	}
	probePort := freePort(b)
	cmd := exec.CommandContext(ctx, bin,
		"--kubeconfig="+kubeconfig, "--enable-webhooks=false", "--leader-elect=false",
		"--metrics-bind-address=0", "--health-probe-bind-address=127.0.0.1:"+strconv.Itoa(probePort),
		"--zap-log-level=info")
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	err = testwait.UntilContext(ctx, 2*time.Minute, func() error { return httpOK("http://127.0.0.1:" + strconv.Itoa(probePort) + "/readyz") })
	if err != nil {
		stopProcess(cmd)
		b.Fatalf("operator not ready: %v; see %s", err, logs.Name())
	}
	return cmd
}

// ztunnelTemplateHash waits for the operator to create the ztunnel DaemonSet and
// returns its pod template's hash, which an up-to-date ztunnel pod carries.
func ztunnelTemplateHash(ctx context.Context, b *testing.B, c client.Client) string {
	var hash string
	err := testwait.UntilContext(ctx, 2*time.Minute, func() error {
		ds := &appsv1.DaemonSet{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: meshv1.DefaultNamespace, Name: manifests.ZTunnelName}, ds); err != nil {
			return err
		}
		if hash = ds.Spec.Template.Annotations[manifests.AnnotationTemplateHash]; hash == "" {
			return fmt.Errorf("no %s annotation on its pod template", manifests.AnnotationTemplateHash)
		}
		return nil
	})
	if err != nil {
		b.Fatalf("ztunnel DaemonSet: %v", err)
	}
	return hash
}

// createOperatorBenchPods creates the namespaces and the application pods with several
// workers.
func createOperatorBenchPods(ctx context.Context, b *testing.B, cs *kubernetes.Clientset) {
	namespace := func(i int) string { return fmt.Sprintf("app-%02d", i%operatorBenchNamespaces) }
	for i := range operatorBenchNamespaces {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace(i)}}
		if i%2 == 0 {
			ns.Labels = map[string]string{meshv1.LabelDataplaneMode: meshv1.DataplaneModeAmbient}
		}
		if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	next := atomic.Int64{}
	var wg sync.WaitGroup
	errs := make(chan error, creators)
	for range creators {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= pods {
					return
				}
				pod := &corev1.Pod{
					ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("app-%05d", i), Labels: map[string]string{"app": "bench"}},
					Spec: corev1.PodSpec{ServiceAccountName: "app", NodeName: fmt.Sprintf("node-%02d", i%50),
						Containers: []corev1.Container{{Name: "app", Image: "app", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 80}}}}},
				}
				if _, err := cs.CoreV1().Pods(namespace(i)).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

// createReadyZTunnelPod plays the DaemonSet controller and the kubelet for one node: a
// ztunnel pod on the current template, Ready.
func createReadyZTunnelPod(ctx context.Context, b *testing.B, cs *kubernetes.Clientset, hash string) {
	labels := manifests.MeshLabels(meshv1.MeshName)
	labels[manifests.LabelName] = manifests.ZTunnelName
	pod, err := cs.CoreV1().Pods(meshv1.DefaultNamespace).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "ztunnel-bench", Labels: labels,
			Annotations: map[string]string{manifests.AnnotationTemplateHash: hash}},
		Spec: corev1.PodSpec{NodeName: "node-00", Containers: []corev1.Container{{Name: "ztunnel", Image: "ztunnel"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		b.Fatal(err)
	}
	pod.Status.Phase = corev1.PodRunning
	pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	if _, err := cs.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		b.Fatal(err)
	}
}

// waitForZTunnelCounted waits until the mesh status counts the ztunnel pod as updated.
func waitForZTunnelCounted(ctx context.Context, b *testing.B, c client.Client) {
	err := testwait.UntilContext(ctx, 10*time.Minute, func() error {
		mesh := &meshv1.AmbientMesh{}
		if err := c.Get(ctx, client.ObjectKey{Name: meshv1.MeshName}, mesh); err != nil {
			return err
		}
		if n := mesh.Status.Components.ZTunnel.Updated; n != 1 {
			return fmt.Errorf("%d ztunnel pods counted as updated", n)
		}
		return nil
	})
	if err != nil {
		b.Fatalf("the operator did not count the ztunnel pod: %v", err)
	}
}

// Package lifecycle tests the AmbientMesh controller on real parts: a real
// kube-apiserver and etcd (envtest), the real cert-manager controller, and
// the operator's controller in a real controller-runtime manager. There is
// no kubelet or kube-controller-manager, so fakeCluster (cluster_test.go)
// plays the Deployment and DaemonSet controllers, the kubelet and the
// garbage collector through the stand-in the local mesh shares
// (test/testenv/kubestandin), and records what it saw for the assertions.
package lifecycle

import (
	"context"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/ambientmesh/ambient-operator/controllers/ambientmesh"
	"github.com/ambientmesh/ambient-operator/internal/meshscheme"
	"github.com/ambientmesh/ambient-operator/test/testenv"
)

var (
	suiteCtx  context.Context
	cfg       *rest.Config
	scheme    *runtime.Scheme
	k8sClient client.Client
	clientset *kubernetes.Clientset
)

func TestLifecycle(t *testing.T) {
	if testing.Short() {
		t.Skip("envtest suite (real kube-apiserver, etcd, cert-manager): skipped in -short mode, run by make test")
	}
	RegisterFailHandler(Fail)
	SetDefaultEventuallyTimeout(60 * time.Second)
	SetDefaultEventuallyPollingInterval(100 * time.Millisecond)
	RunSpecs(t, "AmbientMesh lifecycle suite")
}

var _ = BeforeSuite(func() {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	var cancel context.CancelFunc
	suiteCtx, cancel = context.WithCancel(context.Background())

	env, err := testenv.New()
	Expect(err).NotTo(HaveOccurred())
	cfg, err = env.Start()
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() {
		cancel()
		Expect(env.Stop()).To(Succeed())
	})

	scheme = meshscheme.New()
	k8sClient, err = client.New(cfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())
	clientset, err = kubernetes.NewForConfig(cfg)
	Expect(err).NotTo(HaveOccurred())

	stopCertManager, err := testenv.StartCertManager(suiteCtx, cfg, testenv.WithCertManagerLogs(GinkgoWriter))
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(stopCertManager)
})

// offsetClock is the real clock moved forward by a settable offset, so a
// test can make the operator's timeouts pass without waiting for them.
type offsetClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *offsetClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *offsetClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }

func (c *offsetClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

// startOperator runs the AmbientMesh controller in its own manager, as
// cmd/operator registers it, and returns a function that stops it and
// waits until it has stopped.
func startOperator(clock *offsetClock) (stop func()) {
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		// The cache the operator runs with: only the objects it labelled.
		Cache: cache.Options{ByObject: ambientmesh.CacheOnlyLabelled(ambientmesh.LabelledKinds()...)},
		// Several managers run one after the other in this process.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	Expect(err).NotTo(HaveOccurred())
	r := ambientmesh.NewReconciler(mgr)
	r.Clock = clock
	Expect(r.SetupWithManager(mgr)).To(Succeed())
	ctx, cancel := context.WithCancel(suiteCtx)
	done := make(chan struct{})
	go func() {
		defer GinkgoRecover()
		defer close(done)
		Expect(mgr.Start(ctx)).To(Succeed())
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}
}

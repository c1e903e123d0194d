package waypoint_test

import (
	"context"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/ambientmesh/ambient-operator/controllers/ambientmesh"
	"github.com/ambientmesh/ambient-operator/controllers/waypoint"
	"github.com/ambientmesh/ambient-operator/internal/meshscheme"
	"github.com/ambientmesh/ambient-operator/test/testenv"
)

// The Waypoint controller on a real kube-apiserver and etcd (envtest) in
// a real manager. There is no kube-controller-manager: the tests play the
// Deployment controller (waypointtest.SetAvailable) and, since there is no
// garbage collector, deletion is checked through the owner references the
// collector acts on.

var k8sClient client.Client

func TestWaypointController(t *testing.T) {
	if testing.Short() {
		t.Skip("envtest suite (real kube-apiserver and etcd): skipped in -short mode, run by make test")
	}
	RegisterFailHandler(Fail)
	SetDefaultEventuallyTimeout(30 * time.Second)
	SetDefaultEventuallyPollingInterval(100 * time.Millisecond)
	RunSpecs(t, "Waypoint controller suite")
}

var _ = BeforeSuite(func() {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	env, err := testenv.New()
	Expect(err).NotTo(HaveOccurred())
	cfg, err := env.Start()
	Expect(err).NotTo(HaveOccurred())
	ctx, cancel := context.WithCancel(context.Background())
	DeferCleanup(func() {
		cancel()
		Expect(env.Stop()).To(Succeed())
	})

	// The operator's cache (cmd/operator): of the proxy's kinds, only the
	// objects it labelled.
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 meshscheme.New(),
		Cache:                  cache.Options{ByObject: ambientmesh.CacheOnlyLabelled(waypoint.OwnedTypes()...)},
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
	})
	Expect(err).NotTo(HaveOccurred())
	Expect(waypoint.NewReconciler(mgr, "cluster.local").SetupWithManager(mgr)).To(Succeed())
	// The tests read as a user does, past the operator's cache.
	k8sClient, err = client.New(cfg, client.Options{Scheme: meshscheme.New()})
	Expect(err).NotTo(HaveOccurred())
	go func() {
		defer GinkgoRecover()
		Expect(mgr.Start(ctx)).To(Succeed())
	}()
	Expect(mgr.GetCache().WaitForCacheSync(ctx)).To(BeTrue())
})

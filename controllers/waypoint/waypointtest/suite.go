package waypointtest

import (
	"testing"
	"time"

	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/gomega"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/ambientmesh/ambient-operator/controllers/ambientmesh"
	"github.com/ambientmesh/ambient-operator/controllers/waypoint"
	"github.com/ambientmesh/ambient-operator/test/testenv"
)

// The controllers that provision waypoints (the Waypoint and the Gateway
// controllers) are tested alike: Ginkgo suites on envtest, each with a real
// manager configured as cmd/operator configures its own.

// RunSuite runs the calling package's specs as the suite named description;
// -short skips it, as it needs a real kube-apiserver and etcd.
func RunSuite(t *testing.T, description string) {
	if testing.Short() {
		t.Skip("envtest suite (real kube-apiserver and etcd): skipped in -short mode, run by make test")
	}
	gomega.RegisterFailHandler(ginkgo.Fail)
	gomega.SetDefaultEventuallyTimeout(30 * time.Second)
	gomega.SetDefaultEventuallyPollingInterval(100 * time.Millisecond)
	ginkgo.RunSpecs(t, description)
}

// StartControllers is a suite's BeforeSuite: it starts envtest and a manager
// running the controllers setup registers, and stops both after the suite.
// The manager has the operator's cache, which holds of the proxy's kinds only
// the objects the operator labelled. The returned client reads past that
// cache, as a user does.
func StartControllers(setup func(ctrl.Manager) error) client.Client {
	logf.SetLogger(zap.New(zap.WriteTo(ginkgo.GinkgoWriter), zap.UseDevMode(true)))
	operatorCache := cache.Options{ByObject: ambientmesh.CacheOnlyLabelled(waypoint.OwnedTypes()...)}
	env, err := testenv.StartManager(operatorCache, setup)
	gomega.Expect(err).NotTo(gomega.HaveOccurred())
	ginkgo.DeferCleanup(func() { gomega.Expect(env.Stop()).To(gomega.Succeed()) })
	return env.Client
}

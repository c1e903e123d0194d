package gateway_test

import (
	"testing"

	. "github.com/onsi/ginkgo/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ambientmesh/ambient-operator/controllers/gateway"
	"github.com/ambientmesh/ambient-operator/controllers/waypoint/waypointtest"
)

// The GatewayClass and Gateway controllers on a real kube-apiserver and
// etcd (envtest) with the Gateway API's standard CRDs, in a real manager.
// The tests play the Deployment controller; envtest runs no garbage
// collector, so deletion is checked through owner references.

var k8sClient client.Client

func TestGatewayControllers(t *testing.T) { waypointtest.RunSuite(t, "Gateway controllers suite") }

var _ = BeforeSuite(func() {
	k8sClient = waypointtest.StartControllers(func(mgr ctrl.Manager) error {
		if err := gateway.NewClassReconciler(mgr).SetupWithManager(mgr); err != nil {
			return err
		}
		return gateway.NewReconciler(mgr, "cluster.local").SetupWithManager(mgr)
	})
})

package waypoint_test

import (
	"testing"

	. "github.com/onsi/ginkgo/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ambientmesh/ambient-operator/controllers/waypoint"
	"github.com/ambientmesh/ambient-operator/controllers/waypoint/waypointtest"
)

// The Waypoint controller on a real kube-apiserver and etcd (envtest) in
// a real manager. There is no kube-controller-manager: the tests play the
// Deployment controller (waypointtest.SetAvailable) and, since there is no
// garbage collector, deletion is checked through the owner references the
// collector acts on.

var k8sClient client.Client

func TestWaypointController(t *testing.T) { waypointtest.RunSuite(t, "Waypoint controller suite") }

var _ = BeforeSuite(func() {
	k8sClient = waypointtest.StartControllers(func(mgr ctrl.Manager) error {
		return waypoint.NewReconciler(mgr, "cluster.local").SetupWithManager(mgr)
	})
})

package discovery

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/internal/meshscheme"
)

// TestMapFunctionsReportListErrors: a map function cannot return an error, so when its
// List fails it must say so in the log instead of dropping the event silently.
func TestMapFunctionsReportListErrors(t *testing.T) {
	failing := fake.NewClientBuilder().WithScheme(meshscheme.New()).WithInterceptorFuncs(interceptor.Funcs{
		List: func(context.Context, client.WithWatch, client.ObjectList, ...client.ListOption) error {
			return errors.New("cache: index not registered")
		},
	}).Build()
	r := reader{client: failing, mesh: selectionMesh}
	workloads := &WorkloadReconciler{reader: r}
	waypoints := &WaypointReconciler{reader: r}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}}}
	wp := &meshv1.Waypoint{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "wp"}}
	for _, tc := range []struct {
		name string
		fn   func(context.Context, client.Object) []reconcile.Request
		obj  client.Object
	}{
		{"podsInNamespaceOf", r.podsInNamespaceOf, svc},
		{"servicesInNamespaceOf", r.servicesInNamespaceOf, svc},
		{"servicesUsingWaypointsOf", r.servicesUsingWaypointsOf, wp},
		{"podsUsingWaypointsOf", r.podsUsingWaypointsOf, wp},
		{"podsOfService", workloads.podsOfService, svc},
		{"waypointsAffectedBy", waypoints.waypointsAffectedBy, svc},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logged []string
			log := funcr.New(func(prefix, args string) { logged = append(logged, args) }, funcr.Options{})
			if got := tc.fn(logr.NewContext(context.Background(), log), tc.obj); len(got) != 0 {
				t.Fatalf("mapped to %v despite the failed List", got)
			}
			if all := strings.Join(logged, "\n"); !strings.Contains(all, "index not registered") || !strings.Contains(all, "event dropped") {
				t.Fatalf("the List error was not logged: %q", all)
			}
		})
	}
}

package status

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
	xdsserver "github.com/ambientmesh/ambient-operator/controlplane/xds/server"
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
	policies := &PolicyReconciler{Client: failing, Mesh: testMesh}
	routes := &RouteReconciler{Client: failing, Kind: "HTTPRoute"}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}
	wp := &meshv1.Waypoint{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "wp"}}
	ztunnelAcked := xdsserver.AckChange{Client: xdsserver.Client{NodeID: xdsserver.ZTunnelNodeID("node-a")}}
	for _, tc := range []struct {
		name string
		fn   func(context.Context) []reconcile.Request
	}{
		{"policiesOfNamespace", func(ctx context.Context) []reconcile.Request { return policies.policiesOfNamespace(ctx, ns) }},
		{"policiesUsingWaypointsOf", func(ctx context.Context) []reconcile.Request { return policies.policiesUsingWaypointsOf(ctx, wp) }},
		{"policiesHeldBy", func(ctx context.Context) []reconcile.Request { return policies.policiesHeldBy(ctx, ztunnelAcked) }},
		{"routesInNamespaceOf", func(ctx context.Context) []reconcile.Request { return routes.routesInNamespaceOf(ctx, ns) }},
		{"routesUsingWaypointsOf", func(ctx context.Context) []reconcile.Request { return routes.routesUsingWaypointsOf(ctx, wp) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logged []string
			log := funcr.New(func(prefix, args string) { logged = append(logged, args) }, funcr.Options{})
			if got := tc.fn(logr.NewContext(context.Background(), log)); len(got) != 0 {
				t.Fatalf("mapped to %v despite the failed List", got)
			}
			if all := strings.Join(logged, "\n"); !strings.Contains(all, "index not registered") || !strings.Contains(all, "event dropped") {
				t.Fatalf("the List error was not logged: %q", all)
			}
		})
	}
}

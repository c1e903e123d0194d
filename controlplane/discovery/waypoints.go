package discovery

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controlplane/xds/waypoint"
)

// WaypointPublisher receives each waypoint's complete Envoy resource set
// (controlplane/xds/server.WaypointPublisher).
type WaypointPublisher interface {
	// Set replaces the waypoint's resources (type URL → name → resource); nil removes them.
	Set(namespace, name string, resources map[string]map[string]proto.Message) (int, error)
}

// WaypointReconciler keeps one waypoint's Envoy resources: on any change in the
// Waypoint's namespace that can alter them (its Services and their pods, MeshPolicies,
// HTTPRoutes, GRPCRoutes, the namespace's labels) it rebuilds the whole set with
// waypoint.Build, and the publisher pushes only the resources that differ. Events for one
// Waypoint coalesce in the work queue, so a burst of changes costs one rebuild.
type WaypointReconciler struct {
	reader
	publisher WaypointPublisher
	// routeKinds are the Gateway API route kinds whose CRDs are installed.
	routeKinds map[string]bool
}

// InstalledRouteKinds reports which of HTTPRoute and GRPCRoute the API server serves
// (Gateway API is optional: without its CRDs waypoints serve default routes).
func InstalledRouteKinds(mapper meta.RESTMapper) map[string]bool {
	out := map[string]bool{}
	for _, kind := range []string{"HTTPRoute", "GRPCRoute"} {
		gk := gatewayv1.SchemeGroupVersion.WithKind(kind).GroupKind()
		if _, err := mapper.RESTMapping(gk, gatewayv1.SchemeGroupVersion.Version); err == nil {
			out[kind] = true
		}
	}
	return out
}

func (r *WaypointReconciler) setup(mgr ctrl.Manager) error {
	toWaypoints := handler.EnqueueRequestsFromMapFunc(r.waypointsInNamespaceOf)
	b := ctrl.NewControllerManagedBy(mgr).
		Named("xds-waypoints").
		For(&meshv1.Waypoint{}).
		Watches(&corev1.Namespace{}, toWaypoints).
		Watches(&corev1.Service{}, toWaypoints).
		Watches(&corev1.Pod{}, toWaypoints).
		Watches(&meshv1.MeshPolicy{}, toWaypoints)
	if r.routeKinds["HTTPRoute"] {
		b = b.Watches(&gatewayv1.HTTPRoute{}, toWaypoints)
	}
	if r.routeKinds["GRPCRoute"] {
		b = b.Watches(&gatewayv1.GRPCRoute{}, toWaypoints)
	}
	return b.WithOptions(servingOptions(2)).Complete(r)
}

// Reconcile rebuilds one waypoint's resources; a deleted Waypoint's are removed. A Build
// error (a resource failing validation: a translation bug) keeps the last good set served
// and is returned, so it is logged and retried with backoff.
func (r *WaypointReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var wp meshv1.Waypoint
	if err := r.client.Get(ctx, req.NamespacedName, &wp); err != nil {
		if apierrors.IsNotFound(err) {
			_, err = r.publisher.Set(req.Namespace, req.Name, nil)
			return reconcile.Result{}, err
		}
		return reconcile.Result{}, err
	}
	st, err := r.waypointState(ctx, wp.Namespace)
	if err != nil {
		return reconcile.Result{}, err
	}
	res, err := waypoint.Build(r.mesh, &wp, st)
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("translate: %w", err)
	}
	_, err = r.publisher.Set(wp.Namespace, wp.Name, res.ByType())
	return reconcile.Result{}, err
}

// waypointState gathers the objects of a waypoint's namespace: a waypoint serves the
// Services and pods of its own namespace, and routes and policies attach there.
func (r *WaypointReconciler) waypointState(ctx context.Context, namespace string) (*waypoint.State, error) {
	st := &waypoint.State{}
	if ns, err := r.namespace(ctx, namespace); err != nil {
		return nil, err
	} else if ns != nil {
		st.Namespaces = []corev1.Namespace{*ns}
	}
	in := []client.ListOption{client.InNamespace(namespace), client.UnsafeDisableDeepCopy}
	var pods corev1.PodList
	var services corev1.ServiceList
	var policies meshv1.MeshPolicyList
	var waypoints meshv1.WaypointList
	for _, list := range []client.ObjectList{&pods, &services, &policies, &waypoints} {
		if err := r.client.List(ctx, list, in...); err != nil {
			return nil, err
		}
	}
	st.Pods, st.Services, st.Policies, st.Waypoints = pods.Items, services.Items, policies.Items, waypoints.Items
	if r.routeKinds["HTTPRoute"] {
		var routes gatewayv1.HTTPRouteList
		if err := r.client.List(ctx, &routes, in...); err != nil {
			return nil, err
		}
		st.HTTPRoutes = routes.Items
	}
	if r.routeKinds["GRPCRoute"] {
		var routes gatewayv1.GRPCRouteList
		if err := r.client.List(ctx, &routes, in...); err != nil {
			return nil, err
		}
		st.GRPCRoutes = routes.Items
	}
	return st, nil
}

// waypointsInNamespaceOf maps an object to the Waypoints of its namespace (for a
// Namespace: of itself).
func (r *WaypointReconciler) waypointsInNamespaceOf(ctx context.Context, o client.Object) []reconcile.Request {
	ns := o.GetNamespace()
	if _, isNS := o.(*corev1.Namespace); isNS {
		ns = o.GetName()
	}
	var list meshv1.WaypointList
	if err := r.client.List(ctx, &list, client.InNamespace(ns), client.UnsafeDisableDeepCopy); err != nil {
		return nil
	}
	return requests(list.Items)
}

// prime builds every waypoint once.
func (r *WaypointReconciler) prime(ctx context.Context) error {
	var list meshv1.WaypointList
	if err := r.client.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
		return err
	}
	for i := range list.Items {
		if _, err := r.Reconcile(ctx, requestFor(&list.Items[i])); err != nil {
			return err
		}
	}
	return nil
}

package status

import (
	"context"
	"fmt"
	"reflect"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controlplane/discovery"
	"github.com/ambientmesh/ambient-operator/controlplane/xds/translate"
	"github.com/ambientmesh/ambient-operator/controlplane/xds/waypoint"
)

// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=httproutes;grpcroutes,verbs=get;list;watch
// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=httproutes/status;grpcroutes/status,verbs=get;update;patch

// RouteReconciler writes, on an HTTPRoute or a GRPCRoute, the status.parents entries of
// its Service parents under waypoint.ControllerName (Accepted, ResolvedRefs), computed by
// waypoint.HTTPRouteParentStatuses / GRPCRouteParentStatuses. Entries of other
// controllers are kept as they are; ours for parents no longer in the spec are dropped.
// The write is a merge patch with the resourceVersion, so a concurrent write by another
// controller makes it fail and retry rather than erase that write (the list is atomic).
type RouteReconciler struct {
	Client client.Client
	// Lookup finds the waypoints (Waypoints and waypoint Gateways) the Services name.
	Lookup translate.TargetLookup
	// Kind is "HTTPRoute" or "GRPCRoute".
	Kind string
}

func setupRoutes(mgr ctrl.Manager, opts Options) error {
	for _, kind := range []string{"HTTPRoute", "GRPCRoute"} {
		if !opts.GatewayAPIKinds[kind] {
			continue
		}
		r := &RouteReconciler{Client: mgr.GetClient(), Lookup: opts.Lookup, Kind: kind}
		toRoutes := handler.EnqueueRequestsFromMapFunc(r.routesInNamespaceOf)
		toUsers := handler.EnqueueRequestsFromMapFunc(r.routesUsingWaypointsOf)
		b := ctrl.NewControllerManagedBy(mgr).Named(strings.ToLower(kind)+"-status").
			For(r.newRoute()).
			Watches(&corev1.Service{}, toRoutes).
			Watches(&meshv1.Waypoint{}, toUsers).
			Watches(&corev1.Namespace{}, toRoutes)
		if opts.GatewayAPIKinds["Gateway"] {
			b = b.Watches(&gatewayv1.Gateway{}, toUsers, builder.WithPredicates(discovery.WaypointGatewayChanged))
		}
		if err := b.Complete(r); err != nil {
			return err
		}
	}
	return nil
}

func (r *RouteReconciler) newRoute() client.Object {
	if r.Kind == "GRPCRoute" {
		return &gatewayv1.GRPCRoute{}
	}
	return &gatewayv1.HTTPRoute{}
}

func (r *RouteReconciler) newList() client.ObjectList {
	if r.Kind == "GRPCRoute" {
		return &gatewayv1.GRPCRouteList{}
	}
	return &gatewayv1.HTTPRouteList{}
}

// Reconcile computes the route's parent statuses and writes them when they changed.
func (r *RouteReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	route := r.newRoute()
	if err := r.Client.Get(ctx, req.NamespacedName, route); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	st, err := routeState(ctx, r.Client, r.Lookup, route.GetNamespace())
	if err != nil {
		return reconcile.Result{}, err
	}
	base := route.DeepCopyObject().(client.Object)
	now := metav1.Now()
	var parents *[]gatewayv1.RouteParentStatus
	var ours []gatewayv1.RouteParentStatus
	switch rt := route.(type) {
	case *gatewayv1.HTTPRoute:
		parents, ours = &rt.Status.Parents, waypoint.HTTPRouteParentStatuses(rt, st, now)
	case *gatewayv1.GRPCRoute:
		parents, ours = &rt.Status.Parents, waypoint.GRPCRouteParentStatuses(rt, st, now)
	default:
		return reconcile.Result{}, fmt.Errorf("unexpected route type %T", route)
	}
	merged := mergeParents(*parents, ours)
	if parentsEqual(*parents, merged) {
		return reconcile.Result{}, nil
	}
	*parents = merged
	err = r.Client.Status().Patch(ctx, route, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}))
	if apierrors.IsNotFound(err) {
		return reconcile.Result{}, nil
	}
	return reconcile.Result{}, err
}

// routeState reads what route status depends on: the namespace (its use-waypoint label),
// its Services, and the waypoints they name (waypoint.WaypointOfService), of any
// namespace.
func routeState(ctx context.Context, c client.Client, lookup translate.TargetLookup, namespace string) (*waypoint.State, error) {
	st := &waypoint.State{}
	var ns *corev1.Namespace
	var nsObj corev1.Namespace
	switch err := c.Get(ctx, client.ObjectKey{Name: namespace}, &nsObj); {
	case err == nil:
		ns = &nsObj
		st.Namespaces = []corev1.Namespace{nsObj}
	case !apierrors.IsNotFound(err):
		return nil, err
	}
	var services corev1.ServiceList
	if err := c.List(ctx, &services, client.InNamespace(namespace), client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	st.Services = services.Items
	named := map[types.NamespacedName]bool{}
	for i := range st.Services {
		ref, ok := waypoint.WaypointOfService(&st.Services[i], ns)
		if !ok || named[ref] {
			continue
		}
		named[ref] = true
		if wp := lookup.Waypoint(ref.Namespace, ref.Name); wp != nil {
			st.Waypoints = append(st.Waypoints, *wp)
		}
	}
	return st, nil
}

// mergeParents keeps other controllers' entries, in order, and puts ours after them.
func mergeParents(current, ours []gatewayv1.RouteParentStatus) []gatewayv1.RouteParentStatus {
	var out []gatewayv1.RouteParentStatus
	for _, p := range current {
		if p.ControllerName != waypoint.ControllerName {
			out = append(out, p)
		}
	}
	return append(out, ours...)
}

func parentsEqual(a, b []gatewayv1.RouteParentStatus) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].ControllerName != b[i].ControllerName || !reflect.DeepEqual(a[i].ParentRef, b[i].ParentRef) ||
			!conditionsEqual(a[i].Conditions, b[i].Conditions) {
			return false
		}
	}
	return true
}

// routesInNamespaceOf maps a Service or Namespace to the routes of its namespace.
func (r *RouteReconciler) routesInNamespaceOf(ctx context.Context, o client.Object) []reconcile.Request {
	ns := o.GetNamespace()
	if _, isNS := o.(*corev1.Namespace); isNS {
		ns = o.GetName()
	}
	return r.routesIn(ctx, []string{ns})
}

// routesUsingWaypointsOf maps a Waypoint or waypoint Gateway to the routes of every
// namespace whose Services may use it.
func (r *RouteReconciler) routesUsingWaypointsOf(ctx context.Context, o client.Object) []reconcile.Request {
	namespaces, err := discovery.NamespacesUsingWaypointsOf(ctx, r.Client, o.GetNamespace())
	if err != nil {
		return mapFailed(ctx, err, r.Kind+"s of the namespaces that may use a waypoint of "+o.GetNamespace())
	}
	return r.routesIn(ctx, namespaces)
}

func (r *RouteReconciler) routesIn(ctx context.Context, namespaces []string) []reconcile.Request {
	var out []reconcile.Request
	for _, ns := range namespaces {
		list := r.newList()
		if err := r.Client.List(ctx, list, client.InNamespace(ns)); err != nil {
			return mapFailed(ctx, err, r.Kind+"s of namespace "+ns)
		}
		items, err := meta.ExtractList(list)
		if err != nil {
			return mapFailed(ctx, err, r.Kind+"s of namespace "+ns)
		}
		for _, item := range items {
			if o, ok := item.(client.Object); ok {
				out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(o)})
			}
		}
	}
	return out
}

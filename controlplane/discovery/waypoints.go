package discovery

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	xdsserver "github.com/ambientmesh/ambient-operator/controlplane/xds/server"
	"github.com/ambientmesh/ambient-operator/controlplane/xds/translate"
	"github.com/ambientmesh/ambient-operator/controlplane/xds/waypoint"
)

// WaypointPublisher receives each waypoint's complete Envoy resource set
// (controlplane/xds/server.WaypointPublisher).
type WaypointPublisher interface {
	// Set replaces the waypoint's resources (type URL → name → resource) and records what
	// they were built from; nil resources remove them.
	Set(namespace, name string, resources map[string]map[string]proto.Message, contents xdsserver.WaypointContents) (int, error)
}

// WaypointReconciler keeps one waypoint's Envoy resources: on any change that can alter
// them (in the waypoint's namespace, or in another namespace whose Services or pods may
// use it: their pods, Services, MeshPolicies, HTTPRoutes, GRPCRoutes, the namespace's
// labels) it rebuilds the whole set with waypoint.Build, and the publisher pushes only the
// resources that differ. Events for one waypoint coalesce in the work queue, so a burst of
// changes costs one rebuild. A waypoint is a Waypoint or a waypoint Gateway of that
// namespace and name (reader.waypoint): both are queued under the same key.
type WaypointReconciler struct {
	reader
	publisher WaypointPublisher
	// gatewayAPI are the Gateway API kinds whose CRDs are installed.
	gatewayAPI map[string]bool

	// users remembers, per Waypoint, the other namespaces its last build read, so that a
	// change there (a backend pod, a route) requeues it. It is recorded before the build
	// lists them: an event the map function misses is then one the list already sees.
	mu    sync.Mutex
	users map[types.NamespacedName][]string
}

// InstalledGatewayAPIKinds reports which of Gateway, HTTPRoute and GRPCRoute the API
// server serves (Gateway API is optional: without its CRDs there are no waypoint
// Gateways, and waypoints serve default routes).
func InstalledGatewayAPIKinds(mapper meta.RESTMapper) map[string]bool {
	out := map[string]bool{}
	for _, kind := range []string{"Gateway", "HTTPRoute", "GRPCRoute"} {
		gk := schema.GroupKind{Group: gatewayv1.GroupName, Kind: kind}
		if _, err := mapper.RESTMapping(gk, gatewayv1.GroupVersion.Version); err == nil {
			out[kind] = true
		}
	}
	return out
}

func (r *WaypointReconciler) setup(mgr ctrl.Manager) error {
	toWaypoints := handler.EnqueueRequestsFromMapFunc(r.waypointsAffectedBy)
	// A route's status is written by the control plane after every edit and translates to
	// nothing: only its spec (generation) and annotations (faults) change the build.
	routeChanged := builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))
	b := ctrl.NewControllerManagedBy(mgr).
		Named("xds-waypoints").
		For(&meshv1.Waypoint{}).
		Watches(&corev1.Namespace{}, toWaypoints).
		Watches(&corev1.Service{}, toWaypoints).
		Watches(&corev1.Pod{}, toWaypoints).
		Watches(&meshv1.MeshPolicy{}, toWaypoints)
	if r.gatewayAPI["Gateway"] {
		b = b.Watches(&gatewayv1.Gateway{}, &handler.EnqueueRequestForObject{}, builder.WithPredicates(WaypointGatewayChanged))
	}
	if r.gatewayAPI["HTTPRoute"] {
		b = b.Watches(&gatewayv1.HTTPRoute{}, toWaypoints, routeChanged)
	}
	if r.gatewayAPI["GRPCRoute"] {
		b = b.Watches(&gatewayv1.GRPCRoute{}, toWaypoints, routeChanged)
	}
	return b.WithOptions(servingOptions(2)).Complete(r)
}

// Reconcile rebuilds one waypoint's resources; a deleted waypoint's (or a Gateway's that
// is no waypoint any more) are removed. A Build error (a resource failing validation: a
// translation bug) keeps the last good set served and is returned, so it is logged and
// retried with backoff.
func (r *WaypointReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	wp, err := r.waypoint(ctx, req.NamespacedName)
	if err != nil {
		return reconcile.Result{}, err
	}
	if wp == nil {
		r.remember(req.NamespacedName, nil)
		_, err = r.publisher.Set(req.Namespace, req.Name, nil, xdsserver.WaypointContents{})
		return reconcile.Result{}, err
	}
	st, err := r.waypointState(ctx, wp)
	if err != nil {
		return reconcile.Result{}, err
	}
	res, err := waypoint.Build(r.mesh, wp, st)
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("translate: %w", err)
	}
	_, err = r.publisher.Set(wp.Namespace, wp.Name, res.ByType(), contentsOf(wp, st))
	return reconcile.Result{}, err
}

// contentsOf records what a waypoint's configuration is built from, for the policy
// status: the generation of every MeshPolicy translation read (Build reads them all and
// applies those that target the waypoint, its Services or their namespaces), and the
// Services it serves, as <namespace>/<name>.
func contentsOf(wp *meshv1.Waypoint, st *waypoint.State) xdsserver.WaypointContents {
	out := xdsserver.WaypointContents{Policies: make(map[string]int64, len(st.Policies)), Services: []string{}}
	for i := range st.Policies {
		out.Policies[st.Policies[i].Namespace+"/"+st.Policies[i].Name] = st.Policies[i].Generation
	}
	for _, svc := range waypoint.ServedServices(wp, st) {
		out.Services = append(out.Services, svc.Namespace+"/"+svc.Name)
	}
	return out
}

// waypointState gathers the objects of the namespaces whose Services and pods may use the
// waypoint: its own, and, when it allows other namespaces, those that name it
// (userNamespaces). waypoint.Build applies the selection rules itself.
func (r *WaypointReconciler) waypointState(ctx context.Context, wp *meshv1.Waypoint) (*waypoint.State, error) {
	others, err := r.userNamespaces(ctx, wp)
	if err != nil {
		return nil, err
	}
	r.remember(client.ObjectKeyFromObject(wp), others)
	st := &waypoint.State{}
	for _, namespace := range append([]string{wp.Namespace}, others...) {
		if err := r.addNamespace(ctx, st, namespace); err != nil {
			return nil, err
		}
	}
	return st, nil
}

// userNamespaces lists the other namespaces that name the waypoint in their labels or in
// their Services' or pods' labels; none while it allows only its own namespace. Whether
// it allows each one is Build's decision.
func (r *WaypointReconciler) userNamespaces(ctx context.Context, wp *meshv1.Waypoint) ([]string, error) {
	allowed := wp.Spec.AllowedNamespaces
	if allowed == nil || allowed.From == "" || allowed.From == meshv1.NamespacesFromSame {
		return nil, nil
	}
	found := map[string]bool{}
	names := func(namespace string, objLabels map[string]string) {
		if namespace != wp.Namespace && objLabels[meshv1.LabelUseWaypoint] == wp.Name {
			found[namespace] = true
		}
	}
	var namespaces corev1.NamespaceList
	if err := r.client.List(ctx, &namespaces, client.MatchingLabels{meshv1.LabelUseWaypointNamespace: wp.Namespace},
		client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	for _, ns := range namespaces.Items {
		names(ns.Name, ns.Labels)
	}
	var services corev1.ServiceList
	var pods corev1.PodList
	for _, list := range []client.ObjectList{&services, &pods} {
		if err := r.client.List(ctx, list, client.MatchingFields{IndexUseWaypointNamespace: wp.Namespace},
			client.UnsafeDisableDeepCopy); err != nil {
			return nil, err
		}
	}
	for _, svc := range services.Items {
		names(svc.Namespace, svc.Labels)
	}
	for _, pod := range pods.Items {
		names(pod.Namespace, pod.Labels)
	}
	out := make([]string, 0, len(found))
	for ns := range found {
		out = append(out, ns)
	}
	slices.Sort(out)
	return out, nil
}

// addNamespace appends the objects of one namespace to st.
func (r *WaypointReconciler) addNamespace(ctx context.Context, st *waypoint.State, namespace string) error {
	if ns, err := r.namespace(ctx, namespace); err != nil {
		return err
	} else if ns != nil {
		st.Namespaces = append(st.Namespaces, *ns)
	}
	in := []client.ListOption{client.InNamespace(namespace), client.UnsafeDisableDeepCopy}
	var pods corev1.PodList
	var services corev1.ServiceList
	var policies meshv1.MeshPolicyList
	for _, list := range []client.ObjectList{&pods, &services, &policies} {
		if err := r.client.List(ctx, list, in...); err != nil {
			return err
		}
	}
	waypoints, err := r.waypoints(ctx, namespace)
	if err != nil {
		return err
	}
	st.Pods = append(st.Pods, pods.Items...)
	st.Services = append(st.Services, services.Items...)
	st.Policies = append(st.Policies, policies.Items...)
	st.Waypoints = append(st.Waypoints, waypoints...)
	if r.gatewayAPI["HTTPRoute"] {
		var routes gatewayv1.HTTPRouteList
		if err := r.client.List(ctx, &routes, in...); err != nil {
			return err
		}
		st.HTTPRoutes = append(st.HTTPRoutes, routes.Items...)
	}
	if r.gatewayAPI["GRPCRoute"] {
		var routes gatewayv1.GRPCRouteList
		if err := r.client.List(ctx, &routes, in...); err != nil {
			return err
		}
		st.GRPCRoutes = append(st.GRPCRoutes, routes.Items...)
	}
	return nil
}

// remember records the other namespaces a waypoint's build reads; nil forgets it.
func (r *WaypointReconciler) remember(key types.NamespacedName, namespaces []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.users == nil {
		r.users = map[types.NamespacedName][]string{}
	}
	if namespaces == nil {
		delete(r.users, key)
	} else {
		r.users[key] = namespaces
	}
}

// waypointsAffectedBy maps an object to the waypoints whose resources it may change: those
// of its namespace (for a Namespace: of itself), those whose last build read its
// namespace, and the one of another namespace its own labels name (called with the old
// and the new object on update, so both the waypoint it leaves and the one it joins are
// rebuilt).
func (r *WaypointReconciler) waypointsAffectedBy(ctx context.Context, o client.Object) []reconcile.Request {
	ns := o.GetNamespace()
	var nsObj *corev1.Namespace
	if n, isNS := o.(*corev1.Namespace); isNS {
		ns, nsObj = n.Name, n
	}
	waypoints, err := r.waypoints(ctx, ns)
	if err != nil {
		return mapFailed(ctx, err, o, "waypoints of namespace "+ns)
	}
	out := requests(waypoints)
	r.mu.Lock()
	for key, namespaces := range r.users {
		if slices.Contains(namespaces, ns) {
			out = append(out, reconcile.Request{NamespacedName: key})
		}
	}
	r.mu.Unlock()
	switch o.(type) {
	case *corev1.Namespace, *corev1.Service, *corev1.Pod:
		if ref, ok := translate.UsedWaypoint(ns, o.GetLabels(), nsObj); ok && ref.Namespace != ns {
			out = append(out, reconcile.Request{NamespacedName: ref})
		}
	}
	return out
}

// prime builds every waypoint once.
func (r *WaypointReconciler) prime(ctx context.Context) error {
	waypoints, err := r.waypoints(ctx, "")
	if err != nil {
		return err
	}
	for i := range waypoints {
		if _, err := r.Reconcile(ctx, requestFor(&waypoints[i])); err != nil {
			return err
		}
	}
	return nil
}

// WaypointGatewayChanged passes the Gateway events that change a waypoint: a Gateway that
// is (or was) one (translate.WaypointFromGateway) is created or deleted, or what the
// control plane reads of it changes (becoming one, its waypoint-for label, its HBONE
// listener's allowedRoutes, its Programmed condition). Other Gateways, and the operator's
// other status writes, pass nothing.
var WaypointGatewayChanged = predicate.Funcs{
	CreateFunc: func(e event.CreateEvent) bool { return asWaypoint(e.Object) != nil },
	DeleteFunc: func(e event.DeleteEvent) bool { return asWaypoint(e.Object) != nil },
	UpdateFunc: func(e event.UpdateEvent) bool {
		return !equality.Semantic.DeepEqual(asWaypoint(e.ObjectOld), asWaypoint(e.ObjectNew))
	},
}

// asWaypoint is the waypoint a Gateway stands for; nil when it is none.
func asWaypoint(o client.Object) *meshv1.Waypoint {
	gw, ok := o.(*gatewayv1.Gateway)
	if !ok {
		return nil
	}
	wp, _ := translate.WaypointFromGateway(gw)
	return wp
}

package discovery

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controlplane/xds/translate"
)

// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=gateways,verbs=get;list;watch

// reader gathers translation inputs from the cache. Lists skip the deep copy: the
// translation functions only read.
type reader struct {
	client client.Client
	mesh   translate.Mesh
	// gateways: the Gateway API Gateway CRD is installed, so Gateways of the waypoint
	// class are waypoints too (translate.WaypointFromGateway).
	gateways bool
}

func newReader(c client.Client, mesh translate.Mesh, gatewayAPIKinds map[string]bool) reader {
	return reader{client: c, mesh: mesh, gateways: gatewayAPIKinds["Gateway"]}
}

// waypoint finds the waypoint key names: the Waypoint, else the Gateway of that name when
// it is a waypoint (the rule of translate.MergeWaypoints); nil when neither.
func (r reader) waypoint(ctx context.Context, key types.NamespacedName) (*meshv1.Waypoint, error) {
	var wp meshv1.Waypoint
	err := r.client.Get(ctx, key, &wp)
	if err == nil {
		return &wp, nil
	}
	if !apierrors.IsNotFound(err) || !r.gateways {
		return nil, client.IgnoreNotFound(err)
	}
	var gw gatewayv1.Gateway
	if err := r.client.Get(ctx, key, &gw); err != nil {
		return nil, client.IgnoreNotFound(err)
	}
	if wp, ok := translate.WaypointFromGateway(&gw); ok {
		return wp, nil
	}
	return nil, nil
}

// waypoints lists the waypoints of namespace (of every namespace when ""): its Waypoints
// and waypoint Gateways, merged by translate.MergeWaypoints. This is the one list of
// waypoints every reconciler reads.
func (r reader) waypoints(ctx context.Context, namespace string) ([]meshv1.Waypoint, error) {
	opts := []client.ListOption{client.UnsafeDisableDeepCopy}
	if namespace != "" {
		opts = append(opts, client.InNamespace(namespace))
	}
	var waypoints meshv1.WaypointList
	if err := r.client.List(ctx, &waypoints, opts...); err != nil {
		return nil, err
	}
	var gateways gatewayv1.GatewayList
	if r.gateways {
		if err := r.client.List(ctx, &gateways, opts...); err != nil {
			return nil, err
		}
	}
	return translate.MergeWaypoints(waypoints.Items, gateways.Items), nil
}

func (r reader) namespace(ctx context.Context, name string) (*corev1.Namespace, error) {
	var ns corev1.Namespace
	if err := r.client.Get(ctx, client.ObjectKey{Name: name}, &ns); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, err
	}
	return &ns, nil
}

func (r reader) services(ctx context.Context, namespace string) ([]corev1.Service, error) {
	var list corev1.ServiceList
	err := r.client.List(ctx, &list, client.InNamespace(namespace), client.UnsafeDisableDeepCopy)
	return list.Items, err
}

// policies returns the MeshPolicies of namespace and of the root namespace.
func (r reader) policies(ctx context.Context, namespace string) ([]meshv1.MeshPolicy, error) {
	var list meshv1.MeshPolicyList
	if err := r.client.List(ctx, &list, client.InNamespace(namespace), client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	out := list.Items
	if namespace != r.mesh.RootNamespace && r.mesh.RootNamespace != "" {
		var root meshv1.MeshPolicyList
		if err := r.client.List(ctx, &root, client.InNamespace(r.mesh.RootNamespace), client.UnsafeDisableDeepCopy); err != nil {
			return nil, err
		}
		out = append(out, root.Items...)
	}
	return out, nil
}

// usedWaypoint resolves the waypoint an object's labels name (see translate.UsedWaypoint;
// ns is the object's Namespace, nil when unknown), possibly of another namespace: an empty
// map when they name none or it does not exist. Translation decides whether it counts.
func (r reader) usedWaypoint(ctx context.Context, namespace string, objLabels map[string]string, ns *corev1.Namespace) (map[types.NamespacedName]translate.WaypointInfo, error) {
	out := map[types.NamespacedName]translate.WaypointInfo{}
	ref, ok := translate.UsedWaypoint(namespace, objLabels, ns)
	if !ok {
		return out, nil
	}
	wp, err := r.waypoint(ctx, ref)
	if err != nil || wp == nil {
		return out, err
	}
	if out[ref], err = r.resolve(ctx, wp); err != nil {
		return nil, err
	}
	return out, nil
}

// resolve gives a waypoint's address and identity: from its Service and its proxy pods'
// service account.
func (r reader) resolve(ctx context.Context, wp *meshv1.Waypoint) (translate.WaypointInfo, error) {
	svc, err := r.waypointService(ctx, wp)
	if err != nil {
		return translate.WaypointInfo{}, err
	}
	sa, err := r.waypointServiceAccount(ctx, wp)
	if err != nil {
		return translate.WaypointInfo{}, err
	}
	return translate.ResolveWaypoint(r.mesh, wp, svc, sa), nil
}

func (r reader) waypointService(ctx context.Context, wp *meshv1.Waypoint) (*corev1.Service, error) {
	var list corev1.ServiceList
	if err := r.client.List(ctx, &list, client.InNamespace(wp.Namespace),
		client.MatchingFields{IndexServiceWaypoint: wp.Name}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	if len(list.Items) == 0 {
		return nil, nil
	}
	return &list.Items[0], nil
}

func (r reader) waypointServiceAccount(ctx context.Context, wp *meshv1.Waypoint) (string, error) {
	var list corev1.PodList
	if err := r.client.List(ctx, &list, client.InNamespace(wp.Namespace),
		client.MatchingFields{IndexPodWaypoint: wp.Name}, client.UnsafeDisableDeepCopy); err != nil {
		return "", err
	}
	for _, p := range list.Items {
		if p.Spec.ServiceAccountName != "" {
			return p.Spec.ServiceAccountName, nil
		}
	}
	return "", nil
}

// Service, Waypoint and Namespace implement translate.TargetLookup on the cache; lookup
// errors read as "missing", and the status is recomputed on the next change.
func (r reader) Service(namespace, name string) *corev1.Service {
	var svc corev1.Service
	if r.client.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: name}, &svc) != nil {
		return nil
	}
	return &svc
}

// Waypoint implements translate.TargetLookup: a Waypoint or a waypoint Gateway.
func (r reader) Waypoint(namespace, name string) *meshv1.Waypoint {
	wp, err := r.waypoint(context.Background(), types.NamespacedName{Namespace: namespace, Name: name})
	if err != nil {
		return nil
	}
	return wp
}

// Namespace implements translate.TargetLookup.
func (r reader) Namespace(name string) *corev1.Namespace {
	ns, err := r.namespace(context.Background(), name)
	if err != nil {
		return nil
	}
	return ns
}

// Map functions: which objects to recompute when a related object changes.

// podsInNamespaceOf maps an object to every pod in its namespace (for a Namespace: in
// itself; for anything in the root namespace: every pod, since mesh-wide policies live there).
func (r reader) podsInNamespaceOf(ctx context.Context, o client.Object) []reconcile.Request {
	ns := o.GetNamespace()
	if _, isNS := o.(*corev1.Namespace); isNS {
		ns = o.GetName()
	}
	opts := []client.ListOption{client.UnsafeDisableDeepCopy}
	if _, isPolicy := o.(*meshv1.MeshPolicy); !isPolicy || ns != r.mesh.RootNamespace {
		opts = append(opts, client.InNamespace(ns))
	}
	var list corev1.PodList
	if err := r.client.List(ctx, &list, opts...); err != nil {
		return mapFailed(ctx, err, o, "pods of namespace "+ns)
	}
	return requests(list.Items)
}

// servicesInNamespaceOf maps an object to every Service in its namespace.
func (r reader) servicesInNamespaceOf(ctx context.Context, o client.Object) []reconcile.Request {
	ns := o.GetNamespace()
	if _, isNS := o.(*corev1.Namespace); isNS {
		ns = o.GetName()
	}
	var list corev1.ServiceList
	if err := r.client.List(ctx, &list, client.InNamespace(ns), client.UnsafeDisableDeepCopy); err != nil {
		return mapFailed(ctx, err, o, "Services of namespace "+ns)
	}
	return requests(list.Items)
}

// servicesUsingWaypointsOf maps a Waypoint or Gateway (or its Service or pod) to every
// Service that may use a waypoint of its namespace.
func (r reader) servicesUsingWaypointsOf(ctx context.Context, o client.Object) []reconcile.Request {
	out, err := r.usersOfWaypointsIn(ctx, o.GetNamespace(), func() client.ObjectList { return &corev1.ServiceList{} })
	if err != nil {
		return mapFailed(ctx, err, o, "Services that may use a waypoint of namespace "+o.GetNamespace())
	}
	return out
}

// podsUsingWaypointsOf maps a Waypoint or Gateway (or its Service or pod) to every pod
// that may use a waypoint of its namespace.
func (r reader) podsUsingWaypointsOf(ctx context.Context, o client.Object) []reconcile.Request {
	out, err := r.usersOfWaypointsIn(ctx, o.GetNamespace(), func() client.ObjectList { return &corev1.PodList{} })
	if err != nil {
		return mapFailed(ctx, err, o, "pods that may use a waypoint of namespace "+o.GetNamespace())
	}
	return out
}

// usersOfWaypointsIn lists the objects (of newList's kind) that may use a Waypoint of
// namespace: all of that namespace, those whose own labels name a waypoint there, and all
// of the namespaces whose labels do.
func (r reader) usersOfWaypointsIn(ctx context.Context, namespace string, newList func() client.ObjectList) ([]reconcile.Request, error) {
	namespaces := []string{namespace}
	var labelled corev1.NamespaceList
	if err := r.client.List(ctx, &labelled, client.MatchingLabels{meshv1.LabelUseWaypointNamespace: namespace},
		client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	for _, ns := range labelled.Items {
		if ns.Name != namespace {
			namespaces = append(namespaces, ns.Name)
		}
	}
	lists := make([]client.ObjectList, 0, len(namespaces)+1)
	for _, ns := range namespaces {
		list := newList()
		if err := r.client.List(ctx, list, client.InNamespace(ns), client.UnsafeDisableDeepCopy); err != nil {
			return nil, err
		}
		lists = append(lists, list)
	}
	named := newList()
	if err := r.client.List(ctx, named, client.MatchingFields{IndexUseWaypointNamespace: namespace}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	lists = append(lists, named)
	seen := map[types.NamespacedName]bool{}
	var out []reconcile.Request
	for _, list := range lists {
		_ = meta.EachListItem(list, func(obj runtime.Object) error {
			key := client.ObjectKeyFromObject(obj.(client.Object))
			if !seen[key] {
				seen[key] = true
				out = append(out, reconcile.Request{NamespacedName: key})
			}
			return nil
		})
	}
	return out, nil
}

// mapFailed logs the lookup error of a map function and drops the event (a map function
// cannot return an error): what it would have recomputed waits for its next event.
func mapFailed(ctx context.Context, err error, o client.Object, what string) []reconcile.Request {
	log.FromContext(ctx).Error(err, "event dropped: cannot list what it affects", "affected", what,
		"kind", fmt.Sprintf("%T", o), "object", client.ObjectKeyFromObject(o))
	return nil
}

func requests[T any, PT interface {
	*T
	client.Object
}](items []T) []reconcile.Request {
	out := make([]reconcile.Request, 0, len(items))
	for i := range items {
		out = append(out, requestFor(PT(&items[i])))
	}
	return out
}

// onlyWaypointObjects passes objects that belong to a waypoint (its pods and Service):
// other pods and Services do not change any waypoint's address or identity.
func onlyWaypointObjects(mapFn handler.MapFunc) handler.MapFunc {
	return func(ctx context.Context, o client.Object) []reconcile.Request {
		if o.GetLabels()[meshv1.LabelWaypoint] == "" {
			return nil
		}
		return mapFn(ctx, o)
	}
}

// NewTargetLookup resolves MeshPolicy targets from c (normally the manager's cached
// client); gatewayAPIKinds are the installed Gateway API kinds (InstalledGatewayAPIKinds),
// which say whether Gateways can be waypoints.
func NewTargetLookup(c client.Client, mesh translate.Mesh, gatewayAPIKinds map[string]bool) translate.TargetLookup {
	return newReader(c, mesh, gatewayAPIKinds)
}

// NamespacesUsingWaypointsOf lists the namespaces whose Services may use a waypoint of
// namespace: namespace itself, those whose labels name a waypoint there, and those of the
// Services whose own labels do (index IndexUseWaypointNamespace). Status reads it to
// follow waypoints across namespaces.
func NamespacesUsingWaypointsOf(ctx context.Context, c client.Reader, namespace string) ([]string, error) {
	found := map[string]bool{namespace: true}
	out := []string{namespace}
	add := func(ns string) {
		if !found[ns] {
			found[ns] = true
			out = append(out, ns)
		}
	}
	var namespaces corev1.NamespaceList
	if err := c.List(ctx, &namespaces, client.MatchingLabels{meshv1.LabelUseWaypointNamespace: namespace}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	for _, ns := range namespaces.Items {
		add(ns.Name)
	}
	var services corev1.ServiceList
	if err := c.List(ctx, &services, client.MatchingFields{IndexUseWaypointNamespace: namespace}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	for _, svc := range services.Items {
		add(svc.Namespace)
	}
	return out, nil
}

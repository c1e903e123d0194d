// Package ambientmesh reconciles the AmbientMesh kind: it installs the mesh
// components, keeps them as the spec says (drift repair, pruning), rolls out
// version changes in a safe order and uninstalls in a safe order.
//
// Layout, after cluster-api's cluster controller: this file holds Reconcile
// and the watches; ambientmesh_phases.go the install phases; uninstall.go
// the deletion; rollout.go and ambientmesh_status.go the pure decisions;
// cache.go what the operator's cache holds of the kinds it creates.
package ambientmesh

import (
	"context"
	"errors"

	cmv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controllers/ambientmesh/manifests"
)

// Finalizer holds the AmbientMesh until the components are uninstalled.
const Finalizer = "mesh.ambientmesh.dev/uninstall"

// Reconciler reconciles the AmbientMesh.
type Reconciler struct {
	client.Client
	// APIReader reads past the cache, which holds only the objects the
	// operator labelled (CacheOnlyLabelled): the install namespace, which
	// the user may have created, and objects of a rendered name that are
	// not in the cache.
	APIReader client.Reader
	Recorder  events.EventRecorder
	// Clock is injected so tests can control timeouts.
	Clock clock.PassiveClock
}

// NewReconciler wires a Reconciler to the manager's client and event recorder.
func NewReconciler(mgr ctrl.Manager) *Reconciler {
	return &Reconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Recorder:  mgr.GetEventRecorder("ambientmesh-controller"),
		Clock:     clock.RealClock{},
	}
}

// The operator's own permissions. Besides managing the objects below it
// holds exactly the permissions it grants to the components (see
// manifests/rbac.go), because Kubernetes only lets it grant what it has.
//
// +kubebuilder:rbac:groups=mesh.ambientmesh.dev,resources=ambientmeshes,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=mesh.ambientmesh.dev,resources=ambientmeshes/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=mesh.ambientmesh.dev,resources=ambientmeshes/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch;create;delete
// +kubebuilder:rbac:groups="",resources=configmaps;serviceaccounts;services,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;patch;delete
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups=apps,resources=deployments;daemonsets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=clusterroles;clusterrolebindings;roles;rolebindings,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=cert-manager.io,resources=issuers;certificates,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=cert-manager.io,resources=clusterissuers,verbs=get;list;watch
// +kubebuilder:rbac:groups=cert-manager.io,resources=certificaterequests,verbs=get;list;watch;create;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch
// +kubebuilder:rbac:groups=mesh.ambientmesh.dev,resources=meshpolicies;waypoints,verbs=get;list;watch
// +kubebuilder:rbac:groups=mesh.ambientmesh.dev,resources=meshpolicies/status;waypoints/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=httproutes,verbs=get;list;watch
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;create;update

// Reconcile: fetch → finalizer → phases → at most one status patch.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, err error) {
	mesh := &meshv1alpha1.AmbientMesh{}
	if err := r.Get(ctx, req.NamespacedName, mesh); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if mesh.DeletionTimestamp.IsZero() && !controllerutil.ContainsFinalizer(mesh, Finalizer) {
		// The status is written on the pass this patch triggers.
		return ctrl.Result{}, r.patchFinalizers(ctx, mesh, controllerutil.AddFinalizer)
	}
	obs := &observation{}
	defer func() {
		obs.Err = err
		err = errors.Join(err, r.patchStatus(ctx, mesh, *obs))
	}()
	if !mesh.DeletionTimestamp.IsZero() {
		return r.reconcileDelete(ctx, mesh, obs)
	}
	return r.reconcileNormal(ctx, mesh, obs)
}

// SetupWithManager watches the mesh, the namespaced objects it controls,
// the cluster-scoped ones by label, the node-agent pods and waypoint
// proxies that drive the upgrade, and any cert-manager issuer it may
// depend on. Every watch but the mesh's and the issuers' needs only objects
// the operator labelled: cmd/operator caches no others (CacheOnlyLabelled).
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	byLabel := handler.EnqueueRequestsFromMapFunc(meshFromLabels)
	anyIssuer := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: meshv1alpha1.MeshName}}}
	})
	// Owns enqueues only for the controller owner reference (the builder's
	// default, handler.OnlyControllerOwner), i.e. objects this mesh controls.
	return ctrl.NewControllerManagedBy(mgr).
		For(&meshv1alpha1.AmbientMesh{}).
		Owns(&corev1.ConfigMap{}).
		Owns(&corev1.ServiceAccount{}).
		Owns(&corev1.Service{}).
		Owns(&appsv1.Deployment{}).
		Owns(&appsv1.DaemonSet{}).
		Owns(&policyv1.PodDisruptionBudget{}).
		Owns(&rbacv1.Role{}).
		Owns(&rbacv1.RoleBinding{}).
		Owns(&cmv1.Certificate{}).
		Watches(&rbacv1.ClusterRole{}, byLabel).
		Watches(&rbacv1.ClusterRoleBinding{}, byLabel).
		Watches(&corev1.Pod{}, byLabel).
		// Waypoint proxies are not the mesh's, but their versions drive
		// the Waypoints step of an upgrade.
		Watches(&appsv1.Deployment{}, byLabel, builder.WithPredicates(waypointVersionEvents)).
		Watches(&corev1.Namespace{}, byLabel).
		Watches(&cmv1.Issuer{}, anyIssuer).
		Watches(&cmv1.ClusterIssuer{}, anyIssuer).
		Named("ambientmesh").
		Complete(r)
}

// waypointVersionEvents passes a waypoint proxy's Deployment when it
// appears, goes, or changes version: the rollout reads nothing else of it.
var waypointVersionEvents = predicate.Funcs{
	CreateFunc: func(e event.CreateEvent) bool { return isWaypointProxy(e.Object) },
	DeleteFunc: func(e event.DeleteEvent) bool { return isWaypointProxy(e.Object) },
	UpdateFunc: func(e event.UpdateEvent) bool {
		return isWaypointProxy(e.ObjectNew) && templateVersion(e.ObjectOld) != templateVersion(e.ObjectNew)
	},
	GenericFunc: func(event.GenericEvent) bool { return false },
}

func isWaypointProxy(obj client.Object) bool {
	_, ok := obj.GetLabels()[meshv1alpha1.LabelWaypoint]
	return ok
}

func templateVersion(obj client.Object) string {
	if d, ok := obj.(*appsv1.Deployment); ok {
		return d.Spec.Template.Labels[manifests.LabelVersion]
	}
	return ""
}

// meshFromLabels maps an object the operator labelled (a cluster-scoped
// RBAC object, a ztunnel or CNI agent pod, the namespace) to its mesh.
func meshFromLabels(_ context.Context, obj client.Object) []reconcile.Request {
	l := obj.GetLabels()
	if l[manifests.LabelManagedBy] != manifests.ManagedByValue || l[manifests.LabelMesh] == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: l[manifests.LabelMesh]}}}
}

// patchFinalizers adds or removes the finalizer with a merge patch.
func (r *Reconciler) patchFinalizers(ctx context.Context, mesh *meshv1alpha1.AmbientMesh,
	change func(client.Object, string) bool) error {
	base := mesh.DeepCopy()
	if !change(mesh, Finalizer) {
		return nil
	}
	return client.IgnoreNotFound(r.Patch(ctx, mesh, client.MergeFrom(base)))
}

// patchStatus writes the status computed from this pass, once, and only
// when it differs from the stored one (a pass that changed nothing sends no
// request), and records an event for every condition that changed.
func (r *Reconciler) patchStatus(ctx context.Context, mesh *meshv1alpha1.AmbientMesh, obs observation) error {
	base := mesh.DeepCopy()
	mesh.Status = computeStatus(mesh, obs, r.Clock.Now())
	if equality.Semantic.DeepEqual(base.Status, mesh.Status) {
		return nil
	}
	r.recordTransitions(base, mesh)
	return client.IgnoreNotFound(r.Status().Patch(ctx, mesh, client.MergeFrom(base)))
}

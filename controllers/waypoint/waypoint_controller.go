// Package waypoint reconciles the Waypoint kind: each Waypoint gets a
// ServiceAccount, a Deployment of the waypoint proxy (cmd/waypoint) at the
// mesh's version, a Service exposing HBONE (15008) and readiness (15021), a
// ConfigMap with the mesh config and the control plane's CA, a
// PodDisruptionBudget when more than one replica must run and a
// HorizontalPodAutoscaler when autoscaling is set. Objects are server-side
// applied, repaired when edited (the owned kinds are watched) and removed
// by the garbage collector with the Waypoint (controller owner references;
// no finalizer is needed because nothing outside the namespace is created).
//
// Waypoints follow mesh upgrades: a waypoint moves to a new version once
// ztunnel runs it on every node (see proxyVersion); the AmbientMesh rollout
// reports that step as Waypoints.
//
// The Provisioner in provision.go is shared with the Gateway controller
// (controllers/gateway), so a Gateway of the waypoint class produces the
// same objects. Layout, after the AmbientMesh controller: this file holds
// Reconcile and the watches, provision.go the phases, waypoint_status.go
// the pure status functions.
package waypoint

import (
	"context"
	"errors"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controllers/waypoint/manifests"
)

// DefaultClusterDomain is the DNS suffix of Service hostnames unless the
// operator is told otherwise.
const DefaultClusterDomain = "cluster.local"

// Reconciler reconciles Waypoints.
type Reconciler struct {
	client.Client
	Provisioner *Provisioner
	// Clock is injected so tests control condition transition times.
	Clock clock.PassiveClock
}

// NewProvisioner wires a Provisioner to the manager; recorderName names the
// controller in the events it records.
func NewProvisioner(mgr ctrl.Manager, recorderName, clusterDomain string) *Provisioner {
	return &Provisioner{
		Client:        mgr.GetClient(),
		APIReader:     mgr.GetAPIReader(),
		Recorder:      mgr.GetEventRecorder(recorderName),
		ClusterDomain: clusterDomain,
	}
}

// NewReconciler wires a Reconciler to the manager.
func NewReconciler(mgr ctrl.Manager, clusterDomain string) *Reconciler {
	return &Reconciler{
		Client:      mgr.GetClient(),
		Provisioner: NewProvisioner(mgr, "waypoint-controller", clusterDomain),
		Clock:       clock.RealClock{},
	}
}

// The operator's permissions for waypoints. Updating the owner's
// finalizers is what the API server requires to set blockOwnerDeletion on
// the objects it owns; the one Secret it reads is the CA bundle it copies.
//
// +kubebuilder:rbac:groups=mesh.ambientmesh.dev,resources=waypoints,verbs=get;list;watch
// +kubebuilder:rbac:groups=mesh.ambientmesh.dev,resources=waypoints/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=mesh.ambientmesh.dev,resources=waypoints/finalizers,verbs=update
// +kubebuilder:rbac:groups=mesh.ambientmesh.dev,resources=ambientmeshes,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=configmaps;serviceaccounts;services,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=secrets,resourceNames=ambientmesh-controlplane-tls,verbs=get
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=autoscaling,resources=horizontalpodautoscalers,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile: fetch → provision → one status patch. Deletion needs no step:
// the garbage collector removes the owned objects.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	wp := &meshv1alpha1.Waypoint{}
	if err := r.Get(ctx, req.NamespacedName, wp); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !wp.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}
	obs := r.Provisioner.Provision(ctx, wp, ProxyOf(wp))
	return ctrl.Result{}, errors.Join(obs.Err, r.patchStatus(ctx, wp, obs))
}

// ProxyOf is the proxy a Waypoint asks for.
func ProxyOf(wp *meshv1alpha1.Waypoint) manifests.Proxy {
	return manifests.Proxy{
		Name:        wp.Name,
		Namespace:   wp.Namespace,
		Owner:       *metav1.NewControllerRef(wp, meshv1alpha1.GroupVersion.WithKind("Waypoint")),
		Replicas:    wp.Spec.Replicas,
		Autoscaling: wp.Spec.Autoscaling,
		Resources:   wp.Spec.Resources,
	}
}

// patchStatus writes the status computed from this pass, only when it changed.
func (r *Reconciler) patchStatus(ctx context.Context, wp *meshv1alpha1.Waypoint, obs Observation) error {
	base := wp.DeepCopy()
	wp.Status = computeStatus(wp, obs, r.Clock.Now())
	if equality.Semantic.DeepEqual(base.Status, wp.Status) {
		return nil
	}
	return client.IgnoreNotFound(r.Status().Patch(ctx, wp, client.MergeFrom(base)))
}

// SetupWithManager watches Waypoints, the objects they control, and what
// every waypoint depends on: the AmbientMesh (readiness, version, upgrade
// step) and the mesh ConfigMap the proxies copy.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	allWaypoints := handler.EnqueueRequestsFromMapFunc(r.allWaypoints)
	b := ctrl.NewControllerManagedBy(mgr).For(&meshv1alpha1.Waypoint{})
	for _, t := range OwnedTypes() {
		b = b.Owns(t)
	}
	return b.
		Watches(&meshv1alpha1.AmbientMesh{}, allWaypoints, builder.WithPredicates(MeshChanges)).
		Watches(&corev1.ConfigMap{}, allWaypoints, builder.WithPredicates(predicate.NewPredicateFuncs(IsMeshConfigMap))).
		Named("waypoint").
		Complete(r)
}

func (r *Reconciler) allWaypoints(ctx context.Context, _ client.Object) []reconcile.Request {
	list := &meshv1alpha1.WaypointList{}
	if err := r.List(ctx, list); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "list waypoints after a mesh change")
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for _, wp := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&wp)})
	}
	return reqs
}

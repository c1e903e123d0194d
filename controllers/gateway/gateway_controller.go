package gateway

import (
	"context"
	"errors"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controllers/waypoint"
	"github.com/ambientmesh/ambient-operator/controllers/waypoint/manifests"
)

// Reconciler reconciles Gateways of the waypoint classes.
type Reconciler struct {
	client.Client
	Provisioner *waypoint.Provisioner
	// Clock is injected so tests control condition transition times.
	Clock clock.PassiveClock
}

// NewReconciler wires a Reconciler to the manager.
func NewReconciler(mgr ctrl.Manager, clusterDomain string) *Reconciler {
	return &Reconciler{
		Client:      mgr.GetClient(),
		Provisioner: waypoint.NewProvisioner(mgr, "gateway-controller", clusterDomain),
		Clock:       clock.RealClock{},
	}
}

// The objects a Gateway owns are the Waypoint's (see the markers in
// controllers/waypoint); these are the Gateway API ones.
//
// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=gateways,verbs=get;list;watch
// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=gateways/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=gateways/finalizers,verbs=update

// Reconcile: fetch → is it ours → accept → provision (or remove) → one
// status patch.
// Gateways of other classes are left untouched, status included.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	gw := &gatewayv1.Gateway{}
	if err := r.Get(ctx, req.NamespacedName, gw); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !gw.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}
	if ours, err := r.ofWaypointClass(ctx, gw); err != nil || !ours {
		return ctrl.Result{}, err
	}
	acc := accept(gw)
	var obs waypoint.Observation
	if acc.Accepted.OK {
		obs = r.Provisioner.Provision(ctx, gw, proxyOf(gw))
	} else {
		// A Gateway edited into one that is not accepted runs no proxy.
		obs.Err = r.Provisioner.Remove(ctx, gw, proxyOf(gw))
	}
	return ctrl.Result{}, errors.Join(obs.Err, r.patchStatus(ctx, gw, acc, obs))
}

func (r *Reconciler) ofWaypointClass(ctx context.Context, gw *gatewayv1.Gateway) (bool, error) {
	gc := &gatewayv1.GatewayClass{}
	if err := r.Get(ctx, client.ObjectKey{Name: string(gw.Spec.GatewayClassName)}, gc); err != nil {
		return false, client.IgnoreNotFound(err)
	}
	return gc.Spec.ControllerName == ControllerName, nil
}

// proxyOf is the proxy a Gateway asks for: one replica with the mesh's
// waypoint defaults.
func proxyOf(gw *gatewayv1.Gateway) manifests.Proxy {
	return manifests.Proxy{
		Name:      gw.Name,
		Namespace: gw.Namespace,
		Owner:     *metav1.NewControllerRef(gw, schema.GroupVersion(gatewayv1.GroupVersion).WithKind("Gateway")),
	}
}

// patchStatus writes the status computed from this pass, only when it changed.
func (r *Reconciler) patchStatus(ctx context.Context, gw *gatewayv1.Gateway, acc acceptance, obs waypoint.Observation) error {
	base := gw.DeepCopy()
	gw.Status = computeStatus(gw, acc, obs, r.Clock.Now())
	if equality.Semantic.DeepEqual(base.Status, gw.Status) {
		return nil
	}
	return client.IgnoreNotFound(r.Status().Patch(ctx, gw, client.MergeFrom(base)))
}

// SetupWithManager watches Gateways, the objects they control, their
// classes, and what every waypoint depends on (the mesh and its ConfigMap).
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	allGateways := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, _ client.Object) []reconcile.Request {
		return r.gateways(ctx, "")
	})
	gatewaysOfClass := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, class client.Object) []reconcile.Request {
		return r.gateways(ctx, class.GetName())
	})
	b := ctrl.NewControllerManagedBy(mgr).For(&gatewayv1.Gateway{})
	for _, t := range waypoint.OwnedTypes() {
		b = b.Owns(t)
	}
	return b.
		Watches(&gatewayv1.GatewayClass{}, gatewaysOfClass).
		Watches(&meshv1alpha1.AmbientMesh{}, allGateways, builder.WithPredicates(waypoint.MeshChanges)).
		Watches(&corev1.ConfigMap{}, allGateways, builder.WithPredicates(predicate.NewPredicateFuncs(waypoint.IsMeshConfigMap))).
		Named("gateway").
		Complete(r)
}

// gateways lists the Gateways of class (all of them when class is empty);
// Reconcile skips those of other controllers.
func (r *Reconciler) gateways(ctx context.Context, class string) []reconcile.Request {
	list := &gatewayv1.GatewayList{}
	if err := r.List(ctx, list); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "list gateways")
		return nil
	}
	var reqs []reconcile.Request
	for _, gw := range list.Items {
		if class == "" || string(gw.Spec.GatewayClassName) == class {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&gw)})
		}
	}
	return reqs
}

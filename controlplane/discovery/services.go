package discovery

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controlplane/xds/translate"
)

// ServiceReconciler keeps one workload API Service per Kubernetes Service.
type ServiceReconciler struct {
	reader
	publisher Publisher
}

func (r *ServiceReconciler) setup(mgr ctrl.Manager) error {
	b := ctrl.NewControllerManagedBy(mgr).
		Named("xds-services").
		For(&corev1.Service{}).
		Watches(&corev1.Service{}, handler.EnqueueRequestsFromMapFunc(onlyWaypointObjects(r.servicesUsingWaypointsOf))).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(onlyWaypointObjects(r.servicesUsingWaypointsOf))).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(r.servicesInNamespaceOf)).
		Watches(&meshv1.Waypoint{}, handler.EnqueueRequestsFromMapFunc(r.servicesUsingWaypointsOf))
	if r.gateways {
		b = b.Watches(&gatewayv1.Gateway{}, handler.EnqueueRequestsFromMapFunc(r.servicesUsingWaypointsOf),
			builder.WithPredicates(WaypointGatewayChanged))
	}
	return b.WithOptions(servingOptions(2)).Complete(r)
}

// Reconcile recomputes one Service. Its resource name derives from namespace and name,
// so a deleted Service is unpublished without remembering anything.
func (r *ServiceReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	name := translate.ServiceNameFor(r.mesh, req.Namespace, req.Name)
	var svc corev1.Service
	if err := r.client.Get(ctx, req.NamespacedName, &svc); err != nil {
		if apierrors.IsNotFound(err) {
			r.publisher.Set(pb.ServiceTypeURL, name, nil)
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, err
	}
	ns, err := r.namespace(ctx, svc.Namespace)
	if err != nil {
		return reconcile.Result{}, err
	}
	waypoints, err := r.usedWaypoint(ctx, svc.Namespace, svc.Labels, ns)
	if err != nil {
		return reconcile.Result{}, err
	}
	if out := translate.Service(r.mesh, &svc, ns, waypoints); out != nil {
		r.publisher.Set(pb.ServiceTypeURL, name, out)
	} else {
		r.publisher.Set(pb.ServiceTypeURL, name, nil)
	}
	return reconcile.Result{}, nil
}

// AuthorizationReconciler keeps one Authorization per MeshPolicy that ztunnel enforces.
type AuthorizationReconciler struct {
	reader
	publisher Publisher
}

func (r *AuthorizationReconciler) setup(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("xds-authorizations").
		For(&meshv1.MeshPolicy{}).
		WithOptions(servingOptions(1)).
		Complete(r)
}

// Reconcile recomputes one Authorization.
func (r *AuthorizationReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	name := pb.AuthorizationResourceName(req.Namespace, req.Name)
	var p meshv1.MeshPolicy
	if err := r.client.Get(ctx, req.NamespacedName, &p); err != nil {
		if apierrors.IsNotFound(err) {
			r.publisher.Set(pb.AuthorizationTypeURL, name, nil)
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, err
	}
	if a := translate.Authorization(r.mesh, &p); a != nil {
		r.publisher.Set(pb.AuthorizationTypeURL, name, a)
	} else {
		r.publisher.Set(pb.AuthorizationTypeURL, name, nil)
	}
	return reconcile.Result{}, nil
}

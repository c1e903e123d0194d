package discovery

import (
	"context"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controlplane/xds/translate"
)

// WorkloadReconciler keeps one Workload per pod.
type WorkloadReconciler struct {
	reader
	publisher Publisher

	// uids remembers each pod's uid (the Workload's resource name) so a deleted pod, which
	// the cache no longer holds, can be unpublished, and a pod recreated under the same
	// name replaces its predecessor.
	mu   sync.Mutex
	uids map[client.ObjectKey]string
}

func (r *WorkloadReconciler) setup(mgr ctrl.Manager) error {
	b := ctrl.NewControllerManagedBy(mgr).
		Named("xds-workloads").
		For(&corev1.Pod{}).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(onlyWaypointObjects(r.podsUsingWaypointsOf))).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(r.podsInNamespaceOf)).
		Watches(&corev1.Service{}, handler.EnqueueRequestsFromMapFunc(r.podsOfService)).
		Watches(&meshv1.MeshPolicy{}, handler.EnqueueRequestsFromMapFunc(r.podsInNamespaceOf)).
		Watches(&meshv1.Waypoint{}, handler.EnqueueRequestsFromMapFunc(r.podsUsingWaypointsOf))
	if r.gateways {
		b = b.Watches(&gatewayv1.Gateway{}, handler.EnqueueRequestsFromMapFunc(r.podsUsingWaypointsOf),
			builder.WithPredicates(WaypointGatewayChanged))
	}
	return b.WithOptions(servingOptions(4)).Complete(r)
}

// Reconcile recomputes the pod's Workload and publishes it when it changed.
func (r *WorkloadReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var pod corev1.Pod
	if err := r.client.Get(ctx, req.NamespacedName, &pod); err != nil {
		if apierrors.IsNotFound(err) {
			r.forget(req.NamespacedName, "")
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, err
	}
	in, err := r.inputs(ctx, &pod)
	if err != nil {
		return reconcile.Result{}, err
	}
	w := translate.Workload(r.mesh, in)
	if w == nil {
		r.forget(req.NamespacedName, "")
		return reconcile.Result{}, nil
	}
	r.forget(req.NamespacedName, w.Uid)
	r.publisher.Set(pb.WorkloadTypeURL, w.Uid, w)
	return reconcile.Result{}, nil
}

// forget unpublishes the Workload previously published for key unless its uid is keep,
// and records keep as the current one.
func (r *WorkloadReconciler) forget(key client.ObjectKey, keep string) {
	r.mu.Lock()
	old := r.uids[key]
	if keep == "" {
		delete(r.uids, key)
	} else {
		r.uids[key] = keep
	}
	r.mu.Unlock()
	if old != "" && old != keep {
		r.publisher.Set(pb.WorkloadTypeURL, old, nil)
	}
}

func (r *WorkloadReconciler) inputs(ctx context.Context, pod *corev1.Pod) (translate.PodInputs, error) {
	in := translate.PodInputs{Pod: pod}
	var err error
	if in.Namespace, err = r.namespace(ctx, pod.Namespace); err != nil {
		return in, err
	}
	if in.Services, err = r.services(ctx, pod.Namespace); err != nil {
		return in, err
	}
	if in.Policies, err = r.policies(ctx, pod.Namespace); err != nil {
		return in, err
	}
	in.Waypoints, err = r.usedWaypoint(ctx, pod.Namespace, pod.Labels, in.Namespace)
	return in, err
}

// podsOfService maps a Service to the pods it selects (called for the old and the new
// object on update, so pods it stops selecting are recomputed too); a waypoint's Service
// changes the address of every pod that may use it.
func (r *WorkloadReconciler) podsOfService(ctx context.Context, o client.Object) []reconcile.Request {
	svc, ok := o.(*corev1.Service)
	if !ok {
		return nil
	}
	if svc.Labels[meshv1.LabelWaypoint] != "" {
		return r.podsUsingWaypointsOf(ctx, svc)
	}
	if len(svc.Spec.Selector) == 0 {
		return nil
	}
	var list corev1.PodList
	if err := r.client.List(ctx, &list, client.InNamespace(svc.Namespace),
		client.MatchingLabels(svc.Spec.Selector), client.UnsafeDisableDeepCopy); err != nil {
		return mapFailed(ctx, err, o, "pods the Service selects")
	}
	return requests(list.Items)
}

// Package status writes what the control plane knows back to the API: MeshPolicy
// Accepted/Enforced conditions and enforcedBy, and Waypoint addresses. These reconcilers
// run on the leader only, and write a status once per change: they compute it with the
// pure functions of controlplane/xds/translate, compare it with what is stored, and apply
// it (server-side apply on the status subresource, owning only the fields they compute)
// only when it differs.
package status

import (
	"context"
	"encoding/json"
	"reflect"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controlplane/xds/translate"
)

// FieldOwner is the field manager of the control plane's status writes.
const FieldOwner = "ambientmesh-controlplane"

// Setup registers the status reconcilers (leader election applies: the default).
func Setup(mgr ctrl.Manager, mesh translate.Mesh, lookup translate.TargetLookup) error {
	p := &PolicyReconciler{Client: mgr.GetClient(), Lookup: lookup}
	if err := ctrl.NewControllerManagedBy(mgr).Named("meshpolicy-status").
		For(&meshv1.MeshPolicy{}).
		Watches(&corev1.Service{}, handler.EnqueueRequestsFromMapFunc(p.policiesInNamespaceOf)).
		Watches(&meshv1.Waypoint{}, handler.EnqueueRequestsFromMapFunc(p.policiesInNamespaceOf)).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(p.policiesInNamespaceOf)).
		Complete(p); err != nil {
		return err
	}
	w := &WaypointReconciler{Client: mgr.GetClient(), Mesh: mesh}
	return ctrl.NewControllerManagedBy(mgr).Named("waypoint-status").
		For(&meshv1.Waypoint{}).
		Watches(&corev1.Service{}, handler.EnqueueRequestsFromMapFunc(waypointOfService)).
		Complete(w)
}

// PolicyReconciler writes MeshPolicy status.
type PolicyReconciler struct {
	Client client.Client
	Lookup translate.TargetLookup
}

// Reconcile computes the policy's status and applies it when it changed.
func (r *PolicyReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var p meshv1.MeshPolicy
	if err := r.Client.Get(ctx, req.NamespacedName, &p); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	want := translate.PolicyStatus(&p, translate.TargetStates(&p, r.Lookup), metav1.Now())
	if policyStatusEqual(p.Status, want) {
		return reconcile.Result{}, nil
	}
	return reconcile.Result{}, applyStatus(ctx, r.Client, &p, meshv1.GroupVersion.WithKind("MeshPolicy"), want)
}

// policyStatusEqual ignores nothing: PolicyStatus keeps transition times of unchanged
// conditions, so equal inputs give an equal status.
func policyStatusEqual(a, b meshv1.MeshPolicyStatus) bool {
	if a.ObservedGeneration != b.ObservedGeneration || !reflect.DeepEqual(a.EnforcedBy, b.EnforcedBy) || len(a.Conditions) != len(b.Conditions) {
		return false
	}
	for i := range b.Conditions {
		x, y := a.Conditions[i], b.Conditions[i]
		if x.Type != y.Type || x.Status != y.Status || x.Reason != y.Reason || x.Message != y.Message ||
			x.ObservedGeneration != y.ObservedGeneration || !x.LastTransitionTime.Equal(&y.LastTransitionTime) {
			return false
		}
	}
	return true
}

func (r *PolicyReconciler) policiesInNamespaceOf(ctx context.Context, o client.Object) []reconcile.Request {
	ns := o.GetNamespace()
	if _, isNS := o.(*corev1.Namespace); isNS {
		ns = o.GetName()
	}
	var list meshv1.MeshPolicyList
	if err := r.Client.List(ctx, &list, client.InNamespace(ns)); err != nil {
		return nil
	}
	var out []reconcile.Request
	for i := range list.Items {
		// Only policies with targetRefs depend on Services, Waypoints and Namespaces.
		if len(list.Items[i].Spec.TargetRefs) > 0 {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
		}
	}
	return out
}

// WaypointReconciler writes the addresses of a Waypoint (from its Service).
type WaypointReconciler struct {
	Client client.Client
	Mesh   translate.Mesh
}

// Reconcile computes the waypoint's addresses and applies them when they changed.
func (r *WaypointReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var wp meshv1.Waypoint
	if err := r.Client.Get(ctx, req.NamespacedName, &wp); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	var services corev1.ServiceList
	if err := r.Client.List(ctx, &services, client.InNamespace(wp.Namespace),
		client.MatchingLabels{meshv1.LabelWaypoint: wp.Name}); err != nil {
		return reconcile.Result{}, err
	}
	var svc *corev1.Service
	if len(services.Items) > 0 {
		svc = &services.Items[0]
	}
	addresses := translate.WaypointAddresses(r.Mesh, svc)
	port := int32(0)
	if svc != nil {
		port = translate.WaypointHBONEPort
	}
	if reflect.DeepEqual(addresses, wp.Status.Addresses) && port == wp.Status.HBONEPort {
		return reconcile.Result{}, nil
	}
	st := map[string]any{"addresses": addresses, "hbonePort": port}
	if addresses == nil {
		st["addresses"] = []meshv1.WaypointAddress{}
	}
	return reconcile.Result{}, applyStatus(ctx, r.Client, &wp, meshv1.GroupVersion.WithKind("Waypoint"), st)
}

func waypointOfService(_ context.Context, o client.Object) []reconcile.Request {
	name := o.GetLabels()[meshv1.LabelWaypoint]
	if name == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: client.ObjectKey{Namespace: o.GetNamespace(), Name: name}}}
}

// applyStatus server-side applies status (any JSON-serialisable value) to obj's status
// subresource under FieldOwner, so only the fields given are owned; the operator's own
// status fields (e.g. Waypoint conditions) are left alone.
func applyStatus(ctx context.Context, c client.Client, obj client.Object, gvk schema.GroupVersionKind, status any) error {
	raw, err := json.Marshal(status)
	if err != nil {
		return err
	}
	var st map[string]any
	if err := json.Unmarshal(raw, &st); err != nil {
		return err
	}
	u := &unstructured.Unstructured{Object: map[string]any{"status": st}}
	u.SetGroupVersionKind(gvk)
	u.SetNamespace(obj.GetNamespace())
	u.SetName(obj.GetName())
	err = c.Status().Patch(ctx, u, client.Apply, client.FieldOwner(FieldOwner), client.ForceOwnership)
	if apierrors.IsNotFound(err) {
		return nil // deleted meanwhile
	}
	return err
}

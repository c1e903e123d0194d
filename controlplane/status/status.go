// Package status writes what the control plane knows back to the API: MeshPolicy
// Accepted/Enforced conditions and enforcedBy, Waypoint addresses, and the status.parents
// entries of HTTPRoutes and GRPCRoutes attached to Services. These reconcilers run on the
// leader only, and write a status once per change: they compute it with pure functions
// (controlplane/xds/translate, controlplane/xds/waypoint), compare it with what is
// stored, and write it only when it differs.
//
// Enforced tells the truth about the proxies: a policy is Enforced only when every
// waypoint that must enforce it is Ready (its Waypoint's Ready condition, written by the
// operator) and its connected proxies ACKed the configuration built from this generation
// of the policy, or, for a policy without targetRefs, when the ztunnel of every node that
// runs a selected workload ACKed what it needs. The xDS server tells which clients hold
// what, and announces changes, which requeue the policies they concern (no polling).
//
// Not covered: ACKs are known only to the replica a proxy is connected to. With several
// control-plane replicas, the leader sees only its own clients, and a policy whose proxies
// are connected elsewhere reads Pending ("not connected").
package status

import (
	"context"
	"encoding/json"
	"reflect"
	"time"

	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	xdsserver "github.com/ambientmesh/ambient-operator/controlplane/xds/server"
	"github.com/ambientmesh/ambient-operator/controlplane/xds/translate"
)

// FieldOwner is the field manager of the control plane's status writes.
const FieldOwner = "ambientmesh-controlplane"

// DefaultReconnectGrace is how long after the xDS server starts a policy already Enforced
// is not downgraded to Pending: proxies reconnect within seconds of a control-plane
// restart and announce what they hold, and until then the server knows nothing of them.
const DefaultReconnectGrace = 30 * time.Second

// Options configure the status writers.
type Options struct {
	Mesh    translate.Mesh
	Lookup  translate.TargetLookup
	Proxies Proxies
	// RouteKinds are the installed Gateway API route kinds (HTTPRoute, GRPCRoute).
	RouteKinds map[string]bool
	// ReconnectGrace: see DefaultReconnectGrace (used when zero).
	ReconnectGrace time.Duration
}

// Setup registers the status reconcilers (leader election applies: the default).
func Setup(mgr ctrl.Manager, opts Options) error {
	if opts.ReconnectGrace == 0 {
		opts.ReconnectGrace = DefaultReconnectGrace
	}
	p := &PolicyReconciler{Client: mgr.GetClient(), Mesh: opts.Mesh, Lookup: opts.Lookup, Proxies: opts.Proxies, ReconnectGrace: opts.ReconnectGrace}
	acks := make(chan event.TypedGenericEvent[xdsserver.AckChange])
	// A Runnable without NeedLeaderElection runs on the leader only, like the controller.
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		forwardAcks(ctx, opts.Proxies.WatchAcks(ctx), acks)
		return nil
	})); err != nil {
		return err
	}
	if err := ctrl.NewControllerManagedBy(mgr).Named("meshpolicy-status").
		For(&meshv1.MeshPolicy{}).
		Watches(&corev1.Service{}, handler.EnqueueRequestsFromMapFunc(p.waypointPoliciesInNamespaceOf)).
		Watches(&meshv1.Waypoint{}, handler.EnqueueRequestsFromMapFunc(p.waypointPoliciesInNamespaceOf)).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(p.policiesOfNamespace)).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(p.ztunnelPoliciesOfPod), builder.WithPredicates(workloadPlacementChanged)).
		WatchesRawSource(source.Channel(acks, handler.TypedEnqueueRequestsFromMapFunc(p.policiesHeldBy))).
		Complete(p); err != nil {
		return err
	}
	w := &WaypointReconciler{Client: mgr.GetClient(), Mesh: opts.Mesh}
	if err := ctrl.NewControllerManagedBy(mgr).Named("waypoint-status").
		For(&meshv1.Waypoint{}).
		Watches(&corev1.Service{}, handler.EnqueueRequestsFromMapFunc(waypointOfService)).
		Complete(w); err != nil {
		return err
	}
	return setupRoutes(mgr, opts.RouteKinds)
}

func forwardAcks(ctx context.Context, changes <-chan xdsserver.AckChange, out chan<- event.TypedGenericEvent[xdsserver.AckChange]) {
	for c := range changes {
		select {
		case out <- event.TypedGenericEvent[xdsserver.AckChange]{Object: c}:
		case <-ctx.Done():
			return
		}
	}
}

// Proxies is what the xDS server knows of the proxies (controlplane/xds/server.Server).
type Proxies interface {
	// Waypoint: the waypoint's published configuration and what its proxies hold of it.
	Waypoint(namespace, name string) xdsserver.WaypointState
	// ZTunnel: whether the ztunnel of node holds want (type URL → name → version).
	ZTunnel(node string, want map[string]map[string]string) xdsserver.Sync
	// Published returns a workload API resource as published (nil when absent).
	Published(typeURL, name string) proto.Message
	// WatchAcks announces clients whose held configuration may have changed.
	WatchAcks(ctx context.Context) <-chan xdsserver.AckChange
	// Started is when the xDS server started serving clients' state.
	Started() time.Time
}

// PolicyReconciler writes MeshPolicy status.
type PolicyReconciler struct {
	Client  client.Client
	Mesh    translate.Mesh
	Lookup  translate.TargetLookup
	Proxies Proxies
	// ReconnectGrace: see DefaultReconnectGrace.
	ReconnectGrace time.Duration
}

// Reconcile computes the policy's status and applies it when it changed.
func (r *PolicyReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var p meshv1.MeshPolicy
	if err := r.Client.Get(ctx, req.NamespacedName, &p); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	targets := translate.TargetStates(&p, r.Lookup)
	enf, err := r.enforcement(ctx, &p, targets)
	if err != nil {
		return reconcile.Result{}, err
	}
	want := translate.PolicyStatus(&p, targets, enf, metav1.Now())
	if wait := r.graceLeft(&p, want); wait > 0 {
		return reconcile.Result{RequeueAfter: wait}, nil
	}
	if policyStatusEqual(p.Status, want) {
		return reconcile.Result{}, nil
	}
	return reconcile.Result{}, applyStatus(ctx, r.Client, &p, meshv1.GroupVersion.WithKind("MeshPolicy"), want)
}

// graceLeft is how long to keep a policy Enforced for its generation instead of writing
// Pending, right after the xDS server started (see DefaultReconnectGrace); 0 to write now.
func (r *PolicyReconciler) graceLeft(p *meshv1.MeshPolicy, want meshv1.MeshPolicyStatus) time.Duration {
	left := time.Until(r.Proxies.Started().Add(r.ReconnectGrace))
	if left <= 0 {
		return 0
	}
	was := meta.FindStatusCondition(p.Status.Conditions, meshv1.PolicyConditionEnforced)
	now := meta.FindStatusCondition(want.Conditions, meshv1.PolicyConditionEnforced)
	if was == nil || was.Status != metav1.ConditionTrue || was.ObservedGeneration != p.Generation || now.Reason != meshv1.ReasonPending {
		return 0
	}
	return left
}

// policyStatusEqual ignores nothing: PolicyStatus keeps transition times of unchanged
// conditions, so equal inputs give an equal status.
func policyStatusEqual(a, b meshv1.MeshPolicyStatus) bool {
	return a.ObservedGeneration == b.ObservedGeneration && reflect.DeepEqual(a.EnforcedBy, b.EnforcedBy) &&
		conditionsEqual(a.Conditions, b.Conditions)
}

func conditionsEqual(a, b []metav1.Condition) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range b {
		x, y := a[i], b[i]
		if x.Type != y.Type || x.Status != y.Status || x.Reason != y.Reason || x.Message != y.Message ||
			x.ObservedGeneration != y.ObservedGeneration || !x.LastTransitionTime.Equal(&y.LastTransitionTime) {
			return false
		}
	}
	return true
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

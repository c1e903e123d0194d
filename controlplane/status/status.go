// Package status writes what the control plane knows back to the API: MeshPolicy
// Accepted/Enforced conditions and enforcedBy, and the status.parents entries of
// HTTPRoutes and GRPCRoutes attached to Services. These reconcilers run on the leader
// only, and write a status once per change: they compute it with pure functions
// (controlplane/xds/translate, controlplane/xds/waypoint), compare it with what is
// stored, and write it only when it differs. A Waypoint's (or Gateway's) own status is
// the operator's: the control plane only reads it.
//
// Enforced tells the truth about the proxies: a policy is Enforced only when every
// waypoint that must enforce it is Ready (its Waypoint's Ready condition, or a waypoint
// Gateway's Programmed one, written by the operator) and its connected proxies ACKed the
// configuration built from this generation of the policy, or, for a policy without
// targetRefs, when the ztunnel of every node that runs a selected workload ACKed what it
// needs. The waypoint that must enforce a target is the one ztunnel sends its traffic to,
// of any namespace (translate.CarryingWaypoint). The xDS server tells which clients hold
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
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controlplane/discovery"
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
	// GatewayAPIKinds are the installed Gateway API kinds (Gateway, HTTPRoute, GRPCRoute;
	// see discovery.InstalledGatewayAPIKinds).
	GatewayAPIKinds map[string]bool
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
	b := ctrl.NewControllerManagedBy(mgr).Named("meshpolicy-status").
		For(&meshv1.MeshPolicy{}).
		Watches(&corev1.Service{}, handler.EnqueueRequestsFromMapFunc(p.waypointPoliciesInNamespaceOf)).
		Watches(&meshv1.Waypoint{}, handler.EnqueueRequestsFromMapFunc(p.policiesUsingWaypointsOf)).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(p.policiesOfNamespace)).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(p.ztunnelPoliciesOfPod), builder.WithPredicates(workloadPlacementChanged)).
		WatchesRawSource(source.Channel(acks, handler.TypedEnqueueRequestsFromMapFunc(p.policiesHeldBy)))
	if opts.GatewayAPIKinds["Gateway"] {
		b = b.Watches(&gatewayv1.Gateway{}, handler.EnqueueRequestsFromMapFunc(p.policiesUsingWaypointsOf),
			builder.WithPredicates(discovery.WaypointGatewayChanged))
	}
	if err := b.Complete(p); err != nil {
		return err
	}
	return setupRoutes(mgr, opts)
}

// mapFailed logs the lookup error of a map function and drops the event (a map function
// cannot return an error): the statuses it would have recomputed wait for their next
// event.
func mapFailed(ctx context.Context, err error, what string) []reconcile.Request {
	log.FromContext(ctx).Error(err, "event dropped: cannot list what it affects", "affected", what)
	return nil
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
	// Published returns a workload API resource as published and its version (nil and ""
	// when absent).
	Published(typeURL, name string) (proto.Message, string)
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

// applyStatus server-side applies status (any JSON-serialisable value) to obj's status
// subresource under FieldOwner, so only the fields given are owned; other writers' status
// fields are left alone.
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
	err = c.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(FieldOwner), client.ForceOwnership)
	if apierrors.IsNotFound(err) {
		return nil // deleted meanwhile
	}
	return err
}

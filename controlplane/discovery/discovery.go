// Package discovery watches the cluster through a controller-runtime cache and keeps the
// xDS caches up to date: one reconciler per resource type (Workload from Pod, Service from
// Service, Authorization from MeshPolicy), each recomputing one resource with the pure
// functions of controlplane/xds/translate and publishing it only when it changed; and one
// per waypoint, rebuilding its Envoy resources with controlplane/xds/waypoint.
//
// A waypoint is a Waypoint or, when the Gateway API CRDs are installed, a Gateway of the
// waypoint class (translate.WaypointFromGateway); the reader lists both as one
// (reader.waypoints), and Gateway events requeue what Waypoint events do.
//
// Every replica runs these reconcilers (they write nothing to the API server), so they opt
// out of leader election; only the status writers in controlplane/status need the lease.
package discovery

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controlplane/xds/translate"
	"google.golang.org/protobuf/proto"
)

// Field indexes on the cache.
const (
	// IndexPodNode indexes pods by spec.nodeName (the CA asks "which pods are on node N").
	IndexPodNode = "spec.nodeName"
	// IndexPodWaypoint indexes pods by their ambientmesh.dev/waypoint label value.
	IndexPodWaypoint = "label.waypoint"
	// IndexServiceWaypoint indexes Services by their ambientmesh.dev/waypoint label value.
	IndexServiceWaypoint = "label.waypoint"
	// IndexUseWaypointNamespace indexes pods and Services that name a Waypoint of another
	// namespace by that namespace (see crossNamespaceWaypoint).
	IndexUseWaypointNamespace = "label.use-waypoint-namespace"
)

// Publisher receives translated resources (controlplane/xds/server.Publisher).
type Publisher interface {
	// Set publishes a resource; nil removes it. It reports whether anything changed.
	Set(typeURL, name string, m proto.Message) bool
}

// Config is what the reconcilers need.
type Config struct {
	Mesh      translate.Mesh
	Publisher Publisher
	// Waypoints receives each waypoint's Envoy resources; nil translates none.
	Waypoints WaypointPublisher
	// GatewayAPIKinds are the installed Gateway API kinds (see InstalledGatewayAPIKinds):
	// Gateways of the waypoint class are waypoints, routes configure them.
	GatewayAPIKinds map[string]bool
}

// SetupIndexes registers the field indexes the reconcilers and the CA use.
func SetupIndexes(ctx context.Context, mgr ctrl.Manager) error {
	for _, ix := range indexes() {
		if err := mgr.GetFieldIndexer().IndexField(ctx, ix.obj, ix.field, ix.extract); err != nil {
			return fmt.Errorf("index %T by %s: %w", ix.obj, ix.field, err)
		}
	}
	return nil
}

// index is one field index of the cache.
type index struct {
	obj     client.Object
	field   string
	extract client.IndexerFunc
}

// indexes are the field indexes of the cache (SetupIndexes) and of NewInMemoryClient.
func indexes() []index {
	return []index{
		{&corev1.Pod{}, IndexPodNode, func(o client.Object) []string { return nonEmpty(o.(*corev1.Pod).Spec.NodeName) }},
		{&corev1.Pod{}, IndexPodWaypoint, waypointLabel},
		{&corev1.Service{}, IndexServiceWaypoint, waypointLabel},
		{&corev1.Pod{}, IndexUseWaypointNamespace, crossNamespaceWaypoint},
		{&corev1.Service{}, IndexUseWaypointNamespace, crossNamespaceWaypoint},
	}
}

// waypointLabel is the index value of IndexPodWaypoint and IndexServiceWaypoint: the
// waypoint the object belongs to.
func waypointLabel(o client.Object) []string {
	return nonEmpty(o.GetLabels()[meshv1.LabelWaypoint])
}

// crossNamespaceWaypoint is the index value of IndexUseWaypointNamespace: the namespace of
// the Waypoint the object's own labels name, when it is not the object's.
func crossNamespaceWaypoint(o client.Object) []string {
	ref, ok := translate.UsedWaypoint(o.GetNamespace(), o.GetLabels(), nil)
	if !ok || ref.Namespace == o.GetNamespace() {
		return nil
	}
	return []string{ref.Namespace}
}

func nonEmpty(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}

// Setup registers the xDS reconcilers on mgr (SetupIndexes must have run).
func Setup(mgr ctrl.Manager, cfg Config) (*Reconcilers, error) {
	rd := newReader(mgr.GetClient(), cfg.Mesh, cfg.GatewayAPIKinds)
	r := newReconcilers(rd, cfg.Publisher)
	if err := r.workloads.setup(mgr); err != nil {
		return nil, err
	}
	if err := r.services.setup(mgr); err != nil {
		return nil, err
	}
	if err := r.policies.setup(mgr); err != nil {
		return nil, err
	}
	if cfg.Waypoints != nil {
		r.waypoints = &WaypointReconciler{reader: rd, publisher: cfg.Waypoints, gatewayAPI: cfg.GatewayAPIKinds}
		if err := r.waypoints.setup(mgr); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// newReconcilers makes the three workload API reconcilers, reading through rd and
// publishing to pub.
func newReconcilers(rd reader, pub Publisher) *Reconcilers {
	return &Reconcilers{
		workloads: &WorkloadReconciler{reader: rd, publisher: pub, uids: map[client.ObjectKey]string{}},
		services:  &ServiceReconciler{reader: rd, publisher: pub},
		policies:  &AuthorizationReconciler{reader: rd, publisher: pub},
	}
}

// Reconcilers are the xDS reconcilers: the three of the workload API, and the
// waypoints' (nil when waypoints are not translated).
type Reconcilers struct {
	workloads *WorkloadReconciler
	services  *ServiceReconciler
	policies  *AuthorizationReconciler
	waypoints *WaypointReconciler
}

// Prime translates everything in the cache once, so a control plane opens its xDS port
// with complete state instead of letting the first clients watch it fill up.
func (r *Reconcilers) Prime(ctx context.Context) error {
	c := r.workloads.client
	var pods corev1.PodList
	if err := c.List(ctx, &pods, client.UnsafeDisableDeepCopy); err != nil {
		return err
	}
	for i := range pods.Items {
		if _, err := r.workloads.Reconcile(ctx, requestFor(&pods.Items[i])); err != nil {
			return err
		}
	}
	var services corev1.ServiceList
	if err := c.List(ctx, &services, client.UnsafeDisableDeepCopy); err != nil {
		return err
	}
	for i := range services.Items {
		if _, err := r.services.Reconcile(ctx, requestFor(&services.Items[i])); err != nil {
			return err
		}
	}
	var policies meshv1.MeshPolicyList
	if err := c.List(ctx, &policies, client.UnsafeDisableDeepCopy); err != nil {
		return err
	}
	for i := range policies.Items {
		if _, err := r.policies.Reconcile(ctx, requestFor(&policies.Items[i])); err != nil {
			return err
		}
	}
	if r.waypoints != nil {
		return r.waypoints.prime(ctx)
	}
	return nil
}

func requestFor(o client.Object) reconcile.Request {
	return reconcile.Request{NamespacedName: client.ObjectKeyFromObject(o)}
}

// servingOptions: every replica serves xDS, so these controllers run without the lease.
// Pods churn most: give them a few workers.
func servingOptions(workers int) controller.Options {
	return controller.Options{NeedLeaderElection: ptr.To(false), MaxConcurrentReconciles: workers}
}

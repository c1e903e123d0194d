// Package gateway offers waypoints the way Istio users know them, through
// the Gateway API: the operator creates the GatewayClass
// ambientmesh-waypoint (controllerName ambientmesh.dev/waypoint-controller)
// and accepts it, and every Gateway of a class with that controllerName
// and a listener with protocol HBONE on port 15008 gets the same objects as
// a Waypoint of the same name (controllers/waypoint's Provisioner). A
// Gateway that is not accepted runs no proxy: its objects are removed.
//
// Supported: HBONE listeners on 15008; status Accepted and Programmed on
// the Gateway, per-listener Accepted, Programmed, ResolvedRefs and
// Conflicted, and the Service's addresses. Not supported: spec.addresses
// (the waypoint's address is its Service's cluster IP, so a Gateway that
// asks for addresses is not accepted), listeners of other protocols or
// ports (reported as not accepted and ignored), spec.infrastructure and
// parametersRef (replicas, resources and autoscaling are a Waypoint's
// fields; a Gateway runs one replica with the mesh's waypoint defaults),
// and routes attached to the Gateway itself (GAMMA routes attach to
// Services, so attachedRoutes is 0).
package gateway

import (
	"context"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/source"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshmanifests "github.com/ambientmesh/ambient-operator/controllers/ambientmesh/manifests"
	"github.com/ambientmesh/ambient-operator/controllers/waypoint"
)

// Names of the waypoint class.
const (
	// ClassName is the GatewayClass the operator creates.
	ClassName = "ambientmesh-waypoint"
	// ControllerName is the controllerName of classes this operator serves.
	ControllerName gatewayv1.GatewayController = "ambientmesh.dev/waypoint-controller"
	// ProtocolHBONE is the listener protocol of a waypoint Gateway.
	ProtocolHBONE gatewayv1.ProtocolType = "HBONE"
)

// ClassReconciler keeps the waypoint GatewayClass in place and accepts every
// GatewayClass that names this controller.
type ClassReconciler struct {
	client.Client
	Clock clock.PassiveClock
}

// NewClassReconciler wires a ClassReconciler to the manager.
func NewClassReconciler(mgr ctrl.Manager) *ClassReconciler {
	return &ClassReconciler{Client: mgr.GetClient(), Clock: clock.RealClock{}}
}

// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=gatewayclasses,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=gatewayclasses/status,verbs=get;update;patch

// Reconcile: the operator's class is (re)created first; then any class of
// this controller is accepted.
func (r *ClassReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	if req.Name == ClassName {
		if err := r.applyClass(ctx); err != nil {
			return ctrl.Result{}, err
		}
	}
	gc := &gatewayv1.GatewayClass{}
	if err := r.Get(ctx, req.NamespacedName, gc); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if gc.Spec.ControllerName != ControllerName || !gc.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}
	base := gc.DeepCopy()
	gc.Status = classStatus(gc, r.Clock.Now())
	if equality.Semantic.DeepEqual(base.Status, gc.Status) {
		return ctrl.Result{}, nil
	}
	return ctrl.Result{}, client.IgnoreNotFound(r.Status().Patch(ctx, gc, client.MergeFrom(base)))
}

// classStatus accepts the class: it has no parameters to check.
func classStatus(gc *gatewayv1.GatewayClass, now time.Time) gatewayv1.GatewayClassStatus {
	st := *gc.Status.DeepCopy()
	waypoint.SetCondition(&st.Conditions, string(gatewayv1.GatewayClassConditionStatusAccepted), waypoint.Verdict{
		OK: true, Reason: string(gatewayv1.GatewayClassReasonAccepted),
		Message: "Gateways of this class with an HBONE listener on port 15008 become ambient mesh waypoints",
	}, gc.Generation, now)
	return st
}

// applyClass server-side applies the operator's GatewayClass. It is not
// owned by anything: it stays while the operator is installed.
func (r *ClassReconciler) applyClass(ctx context.Context) error {
	gc := &gatewayv1.GatewayClass{
		TypeMeta: metav1.TypeMeta{APIVersion: gatewayv1.GroupVersion.String(), Kind: "GatewayClass"},
		ObjectMeta: metav1.ObjectMeta{Name: ClassName, Labels: map[string]string{
			meshmanifests.LabelManagedBy: meshmanifests.ManagedByValue,
			meshmanifests.LabelPartOf:    meshmanifests.PartOfValue,
		}},
		Spec: gatewayv1.GatewayClassSpec{
			ControllerName: ControllerName,
			Description:    ptr.To("Ambient mesh waypoints (L7 proxies), HBONE listener on 15008"),
		},
	}
	content, err := runtime.DefaultUnstructuredConverter.ToUnstructured(gc)
	if err != nil {
		return err
	}
	delete(content, "status")
	unstructured.RemoveNestedField(content, "metadata", "creationTimestamp")
	return r.Apply(ctx, client.ApplyConfigurationFromUnstructured(&unstructured.Unstructured{Object: content}),
		client.FieldOwner(meshmanifests.FieldOwner), client.ForceOwnership)
}

// SetupWithManager watches the classes of this controller and the
// operator's own class (to recreate it when deleted), and reconciles the
// operator's class once at start so that it is created.
func (r *ClassReconciler) SetupWithManager(mgr ctrl.Manager) error {
	start := make(chan event.TypedGenericEvent[*gatewayv1.GatewayClass], 1)
	start <- event.TypedGenericEvent[*gatewayv1.GatewayClass]{Object: &gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: ClassName}}}
	ours := predicate.NewPredicateFuncs(func(o client.Object) bool {
		gc, ok := o.(*gatewayv1.GatewayClass)
		return ok && (gc.Name == ClassName || gc.Spec.ControllerName == ControllerName)
	})
	return ctrl.NewControllerManagedBy(mgr).
		For(&gatewayv1.GatewayClass{}, builder.WithPredicates(ours)).
		WatchesRawSource(source.Channel(start, &handler.TypedEnqueueRequestForObject[*gatewayv1.GatewayClass]{})).
		Named("gatewayclass").
		Complete(r)
}

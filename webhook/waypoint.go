package webhook

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
)

// WaypointDefaulter fills in what the CRD schema cannot default.
type WaypointDefaulter struct{}

// Default sets replicas to 1 when neither replicas nor autoscaling is set.
// The schema cannot express this default: it depends on another field, and
// a schema default for replicas would conflict with autoscaling.
func (d *WaypointDefaulter) Default(_ context.Context, wp *meshv1alpha1.Waypoint) error {
	if wp.Spec.Replicas == nil && wp.Spec.Autoscaling == nil {
		one := int32(1)
		wp.Spec.Replicas = &one
	}
	return nil
}

// WaypointValidator refuses a Waypoint whose traffic another Waypoint in the
// same namespace already handles.
type WaypointValidator struct {
	// Reader lists the namespace's other Waypoints and reads the mesh.
	Reader client.Reader
}

// ValidateCreate checks for overlapping Waypoints.
func (v *WaypointValidator) ValidateCreate(ctx context.Context, wp *meshv1alpha1.Waypoint) (admission.Warnings, error) {
	return v.validate(ctx, wp)
}

// ValidateUpdate re-checks overlap when spec.for changes. Other updates,
// and any update of a Waypoint being deleted (its finalizer removal), pass:
// Waypoints created before the webhook existed must still be deletable.
func (v *WaypointValidator) ValidateUpdate(ctx context.Context, oldWp, wp *meshv1alpha1.Waypoint) (admission.Warnings, error) {
	if beingDeleted(wp) || oldWp.Spec.EffectiveFor() == wp.Spec.EffectiveFor() {
		return nil, nil
	}
	return v.validate(ctx, wp)
}

// ValidateDelete allows every deletion.
func (v *WaypointValidator) ValidateDelete(context.Context, *meshv1alpha1.Waypoint) (admission.Warnings, error) {
	return nil, nil
}

func (v *WaypointValidator) validate(ctx context.Context, wp *meshv1alpha1.Waypoint) (admission.Warnings, error) {
	var others meshv1alpha1.WaypointList
	if err := v.Reader.List(ctx, &others, client.InNamespace(wp.Namespace)); err != nil {
		return nil, apierrors.NewInternalError(fmt.Errorf("listing Waypoints in %s: %w", wp.Namespace, err))
	}
	errs := validateNoOverlap(field.NewPath("spec", "for"), wp, others.Items)
	warnings, err := meshWarnings(ctx, v.Reader)
	if err != nil {
		return nil, err
	}
	return warnings, invalid(wp, errs)
}

// validateNoOverlap: the scope of a Waypoint is its namespace and the traffic
// it handles (service, workload, or all = both). Two Waypoints with
// overlapping scopes would make the namespace's traffic depend on which one
// a label happens to name, so each kind of traffic has at most one
// Waypoint per namespace.
func validateNoOverlap(path *field.Path, wp *meshv1alpha1.Waypoint, others []meshv1alpha1.Waypoint) field.ErrorList {
	mine := wp.Spec.EffectiveFor()
	for i := range others {
		other := &others[i]
		if other.Name == wp.Name || other.DeletionTimestamp != nil {
			continue
		}
		theirs := other.Spec.EffectiveFor()
		if overlaps(mine, theirs) {
			return field.ErrorList{field.Forbidden(path, fmt.Sprintf(
				"Waypoint %q in namespace %s already handles %s traffic (for: %s); a namespace has at most one Waypoint per kind of traffic: "+
					"use that Waypoint, or set for to a kind of traffic it does not handle",
				other.Name, wp.Namespace, describeOverlap(mine, theirs), theirs))}
		}
	}
	return nil
}

func overlaps(a, b meshv1alpha1.WaypointTrafficType) bool {
	return a == b || a == meshv1alpha1.WaypointForAll || b == meshv1alpha1.WaypointForAll
}

// describeOverlap names the traffic both Waypoints would handle.
func describeOverlap(a, b meshv1alpha1.WaypointTrafficType) meshv1alpha1.WaypointTrafficType {
	if a == meshv1alpha1.WaypointForAll {
		return b
	}
	return a
}

// beingDeleted: updates of an object with a deletion timestamp are the
// finalizer's clean-up, which admission must never block.
func beingDeleted(obj client.Object) bool { return obj.GetDeletionTimestamp() != nil }

// meshWarnings warns when there is no AmbientMesh: the object is accepted
// but nothing acts on it until the mesh is installed.
func meshWarnings(ctx context.Context, reader client.Reader) (admission.Warnings, error) {
	_, found, err := getMesh(ctx, reader)
	if err != nil || found {
		return nil, err
	}
	return admission.Warnings{fmt.Sprintf(
		"no AmbientMesh %q exists: nothing acts on this object until one is created", meshv1alpha1.MeshName)}, nil
}

// getMesh reads the singleton mesh; found is false when it does not exist.
func getMesh(ctx context.Context, reader client.Reader) (*meshv1alpha1.AmbientMesh, bool, error) {
	var mesh meshv1alpha1.AmbientMesh
	err := reader.Get(ctx, client.ObjectKey{Name: meshv1alpha1.MeshName}, &mesh)
	switch {
	case apierrors.IsNotFound(err):
		return nil, false, nil
	case err != nil:
		return nil, false, apierrors.NewInternalError(fmt.Errorf("reading AmbientMesh %q: %w", meshv1alpha1.MeshName, err))
	}
	return &mesh, true, nil
}

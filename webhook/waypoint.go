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

// WaypointValidator checks what the CRD schema cannot: that the namespace
// selector parses and that the resources are valid. No check depends on
// another Waypoint: several may share a namespace, whatever traffic they
// handle, because the use-waypoint label names exactly one, so nothing is
// ambiguous (see docs/waypoint.md, "Selecting a waypoint").
type WaypointValidator struct {
	// Reader reads the mesh.
	Reader client.Reader
}

// ValidateCreate checks the Waypoint and warns while there is no mesh.
func (v *WaypointValidator) ValidateCreate(ctx context.Context, wp *meshv1alpha1.Waypoint) (admission.Warnings, error) {
	warnings, err := meshWarnings(ctx, v.Reader)
	if err != nil {
		return nil, err
	}
	return append(warnings, waypointWarnings(wp)...), invalid(wp, validateWaypoint(wp))
}

// ValidateUpdate checks the Waypoint again. An update of a Waypoint being
// deleted (its finalizer removal) always passes: Waypoints stored before a
// rule existed must still be deletable.
func (v *WaypointValidator) ValidateUpdate(_ context.Context, _, wp *meshv1alpha1.Waypoint) (admission.Warnings, error) {
	if beingDeleted(wp) {
		return nil, nil
	}
	return waypointWarnings(wp), invalid(wp, validateWaypoint(wp))
}

func validateWaypoint(wp *meshv1alpha1.Waypoint) field.ErrorList {
	spec := field.NewPath("spec")
	errs := validateAllowedNamespaces(spec.Child("allowedNamespaces"), wp.Spec.AllowedNamespaces)
	return append(errs, validateResources(spec.Child("resources"), wp.Spec.Resources)...)
}

func waypointWarnings(wp *meshv1alpha1.Waypoint) admission.Warnings {
	if w := noMemoryLimitWarning(field.NewPath("spec", "resources"), wp.Spec.Resources); w != "" {
		return admission.Warnings{w}
	}
	return nil
}

// ValidateDelete allows every deletion.
func (v *WaypointValidator) ValidateDelete(context.Context, *meshv1alpha1.Waypoint) (admission.Warnings, error) {
	return nil, nil
}

// validateAllowedNamespaces: the schema requires a selector exactly when from
// is Selector; here its operators and values are checked as Kubernetes checks
// any label selector. A selector that did not parse would silently allow no
// other namespace.
func validateAllowedNamespaces(path *field.Path, allowed *meshv1alpha1.WaypointAllowedNamespaces) field.ErrorList {
	if allowed == nil {
		return nil
	}
	return validateLabelSelector(path.Child("selector"), allowed.Selector)
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

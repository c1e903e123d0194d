package webhook

import (
	"fmt"
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
)

// Checks shared by the kinds: label selectors, node selectors and compute
// resources, validated as Kubernetes validates them in its own objects. The
// CRD schema cannot: these are Kubernetes' own types, whose schema this
// project does not annotate, and a CEL rule run by the apiserver before this
// webhook would hide the field-by-field messages below behind its own.

// validateLabelSelector refuses what metav1.LabelSelectorAsSelector would
// refuse (an unknown operator, values where none belong or none where some
// must, an invalid label key or value). Stored, such a selector would
// select nothing: a DENY policy that denies nothing.
func validateLabelSelector(path *field.Path, selector *metav1.LabelSelector) field.ErrorList {
	if selector == nil {
		return nil
	}
	return metav1validation.ValidateLabelSelector(selector, metav1validation.LabelSelectorValidationOptions{}, path)
}

// component names one mesh component's settings in AmbientMesh.spec.
type component struct {
	path *field.Path
	spec *meshv1alpha1.ComponentSpec
}

func meshComponents(mesh *meshv1alpha1.AmbientMesh) []component {
	spec := field.NewPath("spec")
	return []component{
		{spec.Child("controlPlane"), &mesh.Spec.ControlPlane.ComponentSpec},
		{spec.Child("ztunnel"), &mesh.Spec.ZTunnel.ComponentSpec},
		{spec.Child("cni"), &mesh.Spec.CNI.ComponentSpec},
		{spec.Child("waypoint"), &mesh.Spec.Waypoint},
	}
}

// validateComponents checks every component's nodeSelector (a key or value
// that is not a valid label matches no node, so the component would never
// be scheduled) and resources.
func validateComponents(mesh *meshv1alpha1.AmbientMesh) field.ErrorList {
	var errs field.ErrorList
	for _, c := range meshComponents(mesh) {
		errs = append(errs, metav1validation.ValidateLabels(c.spec.NodeSelector, c.path.Child("nodeSelector"))...)
		errs = append(errs, validateResources(c.path.Child("resources"), c.spec.Resources)...)
	}
	return errs
}

// componentWarnings warns about every component whose resources drop the
// default memory limit.
func componentWarnings(mesh *meshv1alpha1.AmbientMesh) admission.Warnings {
	var warnings admission.Warnings
	for _, c := range meshComponents(mesh) {
		if w := noMemoryLimitWarning(c.path.Child("resources"), c.spec.Resources); w != "" {
			warnings = append(warnings, w)
		}
	}
	return warnings
}

// validateResources refuses quantities the apiserver would refuse in the
// Deployment or DaemonSet the operator renders from them (a negative
// quantity, a request above its limit): admitted, they would leave the
// component uninstallable with only ApplyFailed in the mesh's status.
func validateResources(path *field.Path, r *corev1.ResourceRequirements) field.ErrorList {
	if r == nil {
		return nil
	}
	var errs field.ErrorList
	for _, list := range []struct {
		name      string
		resources corev1.ResourceList
	}{{"limits", r.Limits}, {"requests", r.Requests}} {
		for _, name := range slices.Sorted(maps.Keys(list.resources)) {
			if q := list.resources[name]; q.Sign() < 0 {
				errs = append(errs, field.Invalid(path.Child(list.name).Key(string(name)), q.String(), "must be greater than or equal to 0"))
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(r.Requests)) {
		request := r.Requests[name]
		if limit, ok := r.Limits[name]; ok && request.Cmp(limit) > 0 {
			errs = append(errs, field.Invalid(path.Child("requests").Key(string(name)), request.String(),
				fmt.Sprintf("must be less than or equal to the %s limit %s", name, limit.String())))
		}
	}
	return errs
}

// noMemoryLimitWarning: resources that are set replace the defaults whole,
// memory limit included, which is easy to miss when only a request was
// meant to change.
func noMemoryLimitWarning(path *field.Path, r *corev1.ResourceRequirements) string {
	if r == nil {
		return ""
	}
	if _, ok := r.Limits[corev1.ResourceMemory]; ok {
		return ""
	}
	return fmt.Sprintf("%s: no limits.memory: these resources replace the defaults, so the container runs without a memory limit "+
		"(and without GOMEMLIMIT), and a memory blow-up can make the kernel kill other pods on its node", path)
}

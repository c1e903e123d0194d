package webhook

import (
	"context"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/internal/versions"
)

// certManagerGroup is the API group of cert-manager's own issuers.
const certManagerGroup = "cert-manager.io"

// AmbientMeshDefaulter fills in what the CRD schema cannot default.
type AmbientMeshDefaulter struct{}

// Default writes spec.version without its optional leading "v", so that
// status, events and version comparisons all see one spelling.
func (d *AmbientMeshDefaulter) Default(_ context.Context, mesh *meshv1alpha1.AmbientMesh) error {
	mesh.Spec.Version = versions.Normalize(mesh.Spec.Version)
	return nil
}

// AmbientMeshValidator refuses meshes the operator cannot install or manage.
// Version rules come from internal/versions, the table the AmbientMesh
// controller also decides upgrades with, so admission and the controller
// never disagree.
type AmbientMeshValidator struct {
	// Mapper resolves issuerRef kinds of external issuers. Nil skips that check.
	Mapper meta.RESTMapper
}

// ValidateCreate checks the version, the issuer reference and each
// component's node selector and resources.
func (v *AmbientMeshValidator) ValidateCreate(_ context.Context, mesh *meshv1alpha1.AmbientMesh) (admission.Warnings, error) {
	spec := field.NewPath("spec")
	errs := validateVersionChange(spec.Child("version"), "", mesh.Spec.Version)
	errs = append(errs, validateIssuerKind(spec.Child("identity", "issuerRef"), mesh.Spec.Identity.IssuerRef)...)
	errs = append(errs, validateComponents(mesh)...)
	return v.warnings(mesh), invalid(mesh, errs)
}

// ValidateUpdate additionally refuses downgrades, skipped minor versions and
// changes of the fields that are part of every issued identity. The version
// is checked only when it changes, so that a mesh can still be edited (e.g.
// its finalizer removed) by an operator release that no longer installs its
// version.
//
// An update of a mesh being deleted (the finalizer's clean-up) passes.
func (v *AmbientMeshValidator) ValidateUpdate(_ context.Context, oldMesh, mesh *meshv1alpha1.AmbientMesh) (admission.Warnings, error) {
	if beingDeleted(mesh) {
		return nil, nil
	}
	spec := field.NewPath("spec")
	var errs field.ErrorList
	if versions.Normalize(oldMesh.Spec.Version) != versions.Normalize(mesh.Spec.Version) {
		errs = append(errs, validateVersionChange(spec.Child("version"), installedVersion(oldMesh), mesh.Spec.Version)...)
	}
	errs = append(errs, validateImmutable(spec.Child("namespace"), oldMesh.Spec.InstallNamespace(), mesh.Spec.InstallNamespace(),
		"delete and recreate the AmbientMesh to move the mesh")...)
	errs = append(errs, validateImmutable(spec.Child("trustDomain"), oldMesh.Spec.EffectiveTrustDomain(), mesh.Spec.EffectiveTrustDomain(),
		"it is part of every issued workload identity")...)
	errs = append(errs, validateIssuerKind(spec.Child("identity", "issuerRef"), mesh.Spec.Identity.IssuerRef)...)
	errs = append(errs, validateComponents(mesh)...)
	return v.warnings(mesh), invalid(mesh, errs)
}

// warnings: what is accepted but probably not meant.
func (v *AmbientMeshValidator) warnings(mesh *meshv1alpha1.AmbientMesh) admission.Warnings {
	return append(v.issuerWarnings(mesh.Spec.Identity.IssuerRef), componentWarnings(mesh)...)
}

// ValidateDelete allows every deletion: the finalizer uninstalls safely.
func (v *AmbientMeshValidator) ValidateDelete(context.Context, *meshv1alpha1.AmbientMesh) (admission.Warnings, error) {
	return nil, nil
}

// installedVersion is what the cluster runs: status.version once the
// operator reported it (during an upgrade, the old version), otherwise the
// version last requested.
func installedVersion(mesh *meshv1alpha1.AmbientMesh) string {
	if mesh.Status.Version != "" {
		return mesh.Status.Version
	}
	return mesh.Spec.Version
}

// validateVersionChange refuses a version the operator has no images for,
// a downgrade (components write state that older releases may not
// understand) and a jump of more than one minor version.
func validateVersionChange(path *field.Path, installed, target string) field.ErrorList {
	if target == "" {
		return nil // the CRD defaults it
	}
	err := versions.Check(installed, target)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, versions.ErrUnsupported) && !versions.IsSupported(target):
		return field.ErrorList{field.NotSupported(path, target, versions.Supported())}
	default:
		return field.ErrorList{field.Forbidden(path, err.Error())}
	}
}

// validateIssuerKind: cert-manager itself has only Issuer and ClusterIssuer.
// The CRD has the same rule in CEL; it is repeated here because a wrong kind
// would make the mesh's identity silently unavailable.
func validateIssuerKind(path *field.Path, ref *meshv1alpha1.IssuerReference) field.ErrorList {
	if ref == nil || issuerGroup(ref) != certManagerGroup {
		return nil
	}
	switch issuerKind(ref) {
	case "Issuer", "ClusterIssuer":
		return nil
	}
	return field.ErrorList{field.NotSupported(path.Child("kind"), ref.Kind, []string{"Issuer", "ClusterIssuer"})}
}

// issuerWarnings warns when an external issuer's kind is not served by the
// cluster: often a typo, sometimes an issuer installed later, so it does not
// refuse the mesh. IdentityReady stays False until the issuer exists.
func (v *AmbientMeshValidator) issuerWarnings(ref *meshv1alpha1.IssuerReference) admission.Warnings {
	if ref == nil || v.Mapper == nil || issuerGroup(ref) == certManagerGroup {
		return nil
	}
	gk := schema.GroupKind{Group: issuerGroup(ref), Kind: issuerKind(ref)}
	if _, err := v.Mapper.RESTMapping(gk); err == nil {
		return nil
	}
	return admission.Warnings{fmt.Sprintf(
		"spec.identity.issuerRef: no API in this cluster serves kind %s in group %s; workload certificates cannot be issued until that issuer is installed",
		gk.Kind, gk.Group)}
}

func issuerGroup(ref *meshv1alpha1.IssuerReference) string {
	if ref.Group == "" {
		return certManagerGroup
	}
	return ref.Group
}

func issuerKind(ref *meshv1alpha1.IssuerReference) string {
	if ref.Kind == "" {
		return "Issuer"
	}
	return ref.Kind
}

// validateImmutable refuses a change of a field that cannot change in place.
func validateImmutable(path *field.Path, oldValue, newValue, why string) field.ErrorList {
	if oldValue == newValue {
		return nil
	}
	return field.ErrorList{field.Forbidden(path, fmt.Sprintf("is immutable (was %q): %s", oldValue, why))}
}

// invalid turns field errors into the apiserver's 422 Invalid status, which
// kubectl prints field by field; nil when there are none.
func invalid(obj client.Object, errs field.ErrorList) error {
	if len(errs) == 0 {
		return nil
	}
	gvk := obj.GetObjectKind().GroupVersionKind()
	gk := schema.GroupKind{Group: meshv1alpha1.GroupVersion.Group, Kind: gvk.Kind}
	if gk.Kind == "" {
		gk.Kind = kindOf(obj)
	}
	return apierrors.NewInvalid(gk, obj.GetName(), errs)
}

func kindOf(obj client.Object) string {
	switch obj.(type) {
	case *meshv1alpha1.AmbientMesh:
		return "AmbientMesh"
	case *meshv1alpha1.Waypoint:
		return "Waypoint"
	case *meshv1alpha1.MeshPolicy:
		return "MeshPolicy"
	}
	return fmt.Sprintf("%T", obj)
}

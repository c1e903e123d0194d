// Package webhook holds the admission webhooks of the mesh kinds: defaulting
// of what the CRD schema cannot default, and validation that the schema and
// its CEL rules cannot express (rules that need the cluster's state, the
// operator's version table, or full SPIFFE parsing).
//
// The apiserver runs the CRD's own validation before these validators, so a
// rule here never repeats a CEL rule except where noted (defense in depth
// for rules that keep the mesh's identity intact).
//
// No refusal depends on another object: what the validators read from the
// cluster (the mesh, a policy's targets, the API's kinds) only makes
// warnings. Two concurrent admissions therefore cannot both pass a check
// that should have refused one of them. What depends on other objects (a
// policy target that does not exist, a target no waypoint serves) is
// reported in status conditions, computed from what is stored.
package webhook

import (
	"fmt"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
)

// The webhook configurations (config/webhook/manifests.yaml) are generated
// from these markers by `make manifests`. Paths follow controller-runtime's
// naming, so the builder below serves exactly these.
//
// +kubebuilder:webhook:path=/mutate-mesh-ambientmesh-dev-v1alpha1-ambientmesh,mutating=true,failurePolicy=fail,sideEffects=None,groups=mesh.ambientmesh.dev,resources=ambientmeshes,verbs=create;update,versions=v1alpha1,name=mambientmesh-v1alpha1.ambientmesh.dev,admissionReviewVersions=v1
// +kubebuilder:webhook:path=/validate-mesh-ambientmesh-dev-v1alpha1-ambientmesh,mutating=false,failurePolicy=fail,sideEffects=None,groups=mesh.ambientmesh.dev,resources=ambientmeshes,verbs=create;update,versions=v1alpha1,name=vambientmesh-v1alpha1.ambientmesh.dev,admissionReviewVersions=v1
// +kubebuilder:webhook:path=/mutate-mesh-ambientmesh-dev-v1alpha1-waypoint,mutating=true,failurePolicy=fail,sideEffects=None,groups=mesh.ambientmesh.dev,resources=waypoints,verbs=create;update,versions=v1alpha1,name=mwaypoint-v1alpha1.ambientmesh.dev,admissionReviewVersions=v1
// +kubebuilder:webhook:path=/validate-mesh-ambientmesh-dev-v1alpha1-waypoint,mutating=false,failurePolicy=fail,sideEffects=None,groups=mesh.ambientmesh.dev,resources=waypoints,verbs=create;update,versions=v1alpha1,name=vwaypoint-v1alpha1.ambientmesh.dev,admissionReviewVersions=v1
// +kubebuilder:webhook:path=/mutate-mesh-ambientmesh-dev-v1alpha1-meshpolicy,mutating=true,failurePolicy=fail,sideEffects=None,groups=mesh.ambientmesh.dev,resources=meshpolicies,verbs=create;update,versions=v1alpha1,name=mmeshpolicy-v1alpha1.ambientmesh.dev,admissionReviewVersions=v1
// +kubebuilder:webhook:path=/validate-mesh-ambientmesh-dev-v1alpha1-meshpolicy,mutating=false,failurePolicy=fail,sideEffects=None,groups=mesh.ambientmesh.dev,resources=meshpolicies,verbs=create;update,versions=v1alpha1,name=vmeshpolicy-v1alpha1.ambientmesh.dev,admissionReviewVersions=v1

// The validators read the cluster (the mesh's trust domain, and the
// Waypoints, Services and Namespaces a policy targets) with live reads, for
// warnings only: admission is rare, and a cache would add watches on every
// Service.
//
// +kubebuilder:rbac:groups=mesh.ambientmesh.dev,resources=ambientmeshes,verbs=get;list;watch
// +kubebuilder:rbac:groups=mesh.ambientmesh.dev,resources=waypoints,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=services;namespaces,verbs=get;list;watch

// SetupWithManager registers the defaulting and validating webhooks of all
// three kinds with the manager's webhook server. Lookups go straight to the
// API server (mgr.GetAPIReader), so warnings reflect what is stored now.
func SetupWithManager(mgr ctrl.Manager) error {
	return Setup(mgr, mgr.GetAPIReader())
}

// Setup is SetupWithManager with an explicit reader for lookups.
func Setup(mgr ctrl.Manager, reader client.Reader) error {
	if err := ctrl.NewWebhookManagedBy(mgr, &meshv1alpha1.AmbientMesh{}).
		WithDefaulter(&AmbientMeshDefaulter{}).
		WithValidator(&AmbientMeshValidator{Mapper: mgr.GetRESTMapper()}).
		Complete(); err != nil {
		return fmt.Errorf("AmbientMesh webhooks: %w", err)
	}
	if err := ctrl.NewWebhookManagedBy(mgr, &meshv1alpha1.Waypoint{}).
		WithDefaulter(&WaypointDefaulter{}).
		WithValidator(&WaypointValidator{Reader: reader}).
		Complete(); err != nil {
		return fmt.Errorf("waypoint webhooks: %w", err)
	}
	if err := ctrl.NewWebhookManagedBy(mgr, &meshv1alpha1.MeshPolicy{}).
		WithDefaulter(&MeshPolicyDefaulter{}).
		WithValidator(&MeshPolicyValidator{Reader: reader}).
		Complete(); err != nil {
		return fmt.Errorf("MeshPolicy webhooks: %w", err)
	}
	return nil
}

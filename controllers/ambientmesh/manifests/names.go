// Package manifests renders, as pure functions of an AmbientMesh and the
// component versions to run, every object the operator owns for the mesh.
// The rendered objects (and the command lines inside them, see args.go) are
// the single source of truth: the controller applies them and the e2e
// harness starts the real processes with exactly the args they declare.
package manifests

import (
	"k8s.io/apimachinery/pkg/labels"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/internal/meshconfig"
)

// FieldOwner is the server-side apply field manager of every owned object.
const FieldOwner = "ambient-operator"

// Labels on every owned object. Cluster-scoped and cross-namespace objects
// are found (for watches and pruning) by LabelManagedBy + LabelMesh.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	LabelMesh      = "ambientmesh.dev/mesh"
	LabelName      = "app.kubernetes.io/name"
	LabelComponent = "app.kubernetes.io/component"
	LabelPartOf    = "app.kubernetes.io/part-of"
	LabelVersion   = "app.kubernetes.io/version"

	ManagedByValue = "ambient-operator"
	PartOfValue    = "ambientmesh"
)

// AnnotationTemplateHash is set on each workload's pod template (and so on
// its pods): a hash of the rendered template. A ztunnel pod whose hash
// differs from its DaemonSet's is outdated and is replaced node by node.
const AnnotationTemplateHash = "ambientmesh.dev/template-hash"

// Component values of LabelComponent.
const (
	ComponentControlPlane = "controlplane"
	ComponentZTunnel      = "ztunnel"
	ComponentCNI          = "cni"
	ComponentIdentity     = "identity"
	ComponentConfig       = "config"
)

// Names of owned objects.
const (
	ControlPlaneName = meshconfig.ControlPlaneServiceName
	ZTunnelName      = "ztunnel"
	CNIName          = "ambientmesh-cni"

	SelfSignedIssuerName = "ambientmesh-selfsigned"
	RootCAName           = "ambientmesh-root-ca"
	CAIssuerName         = meshconfig.ManagedCAIssuerName
	ControlPlaneTLSName  = "ambientmesh-controlplane-tls"
)

// MeshLabels selects every object the operator owns for mesh.
func MeshLabels(meshName string) map[string]string {
	return map[string]string{LabelManagedBy: ManagedByValue, LabelMesh: meshName}
}

// MeshSelector is MeshLabels as a selector.
func MeshSelector(meshName string) labels.Selector {
	return labels.SelectorFromSet(MeshLabels(meshName))
}

// ComponentSelector selects one component's pods (ztunnel, cni, controlplane).
func ComponentSelector(meshName, name string) labels.Selector {
	l := MeshLabels(meshName)
	l[LabelName] = name
	return labels.SelectorFromSet(l)
}

// objectLabels are the labels of an owned object of a component.
func objectLabels(mesh *meshv1alpha1.AmbientMesh, name, component string) map[string]string {
	l := MeshLabels(mesh.Name)
	l[LabelName] = name
	l[LabelComponent] = component
	l[LabelPartOf] = PartOfValue
	return l
}

// selectorLabels are the immutable selector of a workload: never include
// the version, or an upgrade could not change it.
func selectorLabels(mesh *meshv1alpha1.AmbientMesh, name string) map[string]string {
	l := MeshLabels(mesh.Name)
	l[LabelName] = name
	return l
}

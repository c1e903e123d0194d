package manifests

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/internal/meshconfig"
	"github.com/ambientmesh/ambient-operator/internal/versions"
)

// Versions are the versions each component is rendered at. During an
// upgrade they differ: the controller moves them one component at a time.
type Versions struct {
	ControlPlane string
	CNI          string
	ZTunnel      string
}

// Uniform is Versions with every component at v.
func Uniform(v string) Versions { return Versions{ControlPlane: v, CNI: v, ZTunnel: v} }

// Input is everything a rendering depends on.
type Input struct {
	// Mesh is the AmbientMesh (as read from the API server: defaulted).
	Mesh *meshv1alpha1.AmbientMesh
	// Versions to render each component at.
	Versions Versions
	// Uninstalling is written into the mesh config when the mesh is being
	// deleted, so the CNI agent stops enrolling and cleans up.
	Uninstalling bool
}

// Render returns every object the mesh owns, in a safe creation order:
// config and identity first, then RBAC, then the workloads that use them.
// The install namespace itself is not included (see Namespace).
func Render(in Input) ([]client.Object, error) {
	if in.Mesh == nil {
		return nil, fmt.Errorf("render: no mesh")
	}
	for name, v := range map[string]string{"controlPlane": in.Versions.ControlPlane, "cni": in.Versions.CNI, "ztunnel": in.Versions.ZTunnel} {
		if v == "" {
			return nil, fmt.Errorf("render: no version for %s", name)
		}
	}
	cm, err := configMap(in)
	if err != nil {
		return nil, err
	}
	objs := []client.Object{cm}
	objs = append(objs, identityObjects(in.Mesh)...)
	objs = append(objs, rbacObjects(in.Mesh)...)
	objs = append(objs,
		controlPlaneService(in.Mesh),
		controlPlaneDeployment(in.Mesh, in.Versions.ControlPlane),
		controlPlanePDB(in.Mesh),
		cniDaemonSet(in.Mesh, in.Versions.CNI),
		ztunnelDaemonSet(in.Mesh, in.Versions.ZTunnel),
	)
	for _, o := range objs {
		o.SetOwnerReferences([]metav1.OwnerReference{ownerRef(in.Mesh)})
	}
	return objs, nil
}

// Namespace is the install namespace, created when missing. It is not owned
// by the mesh: a namespace the user created stays after uninstall.
func Namespace(mesh *meshv1alpha1.AmbientMesh) *corev1.Namespace {
	ns := &corev1.Namespace{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
		ObjectMeta: metav1.ObjectMeta{Name: mesh.Spec.InstallNamespace(), Labels: MeshLabels(mesh.Name)},
	}
	return ns
}

// MeshConfig is the configuration written to the mesh ConfigMap.
func MeshConfig(in Input) meshconfig.MeshConfig {
	spec := &in.Mesh.Spec
	ns := spec.InstallNamespace()
	c := meshconfig.Default()
	c.Version = versions.Normalize(in.Versions.ControlPlane)
	c.Namespace = ns
	c.TrustDomain = spec.EffectiveTrustDomain()
	c.ControlPlane.Address = ControlPlaneName + "." + ns + ".svc"
	c.Identity.Issuer = issuerRef(in.Mesh)
	c.Identity.WorkloadCertTTL = metav1.Duration{Duration: spec.Identity.EffectiveWorkloadCertTTL()}
	c.Redirection.Backend = spec.CNI.EffectiveRedirection()
	c.CNI.BinDir = spec.CNI.EffectiveBinDir()
	c.CNI.ConfDir = spec.CNI.EffectiveConfDir()
	c.CNI.Chained = spec.CNI.IsChained()
	c.Uninstalling = in.Uninstalling
	return c
}

func configMap(in Input) (*corev1.ConfigMap, error) {
	data, err := MeshConfig(in).Marshal()
	if err != nil {
		return nil, fmt.Errorf("render mesh config: %w", err)
	}
	return &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: meta(in.Mesh, meshconfig.ConfigMapName, ComponentConfig),
		Data:       map[string]string{meshconfig.ConfigMapKey: string(data)},
	}, nil
}

// issuerRef is the issuer that signs workload certificates: the user's, or
// the CA Issuer the operator creates.
func issuerRef(mesh *meshv1alpha1.AmbientMesh) meshconfig.IssuerRef {
	ref := mesh.Spec.Identity.IssuerRef
	if ref == nil {
		return meshconfig.IssuerRef{Name: CAIssuerName, Kind: "Issuer", Group: "cert-manager.io"}
	}
	kind, group := ref.Kind, ref.Group
	if kind == "" {
		kind = "Issuer"
	}
	if group == "" {
		group = "cert-manager.io"
	}
	return meshconfig.IssuerRef{Name: ref.Name, Kind: kind, Group: group}
}

// meta is the ObjectMeta of an owned object in the install namespace.
func meta(mesh *meshv1alpha1.AmbientMesh, name, component string) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name:      name,
		Namespace: mesh.Spec.InstallNamespace(),
		Labels:    objectLabels(mesh, name, component),
	}
}

// clusterMeta is the ObjectMeta of an owned cluster-scoped object.
func clusterMeta(mesh *meshv1alpha1.AmbientMesh, name, component string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Labels: objectLabels(mesh, name, component)}
}

func ownerRef(mesh *meshv1alpha1.AmbientMesh) metav1.OwnerReference {
	return metav1.OwnerReference{
		APIVersion:         meshv1alpha1.GroupVersion.String(),
		Kind:               "AmbientMesh",
		Name:               mesh.Name,
		UID:                mesh.UID,
		Controller:         ptr.To(true),
		BlockOwnerDeletion: ptr.To(true),
	}
}

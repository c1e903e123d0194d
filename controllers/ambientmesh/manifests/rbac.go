package manifests

import (
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/internal/meshconfig"
)

var (
	readOnly  = []string{"get", "list", "watch"}
	statusRW  = []string{"get", "patch", "update"}
	saTypes   = metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"}
	rbacGroup = rbacv1.SchemeGroupVersion.String()
)

// The permissions each component gets. They are listed rule by rule, with
// no wildcard, and are the least each component's code needs; the operator
// holds the same permissions (see the kubebuilder markers in the
// controller), as Kubernetes requires to grant them.

// ControlPlaneClusterRules: discovery of workloads and mesh config across
// namespaces, status of mesh objects, and authenticating callers.
func ControlPlaneClusterRules() []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods", "services", "namespaces", "nodes"}, Verbs: readOnly},
		{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: readOnly},
		{APIGroups: []string{meshv1alpha1.GroupVersion.Group}, Resources: []string{"meshpolicies", "waypoints"}, Verbs: readOnly},
		{APIGroups: []string{meshv1alpha1.GroupVersion.Group}, Resources: []string{"meshpolicies/status"}, Verbs: statusRW},
		{APIGroups: []string{"gateway.networking.k8s.io"}, Resources: []string{"gateways", "httproutes", "grpcroutes"}, Verbs: readOnly},
		{APIGroups: []string{"gateway.networking.k8s.io"}, Resources: []string{"httproutes/status", "grpcroutes/status"}, Verbs: statusRW},
		{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"tokenreviews"}, Verbs: []string{"create"}},
	}
}

// TrustRootsConfigMap is the control plane's record of the roots it issued
// certificates under (controlplane/identity.TrustRootsConfigMap; the
// control-plane envtest checks that the rules below let it write it).
const TrustRootsConfigMap = "ambientmesh-trust-roots"

// ControlPlaneNamespaceRules: inside the install namespace only — signing
// workload certificates through cert-manager, reading the mesh config,
// recording the trust roots across a root rotation (the ConfigMap
// TrustRootsConfigMap: created once, then updated by name only), leader
// election for status writes, and events.
func ControlPlaneNamespaceRules() []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{
		{APIGroups: []string{"cert-manager.io"}, Resources: []string{"certificaterequests"}, Verbs: []string{"create", "get", "list", "watch", "delete"}},
		{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: readOnly},
		{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"create"}},
		{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{TrustRootsConfigMap}, Verbs: []string{"update"}},
		{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "create", "update"}},
		{APIGroups: []string{"events.k8s.io"}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
		// client-go's leader election still records core/v1 Events.
		{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
	}
}

// CNIClusterRules: the node agent watches pods and namespaces to find
// enrolled pods on its node, and annotates the pods it captured.
func CNIClusterRules() []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch", "patch"}},
		{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: readOnly},
	}
}

// CNINamespaceRules: in the install namespace, reading the mesh ConfigMap
// and nothing else, so a stopping agent can tell an uninstall from a restart.
func CNINamespaceRules() []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{meshconfig.ConfigMapName}, Verbs: []string{"get", "watch"}},
	}
}

// ztunnel has no Kubernetes permissions: it talks only to the control
// plane, authenticated by its projected token.

func rbacObjects(mesh *meshv1alpha1.AmbientMesh) []client.Object {
	return []client.Object{
		serviceAccount(mesh, ControlPlaneName, ComponentControlPlane, true),
		serviceAccount(mesh, ZTunnelName, ComponentZTunnel, false),
		serviceAccount(mesh, CNIName, ComponentCNI, true),
		clusterRole(mesh, ControlPlaneName, ComponentControlPlane, ControlPlaneClusterRules()),
		clusterRoleBinding(mesh, ControlPlaneName, ComponentControlPlane),
		role(mesh, ControlPlaneName, ComponentControlPlane, ControlPlaneNamespaceRules()),
		roleBinding(mesh, ControlPlaneName, ComponentControlPlane),
		clusterRole(mesh, CNIName, ComponentCNI, CNIClusterRules()),
		clusterRoleBinding(mesh, CNIName, ComponentCNI),
		role(mesh, CNIName, ComponentCNI, CNINamespaceRules()),
		roleBinding(mesh, CNIName, ComponentCNI),
	}
}

func serviceAccount(mesh *meshv1alpha1.AmbientMesh, name, component string, automount bool) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{
		TypeMeta:   saTypes,
		ObjectMeta: meta(mesh, name, component),
		// Only components that call the Kubernetes API get a token mounted.
		AutomountServiceAccountToken: ptr.To(automount),
	}
}

func clusterRole(mesh *meshv1alpha1.AmbientMesh, name, component string, rules []rbacv1.PolicyRule) *rbacv1.ClusterRole {
	return &rbacv1.ClusterRole{
		TypeMeta:   metav1.TypeMeta{APIVersion: rbacGroup, Kind: "ClusterRole"},
		ObjectMeta: clusterMeta(mesh, name, component),
		Rules:      rules,
	}
}

func role(mesh *meshv1alpha1.AmbientMesh, name, component string, rules []rbacv1.PolicyRule) *rbacv1.Role {
	return &rbacv1.Role{
		TypeMeta:   metav1.TypeMeta{APIVersion: rbacGroup, Kind: "Role"},
		ObjectMeta: meta(mesh, name, component),
		Rules:      rules,
	}
}

func subjects(mesh *meshv1alpha1.AmbientMesh, sa string) []rbacv1.Subject {
	return []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa, Namespace: mesh.Spec.InstallNamespace()}}
}

func clusterRoleBinding(mesh *meshv1alpha1.AmbientMesh, name, component string) *rbacv1.ClusterRoleBinding {
	return &rbacv1.ClusterRoleBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: rbacGroup, Kind: "ClusterRoleBinding"},
		ObjectMeta: clusterMeta(mesh, name, component),
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
		Subjects:   subjects(mesh, name),
	}
}

func roleBinding(mesh *meshv1alpha1.AmbientMesh, name, component string) *rbacv1.RoleBinding {
	return &rbacv1.RoleBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: rbacGroup, Kind: "RoleBinding"},
		ObjectMeta: meta(mesh, name, component),
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
		Subjects:   subjects(mesh, name),
	}
}

package ambientmesh

import (
	"reflect"

	cmv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ambientmesh/ambient-operator/controllers/ambientmesh/manifests"
)

// LabelledKinds are the kinds this controller watches and reads only as
// objects the operator labelled: what it creates for the mesh, the node
// agent and waypoint pods, and its own install namespace. Issuers and
// ClusterIssuers are not among them: spec.identity.issuerRef may name one
// the user created.
func LabelledKinds() []client.Object {
	return []client.Object{
		&corev1.Namespace{}, &corev1.Pod{},
		&corev1.ConfigMap{}, &corev1.ServiceAccount{}, &corev1.Service{},
		&appsv1.Deployment{}, &appsv1.DaemonSet{}, &policyv1.PodDisruptionBudget{},
		&rbacv1.Role{}, &rbacv1.RoleBinding{}, &rbacv1.ClusterRole{}, &rbacv1.ClusterRoleBinding{},
		&cmv1.Certificate{},
	}
}

// CacheOnlyLabelled is the manager cache setting (cache.Options.ByObject)
// that holds, of each of kinds, only the objects labelled
// app.kubernetes.io/managed-by=ambient-operator, which every object the
// operator creates carries (manifests.MeshLabels). The operator's memory
// then does not grow with the cluster's own Pods, ConfigMaps, Services and
// Namespaces. Reads of these kinds through the manager's client see only
// labelled objects; code that must see another one (a user's namespace, an
// object of the same name the operator would take over) asks the API server
// (the manager's API reader).
func CacheOnlyLabelled(kinds ...client.Object) map[client.Object]cache.ByObject {
	ours := cache.ByObject{Label: labels.SelectorFromSet(labels.Set{manifests.LabelManagedBy: manifests.ManagedByValue})}
	byObject := map[client.Object]cache.ByObject{}
	seen := map[reflect.Type]bool{}
	for _, kind := range kinds {
		// One entry per type: the cache keys its informers by kind.
		if t := reflect.TypeOf(kind); !seen[t] {
			seen[t] = true
			byObject[kind] = ours
		}
	}
	return byObject
}

package ambientmesh

import (
	"context"
	"fmt"

	cmv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controllers/ambientmesh/manifests"
	"github.com/ambientmesh/ambient-operator/internal/applyobj"
)

// applyAll server-side applies every rendered object under one field owner,
// forcing ownership: a hand edit of a field the operator sets is reverted,
// fields the operator does not set are left alone.
func (r *Reconciler) applyAll(ctx context.Context, mesh *meshv1alpha1.AmbientMesh, objs []client.Object) error {
	for _, obj := range objs {
		if err := r.apply(ctx, mesh, obj); err != nil {
			return fmt.Errorf("apply %s %s: %w", obj.GetObjectKind().GroupVersionKind().Kind, client.ObjectKeyFromObject(obj), err)
		}
	}
	return nil
}

func (r *Reconciler) apply(ctx context.Context, mesh *meshv1alpha1.AmbientMesh, obj client.Object) error {
	cached, ok := obj.DeepCopyObject().(client.Object)
	if !ok {
		return fmt.Errorf("%T is not a client.Object", obj)
	}
	existed := true
	if err := r.lookup(ctx, client.ObjectKeyFromObject(obj), cached); err != nil {
		if client.IgnoreNotFound(err) != nil {
			return err
		}
		existed = false
	}
	u, err := applyobj.From(obj)
	if err != nil {
		return err
	}
	if err := r.Apply(ctx, client.ApplyConfigurationFromUnstructured(u),
		client.FieldOwner(manifests.FieldOwner), client.ForceOwnership); err != nil {
		return err
	}
	kind, key := u.GetKind(), client.ObjectKeyFromObject(obj)
	switch {
	case !existed:
		r.event(mesh, corev1.EventTypeNormal, "Created", "Install", "created %s %s", kind, key)
	case u.GetResourceVersion() != cached.GetResourceVersion():
		r.event(mesh, corev1.EventTypeNormal, "Updated", "Install", "updated %s %s to the desired state", kind, key)
	}
	return nil
}

// lookup reads obj from the cache and, when the cache does not hold it,
// from the API server. The cache holds only objects the operator labelled
// (CacheOnlyLabelled): an object the user created under a name the operator
// uses, or one whose labels were removed, is seen only by the API server,
// which is asked only on a miss.
func (r *Reconciler) lookup(ctx context.Context, key client.ObjectKey, obj client.Object) error {
	err := r.Get(ctx, key, obj)
	if !apierrors.IsNotFound(err) {
		return err
	}
	return r.APIReader.Get(ctx, key, obj)
}

// ownedKinds lists every kind the operator may have created for a mesh; the
// pruning and the uninstall walk them. Order matters for uninstall: the
// control plane goes before the identity and RBAC it uses.
func ownedKinds() []client.ObjectList {
	return []client.ObjectList{
		&appsv1.DeploymentList{},
		&policyv1.PodDisruptionBudgetList{},
		&corev1.ServiceList{},
		&cmv1.CertificateList{},
		&cmv1.IssuerList{},
		&rbacv1.RoleBindingList{},
		&rbacv1.RoleList{},
		&rbacv1.ClusterRoleBindingList{},
		&rbacv1.ClusterRoleList{},
		&corev1.ServiceAccountList{},
		&corev1.ConfigMapList{},
		&appsv1.DaemonSetList{},
	}
}

// prune deletes objects this mesh controls that the rendering no longer
// contains (for example the self-signed chain once issuerRef is set).
func (r *Reconciler) prune(ctx context.Context, mesh *meshv1alpha1.AmbientMesh, want []client.Object) error {
	wanted := map[string]bool{}
	for _, o := range want {
		wanted[objectID(o.GetObjectKind().GroupVersionKind().Kind, o)] = true
	}
	return r.forEachOwned(ctx, mesh, func(kind string, obj client.Object) error {
		if wanted[objectID(kind, obj)] {
			return nil
		}
		if err := r.Delete(ctx, obj, client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("prune %s %s: %w", kind, client.ObjectKeyFromObject(obj), err)
		}
		r.event(mesh, corev1.EventTypeNormal, "Pruned", "Install", "deleted %s %s: the spec no longer needs it", kind, client.ObjectKeyFromObject(obj))
		return nil
	})
}

// forEachOwned calls fn for every object labelled for this mesh and
// controlled by it. The controller check keeps objects that only carry our
// labels (such as a waypoint's, owned by its Waypoint) out of reach.
func (r *Reconciler) forEachOwned(ctx context.Context, mesh *meshv1alpha1.AmbientMesh, fn func(kind string, obj client.Object) error) error {
	for _, list := range ownedKinds() {
		if err := r.List(ctx, list, client.MatchingLabels(manifests.MeshLabels(mesh.Name))); err != nil {
			return err
		}
		kind := kindOfList(list)
		items, err := meta.ExtractList(list)
		if err != nil {
			return err
		}
		for _, item := range items {
			obj, ok := item.(client.Object)
			if !ok || !metav1.IsControlledBy(obj, mesh) || !obj.GetDeletionTimestamp().IsZero() {
				continue
			}
			if err := fn(kind, obj); err != nil {
				return err
			}
		}
	}
	return nil
}

func objectID(kind string, o client.Object) string {
	return kind + "/" + o.GetNamespace() + "/" + o.GetName()
}

// kindOfList is the item kind of a typed list (DeploymentList → Deployment).
func kindOfList(list client.ObjectList) string {
	name := fmt.Sprintf("%T", list)
	for i := len(name) - 1; i >= 0; i-- {
		if name[i] == '.' {
			name = name[i+1:]
			break
		}
	}
	return name[:len(name)-len("List")]
}

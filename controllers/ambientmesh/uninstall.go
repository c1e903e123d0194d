package ambientmesh

import (
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controllers/ambientmesh/manifests"
	"github.com/ambientmesh/ambient-operator/internal/meshconfig"
)

// uninstallPollInterval re-checks a waiting uninstall step in case a pod
// event is missed; pod deletions normally trigger the next pass at once.
const uninstallPollInterval = 10 * time.Second

// reconcileDelete uninstalls in a safe order, one step per pass:
//  1. tell the node agents the mesh is going (mesh config uninstalling=true),
//     so the CNI agent stops enrolling pods;
//  2. delete the CNI agent and wait for its pods to end: on the way out they
//     remove the redirection rules and the chained plugin configuration;
//  3. delete ztunnel and wait for its pods (traffic now flows uncaptured);
//  4. delete the control plane, identity, RBAC and config;
//  5. delete the namespace if the operator created it; drop the finalizer.
//
// A namespace that is already gone or terminating skips what it held. Pods
// that do not end (a node that is down) are waited for at most
// podTerminationTimeout after the mesh's deletion started.
func (r *Reconciler) reconcileDelete(ctx context.Context, mesh *meshv1alpha1.AmbientMesh, obs *observation) (ctrl.Result, error) {
	obs.Deleting = "uninstalling"
	if !controllerutil.ContainsFinalizer(mesh, Finalizer) {
		return ctrl.Result{}, nil
	}
	ns, err := r.installNamespace(ctx, mesh)
	if err != nil {
		return ctrl.Result{}, err
	}
	if ns != nil && ns.DeletionTimestamp.IsZero() {
		if err := r.markUninstalling(ctx, mesh); err != nil {
			return ctrl.Result{}, err
		}
	}
	for _, agent := range []struct{ name, what string }{
		{manifests.CNIName, "CNI agent pod(s) to remove their rules and plugin configuration"},
		{manifests.ZTunnelName, "ztunnel pod(s) to drain"},
	} {
		waiting, err := r.removeNodeAgent(ctx, mesh, agent.name)
		if err != nil {
			return ctrl.Result{}, err
		}
		if waiting > 0 {
			if r.Clock.Since(mesh.DeletionTimestamp.Time) < podTerminationTimeout(mesh) {
				obs.Deleting = fmt.Sprintf("uninstalling: waiting for %d %s", waiting, agent.what)
				return ctrl.Result{RequeueAfter: uninstallPollInterval}, nil
			}
			r.event(mesh, corev1.EventTypeWarning, "UninstallTimeout", "Uninstall",
				"%d %s did not end within %s; continuing: check those nodes for leftover rules", waiting, agent.what, podTerminationTimeout(mesh))
		}
	}
	obs.Deleting = "uninstalling: deleting the control plane, identity, RBAC and configuration"
	if err := r.forEachOwned(ctx, mesh, func(kind string, obj client.Object) error {
		return client.IgnoreNotFound(r.Delete(ctx, obj, client.PropagationPolicy(metav1.DeletePropagationBackground)))
	}); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.deleteOwnNamespace(ctx, mesh, ns); err != nil {
		return ctrl.Result{}, err
	}
	r.event(mesh, corev1.EventTypeNormal, "Uninstalled", "Uninstall", "every component of the mesh was removed")
	return ctrl.Result{}, r.patchFinalizers(ctx, mesh, controllerutil.RemoveFinalizer)
}

// podTerminationTimeout bounds the wait for node agents to end: their own
// grace period (ztunnel drains) plus time for the kubelet to act.
func podTerminationTimeout(mesh *meshv1alpha1.AmbientMesh) time.Duration {
	return mesh.Spec.ZTunnel.EffectiveDrainPeriod() + 2*time.Minute
}

// installNamespace returns the namespace, or nil when it no longer exists.
func (r *Reconciler) installNamespace(ctx context.Context, mesh *meshv1alpha1.AmbientMesh) (*corev1.Namespace, error) {
	ns := &corev1.Namespace{}
	if err := r.lookup(ctx, client.ObjectKey{Name: mesh.Spec.InstallNamespace()}, ns); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, err
	}
	return ns, nil
}

// markUninstalling sets uninstalling=true in the mesh config, when the
// config still exists.
func (r *Reconciler) markUninstalling(ctx context.Context, mesh *meshv1alpha1.AmbientMesh) error {
	cm := &corev1.ConfigMap{}
	key := client.ObjectKey{Namespace: mesh.Spec.InstallNamespace(), Name: meshconfig.ConfigMapName}
	if err := r.Get(ctx, key, cm); err != nil {
		return client.IgnoreNotFound(err)
	}
	cfg, err := meshconfig.Parse([]byte(cm.Data[meshconfig.ConfigMapKey]))
	if err != nil || cfg.Uninstalling {
		// A config that does not parse is rewritten by nobody now; the
		// agents' own shutdown still cleans up.
		return nil
	}
	cfg.Uninstalling = true
	data, err := cfg.Marshal()
	if err != nil {
		return err
	}
	base := cm.DeepCopy()
	cm.Data[meshconfig.ConfigMapKey] = string(data)
	if err := r.Patch(ctx, cm, client.MergeFrom(base)); err != nil {
		return client.IgnoreNotFound(err)
	}
	r.event(mesh, corev1.EventTypeNormal, "Uninstalling", "Uninstall", "told the node agents to stop enrolling pods")
	return nil
}

// removeNodeAgent deletes a node agent's DaemonSet and returns how many of
// its pods are still there.
func (r *Reconciler) removeNodeAgent(ctx context.Context, mesh *meshv1alpha1.AmbientMesh, name string) (int, error) {
	ds := &appsv1.DaemonSet{}
	ds.Namespace, ds.Name = mesh.Spec.InstallNamespace(), name
	err := r.Get(ctx, client.ObjectKeyFromObject(ds), ds)
	switch {
	case err == nil && ds.DeletionTimestamp.IsZero() && metav1.IsControlledBy(ds, mesh):
		if err := r.Delete(ctx, ds, client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil {
			return 0, err
		}
		r.event(mesh, corev1.EventTypeNormal, "Uninstalling", "Uninstall", "deleted DaemonSet %s", client.ObjectKeyFromObject(ds))
	case err != nil && !apierrors.IsNotFound(err):
		return 0, err
	}
	pods := &corev1.PodList{}
	if err := r.List(ctx, pods, client.InNamespace(ds.Namespace),
		client.MatchingLabelsSelector{Selector: manifests.ComponentSelector(mesh.Name, name)}); err != nil {
		return 0, err
	}
	return len(pods.Items), nil
}

// deleteOwnNamespace deletes the install namespace only if the operator
// created it (it carries the mesh labels).
func (r *Reconciler) deleteOwnNamespace(ctx context.Context, mesh *meshv1alpha1.AmbientMesh, ns *corev1.Namespace) error {
	if ns == nil || !ns.DeletionTimestamp.IsZero() {
		return nil
	}
	l := ns.Labels
	if l[manifests.LabelManagedBy] != manifests.ManagedByValue || l[manifests.LabelMesh] != mesh.Name {
		return nil
	}
	if err := r.Delete(ctx, ns); client.IgnoreNotFound(err) != nil {
		return err
	}
	r.event(mesh, corev1.EventTypeNormal, "Uninstalling", "Uninstall", "deleted namespace %s", ns.Name)
	return nil
}

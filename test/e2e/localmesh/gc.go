package localmesh

import (
	"context"
	"errors"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
)

// The garbage collector's part for waypoints. The operator makes a
// waypoint's objects controlled by its Waypoint (or Gateway) and leaves
// their deletion to Kubernetes's garbage collector, which does not run
// here (there is no kube-controller-manager).

// waypointKinds are the kinds the operator renders for a waypoint.
var waypointKinds = []schema.GroupVersionKind{
	appsv1.SchemeGroupVersion.WithKind("Deployment"),
	{Version: "v1", Kind: "Service"},
	{Version: "v1", Kind: "ConfigMap"},
	{Version: "v1", Kind: "ServiceAccount"},
	{Group: "policy", Version: "v1", Kind: "PodDisruptionBudget"},
	{Group: "autoscaling", Version: "v2", Kind: "HorizontalPodAutoscaler"},
}

// collectOrphan deletes a waypoint Deployment whose controller is gone, and
// the objects of the same waypoint that the same controller owned. It
// reports whether the Deployment was such an orphan.
func (m *Mesh) collectOrphan(ctx context.Context, d *appsv1.Deployment) (bool, error) {
	owner := metav1.GetControllerOf(d)
	if owner == nil {
		return false, nil
	}
	gone, err := m.ownerGone(ctx, d.Namespace, *owner)
	if err != nil || !gone {
		return false, err
	}
	var errs []error
	for _, gvk := range waypointKinds {
		list := &metav1.PartialObjectMetadataList{}
		list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		err := m.Client.List(ctx, list, client.InNamespace(d.Namespace),
			client.MatchingLabels{meshv1alpha1.LabelWaypoint: d.Labels[meshv1alpha1.LabelWaypoint]})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for i := range list.Items {
			o := &list.Items[i]
			if c := metav1.GetControllerOf(o); c != nil && c.UID == owner.UID {
				m.debugf("garbage collector: deleting %s %s/%s (owner %s %s is gone)", gvk.Kind, o.Namespace, o.Name, owner.Kind, owner.Name)
				errs = append(errs, client.IgnoreNotFound(m.Client.Delete(ctx, o)))
			}
		}
	}
	return true, errors.Join(errs...)
}

// ownerGone reports whether the object ref names no longer exists (or was
// recreated under another UID).
func (m *Mesh) ownerGone(ctx context.Context, namespace string, ref metav1.OwnerReference) (bool, error) {
	o := &metav1.PartialObjectMetadata{}
	o.SetGroupVersionKind(schema.FromAPIVersionAndKind(ref.APIVersion, ref.Kind))
	err := m.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: ref.Name}, o)
	if apierrors.IsNotFound(err) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	return o.UID != ref.UID, nil
}

// syncWorkloads is one pass of the kubelet stand-in, after the garbage
// collector's for waypoints (whose orphaned Deployments' pods the stand-in
// then removes).
func (m *Mesh) syncWorkloads(ctx context.Context) error {
	waypoints := &appsv1.DeploymentList{}
	if err := m.Client.List(ctx, waypoints, client.HasLabels{meshv1alpha1.LabelWaypoint}); err != nil {
		return err
	}
	var errs []error
	for i := range waypoints.Items {
		_, err := m.collectOrphan(ctx, &waypoints.Items[i])
		errs = append(errs, err)
	}
	return errors.Join(append(errs, m.standin.Sync(ctx))...)
}

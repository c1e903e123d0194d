// Package waypointtest sets up, on an envtest API server, what a waypoint
// needs from the mesh without running the AmbientMesh controller (which
// needs cert-manager): an AmbientMesh whose status says it is ready, the
// mesh ConfigMap and the control plane's CA Secret. It also plays the
// Deployment controller, which envtest does not run, and starts the suites of
// the controllers that provision waypoints (suite.go).
package waypointtest

import (
	"context"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	meshmanifests "github.com/ambientmesh/ambient-operator/controllers/ambientmesh/manifests"
	"github.com/ambientmesh/ambient-operator/internal/meshconfig"
)

// Contents of the mesh files the proxies copy.
const (
	MeshConfig = "trustDomain: cluster.local\n"
	CARoot     = "-----BEGIN CERTIFICATE-----\ntest\n-----END CERTIFICATE-----\n"
)

// CreateMesh creates the AmbientMesh (not ready: no status yet), its
// install namespace, the mesh ConfigMap and the CA Secret.
func CreateMesh(ctx context.Context, c client.Client, version string) (*meshv1alpha1.AmbientMesh, error) {
	mesh := &meshv1alpha1.AmbientMesh{ObjectMeta: metav1.ObjectMeta{Name: meshv1alpha1.MeshName}}
	mesh.Spec.Version = version
	if err := c.Create(ctx, mesh); err != nil {
		return nil, err
	}
	ns := mesh.Spec.InstallNamespace()
	objs := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
		&corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: meshconfig.ConfigMapName, Labels: map[string]string{
				meshmanifests.LabelManagedBy: meshmanifests.ManagedByValue,
				meshmanifests.LabelMesh:      mesh.Name,
				meshmanifests.LabelComponent: meshmanifests.ComponentConfig,
			}},
			Data: map[string]string{meshconfig.ConfigMapKey: MeshConfig},
		},
		&corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: meshmanifests.ControlPlaneTLSName},
			Data:       map[string][]byte{"ca.crt": []byte(CARoot)},
		},
	}
	for _, o := range objs {
		if err := c.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, err
		}
	}
	return mesh, nil
}

// SetMeshStatus writes what the AmbientMesh controller would: the version
// every component runs and the version ztunnel is rolled out at.
func SetMeshStatus(ctx context.Context, c client.Client, version, ztunnelVersion string) error {
	mesh := &meshv1alpha1.AmbientMesh{}
	if err := c.Get(ctx, client.ObjectKey{Name: meshv1alpha1.MeshName}, mesh); err != nil {
		return err
	}
	base := mesh.DeepCopy()
	mesh.Status.Version = version
	mesh.Status.Components.ZTunnel.Version = ztunnelVersion
	mesh.Status.ObservedGeneration = mesh.Generation
	return c.Status().Patch(ctx, mesh, client.MergeFrom(base))
}

// SetAvailable plays the Deployment controller and the kubelet: the
// Deployment reports n ready and available replicas.
func SetAvailable(ctx context.Context, c client.Client, key client.ObjectKey, n int32) error {
	d := &appsv1.Deployment{}
	if err := c.Get(ctx, key, d); err != nil {
		return err
	}
	base := d.DeepCopy()
	d.Status.ObservedGeneration = d.Generation
	d.Status.Replicas, d.Status.UpdatedReplicas = n, n
	d.Status.ReadyReplicas, d.Status.AvailableReplicas = n, n
	return c.Status().Patch(ctx, d, client.MergeFrom(base))
}

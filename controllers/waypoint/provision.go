package waypoint

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	meshmanifests "github.com/ambientmesh/ambient-operator/controllers/ambientmesh/manifests"
	"github.com/ambientmesh/ambient-operator/controllers/waypoint/manifests"
	"github.com/ambientmesh/ambient-operator/internal/applyobj"
	"github.com/ambientmesh/ambient-operator/internal/meshconfig"
)

// caKey is the key of the CA bundle in the control plane's certificate
// Secret, the bundle ztunnel mounts too.
const caKey = "ca.crt"

// Provisioner creates, repairs and observes the objects of one waypoint
// proxy. The Waypoint and the Gateway reconcilers share it, so both kinds
// produce exactly the same objects.
type Provisioner struct {
	Client client.Client
	// APIReader reads past the cache: the control plane's certificate
	// Secret (the operator may get that one Secret and does not watch
	// Secrets), and objects of the proxy's name that the cache, which holds
	// only objects the operator labelled, does not hold.
	APIReader client.Reader
	// Recorder gets an event on the owner for every object created or
	// repaired; nil records nothing.
	Recorder events.EventRecorder
	// ClusterDomain is the DNS suffix of Service hostnames.
	ClusterDomain string
}

// Observation is what one pass learned about a proxy. Statuses are pure
// functions of it (see waypoint_status.go and the gateway package).
type Observation struct {
	// NoMesh says why there is no mesh to run the proxy in; empty when there is.
	NoMesh string
	// Waiting says what the objects wait for before they can be created.
	Waiting string
	// Version is the mesh version the proxy is rendered at.
	Version string
	// Deployment is the proxy's Deployment as last read.
	Deployment DeploymentState
	// ServiceExists: the proxy's Service exists.
	ServiceExists bool
	// ClusterIPs of the Service, when allocated.
	ClusterIPs []string
	// Hostname is the Service's DNS name.
	Hostname string
	// Err is the pass's error, surfaced in the status.
	Err error
}

// DeploymentState is what the status needs of the proxy's Deployment.
type DeploymentState struct {
	Exists bool
	// Desired, Ready and Available count replicas.
	Desired, Ready, Available int32
}

// Provision brings the proxy's objects to the desired state, then reads
// the Deployment and Service as they are, whether or not this pass could
// apply them: the status reports what runs. owner must be the object
// proxy.Owner refers to. A missing mesh is not an error: the observation
// says so and the watch on the mesh resumes the work.
func (p *Provisioner) Provision(ctx context.Context, owner client.Object, proxy manifests.Proxy) Observation {
	obs := p.provision(ctx, owner, proxy)
	if err := p.observe(ctx, proxy, &obs); err != nil {
		obs.Err = errors.Join(obs.Err, err)
	}
	return obs
}

// provision: mesh → version → mesh files → render → apply and prune.
func (p *Provisioner) provision(ctx context.Context, owner client.Object, proxy manifests.Proxy) (obs Observation) {
	mesh := &meshv1alpha1.AmbientMesh{}
	if err := p.Client.Get(ctx, client.ObjectKey{Name: meshv1alpha1.MeshName}, mesh); err != nil {
		if client.IgnoreNotFound(err) != nil {
			obs.Err = err
			return obs
		}
		obs.NoMesh = "there is no AmbientMesh " + meshv1alpha1.MeshName + ": create it (config/samples/mesh_v1alpha1_ambientmesh.yaml)"
		return obs
	}
	if obs.NoMesh = meshUnavailable(mesh); obs.NoMesh != "" {
		return obs
	}
	running, err := p.runningVersion(ctx, proxy)
	if err != nil {
		obs.Err = err
		return obs
	}
	obs.Version = proxyVersion(mesh, running)
	in := manifests.Input{Proxy: proxy, Mesh: mesh, Version: obs.Version}
	if obs.Waiting, obs.Err = p.readMeshFiles(ctx, mesh, &in); obs.Waiting != "" || obs.Err != nil {
		return obs
	}
	objs, err := manifests.Render(in)
	if err != nil {
		obs.Err = err
		return obs
	}
	obs.Err = p.applyAndPrune(ctx, owner, proxy, objs)
	return obs
}

// Remove deletes the proxy's objects that owner controls, for an owner that
// no longer asks for a proxy (a Gateway that is not accepted any more).
func (p *Provisioner) Remove(ctx context.Context, owner client.Object, proxy manifests.Proxy) error {
	key := client.ObjectKey{Namespace: proxy.Namespace, Name: proxy.Name}
	for _, obj := range OwnedTypes() {
		// What owner controls carries the operator's labels (it applied
		// them), so the cache holds it.
		if err := p.Client.Get(ctx, key, obj); err != nil {
			if client.IgnoreNotFound(err) != nil {
				return err
			}
			continue
		}
		if !metav1.IsControlledBy(obj, owner) {
			continue
		}
		kind := reflect.TypeOf(obj).Elem().Name()
		if err := p.Client.Delete(ctx, obj); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("delete %s %s: %w", kind, key, err)
		}
		p.event(owner, "Removed", "deleted %s %s: no proxy is wanted", kind, key)
	}
	return nil
}

// meshUnavailable explains why a proxy cannot run in mesh yet. A mesh that
// was Ready once keeps its waypoints programmed while it upgrades or is
// degraded: the waypoints still run and serve.
func meshUnavailable(mesh *meshv1alpha1.AmbientMesh) string {
	switch {
	case !mesh.DeletionTimestamp.IsZero():
		return "the AmbientMesh is being deleted"
	case mesh.Status.Version == "":
		return "the AmbientMesh is not ready yet: see `kubectl get ambientmesh " + mesh.Name + "`"
	}
	return ""
}

// proxyVersion is the mesh version a proxy runs. Waypoints follow ztunnel:
// they move to a version once ztunnel runs it on every node, the last step
// of a mesh upgrade before them (status.components.ztunnel.version is set
// only then). While ztunnel rolls, or while the upgrade is paused, a proxy
// keeps the version it runs, and a new one gets the version the whole mesh
// runs.
func proxyVersion(mesh *meshv1alpha1.AmbientMesh, running string) string {
	if running != "" && mesh.Spec.Upgrade.IsPaused() {
		return running
	}
	if v := mesh.Status.Components.ZTunnel.Version; v != "" {
		return v
	}
	if running != "" {
		return running
	}
	return mesh.Status.Version
}

func (p *Provisioner) runningVersion(ctx context.Context, proxy manifests.Proxy) (string, error) {
	d := &appsv1.Deployment{}
	if err := p.Client.Get(ctx, client.ObjectKey{Namespace: proxy.Namespace, Name: proxy.Name}, d); err != nil {
		return "", client.IgnoreNotFound(err)
	}
	return d.Spec.Template.Labels[meshmanifests.LabelVersion], nil
}

// readMeshFiles copies the mesh config and the CA bundle into in. It
// returns what is still missing (the AmbientMesh controller creates both).
func (p *Provisioner) readMeshFiles(ctx context.Context, mesh *meshv1alpha1.AmbientMesh, in *manifests.Input) (waiting string, err error) {
	ns := mesh.Spec.InstallNamespace()
	cm := &corev1.ConfigMap{}
	if err := p.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: meshconfig.ConfigMapName}, cm); err != nil {
		if client.IgnoreNotFound(err) != nil {
			return "", err
		}
		return fmt.Sprintf("waiting for the mesh ConfigMap %s/%s", ns, meshconfig.ConfigMapName), nil
	}
	in.MeshConfig = cm.Data[meshconfig.ConfigMapKey]
	secret := &corev1.Secret{}
	key := client.ObjectKey{Namespace: ns, Name: meshmanifests.ControlPlaneTLSName}
	// The Secret is not watched: a missing one is an error, retried with backoff.
	if err := p.APIReader.Get(ctx, key, secret); err != nil {
		return "", fmt.Errorf("read the control plane's CA from Secret %s: %w", key, err)
	}
	if len(secret.Data[caKey]) == 0 {
		return "", fmt.Errorf("secret %s has no %s yet: check the mesh's IdentityReady condition", key, caKey)
	}
	in.CARoot = string(secret.Data[caKey])
	return "", nil
}

// applyAndPrune server-side applies every object under the operator's field
// owner, forcing ownership: a hand edit of a field the operator sets is
// reverted, fields it does not set are left alone. It refuses to take over
// an object it does not control (a user's Service of the same name), and
// deletes the PodDisruptionBudget and autoscaler once they are not wanted.
func (p *Provisioner) applyAndPrune(ctx context.Context, owner client.Object, proxy manifests.Proxy, objs []client.Object) error {
	for _, obj := range objs {
		if err := p.apply(ctx, owner, proxy, obj); err != nil {
			return fmt.Errorf("apply %s %s: %w", obj.GetObjectKind().GroupVersionKind().Kind, client.ObjectKeyFromObject(obj), err)
		}
	}
	optional := []struct {
		kind string
		obj  client.Object
	}{
		{"PodDisruptionBudget", &policyv1.PodDisruptionBudget{}},
		{"HorizontalPodAutoscaler", &autoscalingv2.HorizontalPodAutoscaler{}},
	}
	for _, o := range optional {
		wanted := slices.ContainsFunc(objs, func(r client.Object) bool { return r.GetObjectKind().GroupVersionKind().Kind == o.kind })
		if wanted {
			continue
		}
		key := client.ObjectKey{Namespace: proxy.Namespace, Name: proxy.Name}
		if err := p.Client.Get(ctx, key, o.obj); err != nil {
			if client.IgnoreNotFound(err) != nil {
				return err
			}
			continue
		}
		if !metav1.IsControlledBy(o.obj, owner) {
			continue
		}
		if err := p.Client.Delete(ctx, o.obj); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("delete %s %s: %w", o.kind, key, err)
		}
		p.event(owner, "Pruned", "deleted %s %s: the spec no longer needs it", o.kind, key)
	}
	return nil
}

func (p *Provisioner) apply(ctx context.Context, owner client.Object, proxy manifests.Proxy, obj client.Object) error {
	existing, ok := obj.DeepCopyObject().(client.Object)
	if !ok {
		return fmt.Errorf("%T is not a client.Object", obj)
	}
	existed := true
	if err := p.lookup(ctx, client.ObjectKeyFromObject(obj), existing); err != nil {
		if client.IgnoreNotFound(err) != nil {
			return err
		}
		existed = false
	}
	if existed && !metav1.IsControlledBy(existing, owner) {
		return fmt.Errorf("it exists and is not controlled by %s %s: rename or delete one of them", proxy.Owner.Kind, proxy.Owner.Name)
	}
	u, err := applyobj.From(obj)
	if err != nil {
		return err
	}
	if err := p.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(u),
		client.FieldOwner(meshmanifests.FieldOwner), client.ForceOwnership); err != nil {
		return err
	}
	kind, key := u.GetKind(), client.ObjectKeyFromObject(obj)
	switch {
	case !existed:
		p.event(owner, "Created", "created %s %s", kind, key)
	case u.GetResourceVersion() != existing.GetResourceVersion():
		p.event(owner, "Updated", "updated %s %s to the desired state", kind, key)
	}
	return nil
}

// lookup reads obj from the cache and, when the cache does not hold it,
// from the API server. The operator's cache holds only objects it labelled
// (ambientmesh.CacheOnlyLabelled): a user's object of the proxy's name, or
// one whose labels were removed, is seen only by the API server, which is
// asked only on a miss.
func (p *Provisioner) lookup(ctx context.Context, key client.ObjectKey, obj client.Object) error {
	err := p.Client.Get(ctx, key, obj)
	if !apierrors.IsNotFound(err) {
		return err
	}
	return p.APIReader.Get(ctx, key, obj)
}

// observe reads the proxy's Deployment and Service, if they are its own.
func (p *Provisioner) observe(ctx context.Context, proxy manifests.Proxy, obs *Observation) error {
	key := client.ObjectKey{Namespace: proxy.Namespace, Name: proxy.Name}
	d := &appsv1.Deployment{}
	if err := p.Client.Get(ctx, key, d); client.IgnoreNotFound(err) != nil {
		return err
	} else if err == nil && ownedByProxy(d, proxy) {
		obs.Deployment = deploymentState(d)
	}
	svc := &corev1.Service{}
	if err := p.Client.Get(ctx, key, svc); client.IgnoreNotFound(err) != nil {
		return err
	} else if err == nil && ownedByProxy(svc, proxy) {
		obs.ServiceExists = true
		obs.ClusterIPs = clusterIPs(svc)
		obs.Hostname = svc.Name + "." + svc.Namespace + ".svc." + p.ClusterDomain
	}
	return nil
}

func ownedByProxy(obj client.Object, proxy manifests.Proxy) bool {
	ref := metav1.GetControllerOf(obj)
	return ref != nil && ref.UID == proxy.Owner.UID
}

func deploymentState(d *appsv1.Deployment) DeploymentState {
	desired := int32(1)
	if d.Spec.Replicas != nil {
		desired = *d.Spec.Replicas
	}
	return DeploymentState{Exists: true, Desired: desired, Ready: d.Status.ReadyReplicas, Available: d.Status.AvailableReplicas}
}

// clusterIPs are the Service's allocated addresses ("None" is headless).
func clusterIPs(svc *corev1.Service) []string {
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	return slices.DeleteFunc(slices.Clone(ips), func(ip string) bool { return ip == "" || ip == corev1.ClusterIPNone })
}

func (p *Provisioner) event(owner client.Object, reason, format string, args ...any) {
	if p.Recorder != nil {
		p.Recorder.Eventf(owner, nil, corev1.EventTypeNormal, reason, "Provision", format, args...)
	}
}

// OwnedTypes are the kinds a proxy's owner controls; the reconcilers watch
// them (Owns) so that a change or deletion is repaired at once.
func OwnedTypes() []client.Object {
	return []client.Object{
		&corev1.ConfigMap{}, &corev1.ServiceAccount{}, &corev1.Service{}, &appsv1.Deployment{},
		&policyv1.PodDisruptionBudget{}, &autoscalingv2.HorizontalPodAutoscaler{},
	}
}

// MeshChanges passes the AmbientMesh events that can change a waypoint's
// objects or status: creation, deletion, and updates of what proxies read
// (readiness, versions, spec.waypoint, the pause, the install namespace).
// The mesh's status changes often during a rollout; the rest is noise here.
var MeshChanges = predicate.TypedFuncs[client.Object]{
	UpdateFunc: func(e event.UpdateEvent) bool {
		old, okOld := e.ObjectOld.(*meshv1alpha1.AmbientMesh)
		cur, okNew := e.ObjectNew.(*meshv1alpha1.AmbientMesh)
		return !okOld || !okNew || meshChangeMatters(old, cur)
	},
}

func meshChangeMatters(old, cur *meshv1alpha1.AmbientMesh) bool {
	return old.Status.Version != cur.Status.Version ||
		old.Status.Components.ZTunnel.Version != cur.Status.Components.ZTunnel.Version ||
		!equality.Semantic.DeepEqual(old.Spec.Waypoint, cur.Spec.Waypoint) ||
		old.Spec.Upgrade.IsPaused() != cur.Spec.Upgrade.IsPaused() ||
		old.Spec.InstallNamespace() != cur.Spec.InstallNamespace() ||
		old.DeletionTimestamp.IsZero() != cur.DeletionTimestamp.IsZero()
}

// IsMeshConfigMap reports whether obj is the mesh ConfigMap the proxies
// copy; its labels tell it from a user's ConfigMap of the same name.
func IsMeshConfigMap(obj client.Object) bool {
	l := obj.GetLabels()
	return obj.GetName() == meshconfig.ConfigMapName && l[meshmanifests.LabelManagedBy] == meshmanifests.ManagedByValue &&
		l[meshmanifests.LabelComponent] == meshmanifests.ComponentConfig
}

package ambientmesh

import (
	"context"
	"fmt"
	"slices"
	"strings"

	cmv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controllers/ambientmesh/manifests"
)

// reconcileNormal installs or updates the mesh: namespace → read the
// cluster → decide versions → identity → apply and prune → ztunnel nodes.
func (r *Reconciler) reconcileNormal(ctx context.Context, mesh *meshv1alpha1.AmbientMesh, obs *observation) (ctrl.Result, error) {
	if err := r.ensureNamespace(ctx, mesh); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.observe(ctx, mesh, obs); err != nil {
		return ctrl.Result{}, err
	}
	obs.Plan = planVersions(mesh.Spec.EffectiveVersion(), mesh.Spec.Upgrade.IsPaused(), obs.Cluster)
	obs.Identity = r.checkIdentity(ctx, mesh)
	if obs.Plan.Refused != nil && obs.Plan.Installed == "" {
		// Nothing is installed and the version cannot be: install nothing.
		return ctrl.Result{}, nil
	}
	r.recordVersionSteps(mesh, obs)
	objs, err := manifests.Render(manifests.Input{Mesh: mesh, Versions: obs.Plan.Versions})
	if err != nil {
		return ctrl.Result{}, err
	}
	if err := r.applyAll(ctx, mesh, objs); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.prune(ctx, mesh, objs); err != nil {
		return ctrl.Result{}, err
	}
	return r.rollZTunnelNodes(ctx, mesh, ztunnelTemplateHash(objs), obs)
}

// ensureNamespace creates the install namespace when missing. A namespace
// the operator creates carries the mesh labels, and only such a namespace
// is deleted on uninstall.
func (r *Reconciler) ensureNamespace(ctx context.Context, mesh *meshv1alpha1.AmbientMesh) error {
	ns := &corev1.Namespace{}
	err := r.lookup(ctx, client.ObjectKey{Name: mesh.Spec.InstallNamespace()}, ns)
	switch {
	case err == nil && !ns.DeletionTimestamp.IsZero():
		return fmt.Errorf("namespace %s is being deleted; the mesh is reinstalled once it is gone", ns.Name)
	case err == nil:
		return nil
	case !apierrors.IsNotFound(err):
		return err
	}
	if err := r.Create(ctx, manifests.Namespace(mesh)); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", mesh.Spec.InstallNamespace(), err)
	}
	r.event(mesh, corev1.EventTypeNormal, "Created", "Install", "created namespace %s", mesh.Spec.InstallNamespace())
	return nil
}

// observe reads the component workloads and the ztunnel pods.
func (r *Reconciler) observe(ctx context.Context, mesh *meshv1alpha1.AmbientMesh, obs *observation) error {
	ns := mesh.Spec.InstallNamespace()
	var err error
	if obs.Cluster.ControlPlane, err = r.deploymentState(ctx, client.ObjectKey{Namespace: ns, Name: manifests.ControlPlaneName}); err != nil {
		return err
	}
	if obs.Cluster.CNI, err = r.daemonSetState(ctx, client.ObjectKey{Namespace: ns, Name: manifests.CNIName}); err != nil {
		return err
	}
	if obs.Cluster.ZTunnel, err = r.daemonSetState(ctx, client.ObjectKey{Namespace: ns, Name: manifests.ZTunnelName}); err != nil {
		return err
	}
	if obs.Cluster.ZTunnelPods, err = r.ztunnelPods(ctx, mesh); err != nil {
		return err
	}
	if obs.Cluster.Waypoints, err = r.waypointDeployments(ctx, mesh); err != nil {
		return err
	}
	obs.Observed = true
	return nil
}

// waypointDeployments lists the waypoint proxies of every namespace: they
// carry the mesh labels and the waypoint label, and are controlled by their
// Waypoint or Gateway, not by the mesh.
func (r *Reconciler) waypointDeployments(ctx context.Context, mesh *meshv1alpha1.AmbientMesh) ([]waypointDeployment, error) {
	list := &appsv1.DeploymentList{}
	if err := r.List(ctx, list, client.MatchingLabels(manifests.MeshLabels(mesh.Name)), client.HasLabels{meshv1alpha1.LabelWaypoint}); err != nil {
		return nil, err
	}
	out := make([]waypointDeployment, 0, len(list.Items))
	for _, d := range list.Items {
		out = append(out, waypointDeployment{Key: d.Namespace + "/" + d.Name, Version: d.Spec.Template.Labels[manifests.LabelVersion]})
	}
	slices.SortFunc(out, func(a, b waypointDeployment) int { return strings.Compare(a.Key, b.Key) })
	return out, nil
}

func (r *Reconciler) deploymentState(ctx context.Context, key client.ObjectKey) (workloadState, error) {
	d := &appsv1.Deployment{}
	if err := r.Get(ctx, key, d); err != nil {
		return workloadState{}, client.IgnoreNotFound(err)
	}
	return deploymentState(d), nil
}

// deploymentState: rolled out when the Deployment controller has seen the
// current template and every replica runs it, is ready, and no old one is left.
func deploymentState(d *appsv1.Deployment) workloadState {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	s := d.Status
	w := workloadState{
		Exists:  true,
		Version: d.Spec.Template.Labels[manifests.LabelVersion],
		Desired: want, Ready: s.ReadyReplicas, Updated: s.UpdatedReplicas,
	}
	w.RolledOut = s.ObservedGeneration >= d.Generation && s.UpdatedReplicas == want && s.ReadyReplicas >= want && s.Replicas == want
	for _, c := range s.Conditions {
		if c.Type == appsv1.DeploymentProgressing && c.Status == corev1.ConditionFalse && c.Reason == "ProgressDeadlineExceeded" {
			w.Stalled = "rollout exceeded its progress deadline: " + c.Message
		}
	}
	return w
}

func (r *Reconciler) daemonSetState(ctx context.Context, key client.ObjectKey) (workloadState, error) {
	ds := &appsv1.DaemonSet{}
	if err := r.Get(ctx, key, ds); err != nil {
		return workloadState{}, client.IgnoreNotFound(err)
	}
	return daemonSetState(ds), nil
}

func daemonSetState(ds *appsv1.DaemonSet) workloadState {
	s := ds.Status
	return workloadState{
		Exists:  true,
		Version: ds.Spec.Template.Labels[manifests.LabelVersion],
		Desired: s.DesiredNumberScheduled, Ready: s.NumberReady, Updated: s.UpdatedNumberScheduled,
		RolledOut: s.ObservedGeneration >= ds.Generation &&
			s.UpdatedNumberScheduled == s.DesiredNumberScheduled && s.NumberReady >= s.DesiredNumberScheduled,
	}
}

func (r *Reconciler) ztunnelPods(ctx context.Context, mesh *meshv1alpha1.AmbientMesh) ([]ztunnelPod, error) {
	list := &corev1.PodList{}
	if err := r.List(ctx, list, client.InNamespace(mesh.Spec.InstallNamespace()),
		client.MatchingLabelsSelector{Selector: manifests.ComponentSelector(mesh.Name, manifests.ZTunnelName)}); err != nil {
		return nil, err
	}
	pods := make([]ztunnelPod, 0, len(list.Items))
	for i := range list.Items {
		p := &list.Items[i]
		if p.Spec.NodeName == "" || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		pods = append(pods, ztunnelPod{
			Name: p.Name, UID: p.UID, Node: p.Spec.NodeName,
			Version:     p.Labels[manifests.LabelVersion],
			Hash:        p.Annotations[manifests.AnnotationTemplateHash],
			Ready:       podReady(p),
			Terminating: !p.DeletionTimestamp.IsZero(),
			Created:     p.CreationTimestamp.Time,
		})
	}
	return pods, nil
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// checkIdentity verifies the issuer that signs workload certificates: the
// operator's own CA Issuer, or the user's issuerRef.
func (r *Reconciler) checkIdentity(ctx context.Context, mesh *meshv1alpha1.AmbientMesh) identityState {
	ns := mesh.Spec.InstallNamespace()
	ref := mesh.Spec.Identity.IssuerRef
	if ref == nil {
		issuer := &cmv1.Issuer{}
		key := client.ObjectKey{Namespace: ns, Name: manifests.CAIssuerName}
		if err := r.Get(ctx, key, issuer); err != nil {
			return identityState{Reason: meshv1alpha1.ReasonInstalling, Message: "creating the operator-managed CA issuer " + key.String()}
		}
		return issuerReadiness("operator-managed CA Issuer "+key.String(), issuer.Status.Conditions,
			"; it becomes ready once cert-manager has issued the root CA certificate "+manifests.RootCAName+": check that cert-manager is running")
	}
	if ref.Group != "" && ref.Group != cmv1.SchemeGroupVersion.Group {
		return identityState{Ready: true, Reason: meshv1alpha1.ReasonReady,
			Message: fmt.Sprintf("external issuer %s %s/%s is used as is: the operator cannot check its readiness", ref.Group, ref.Kind, ref.Name)}
	}
	var (
		obj   client.Object
		key   client.ObjectKey
		conds *[]cmv1.IssuerCondition
	)
	if ref.Kind == cmv1.ClusterIssuerKind {
		ci := &cmv1.ClusterIssuer{}
		obj, key, conds = ci, client.ObjectKey{Name: ref.Name}, &ci.Status.Conditions
	} else {
		is := &cmv1.Issuer{}
		obj, key, conds = is, client.ObjectKey{Namespace: ns, Name: ref.Name}, &is.Status.Conditions
	}
	name := kindOr(ref.Kind) + " " + key.Name
	if key.Namespace != "" {
		name = kindOr(ref.Kind) + " " + key.String()
	}
	if err := r.Get(ctx, key, obj); err != nil {
		if apierrors.IsNotFound(err) {
			return identityState{Reason: meshv1alpha1.ReasonIssuerNotFound,
				Message: fmt.Sprintf("spec.identity.issuerRef names %s, which does not exist: create it, or fix or remove issuerRef", name)}
		}
		return identityState{Reason: meshv1alpha1.ReasonIssuerNotReady, Message: fmt.Sprintf("cannot read %s: %v", name, err)}
	}
	return issuerReadiness(name, *conds, "; see `kubectl describe` of the issuer")
}

func kindOr(kind string) string {
	if kind == "" {
		return cmv1.IssuerKind
	}
	return kind
}

func issuerReadiness(name string, conds []cmv1.IssuerCondition, advice string) identityState {
	for _, c := range conds {
		if c.Type == cmv1.IssuerConditionReady {
			if c.Status == cmmeta.ConditionTrue {
				return identityState{Ready: true, Reason: meshv1alpha1.ReasonReady, Message: name + " is ready"}
			}
			return identityState{Reason: meshv1alpha1.ReasonIssuerNotReady, Message: fmt.Sprintf("%s is not ready: %s%s", name, c.Message, advice)}
		}
	}
	return identityState{Reason: meshv1alpha1.ReasonIssuerNotReady, Message: name + " has no Ready condition yet" + advice}
}

// rollZTunnelNodes replaces outdated ztunnel pods one node at a time (the
// DaemonSet uses OnDelete): only while the control plane is serving, never
// while a node is in transition, and not while paused or failed.
func (r *Reconciler) rollZTunnelNodes(ctx context.Context, mesh *meshv1alpha1.AmbientMesh, hash string, obs *observation) (ctrl.Result, error) {
	cs := &obs.Cluster
	obs.Nodes = planZTunnelNodes(cs.ZTunnelPods, hash, cs.ZTunnel.Desired,
		mesh.Spec.Upgrade.EffectiveNodeReadyTimeout(), r.Clock.Now())
	cs.ZTunnel.RolledOut = cs.ZTunnel.RolledOut && obs.Nodes.Done() && cs.ZTunnel.Version == obs.Plan.Versions.ZTunnel
	result := ctrl.Result{RequeueAfter: obs.Nodes.RecheckAfter}
	next := obs.Nodes.Delete
	if next == nil || obs.Nodes.Failed != "" || mesh.Spec.Upgrade.IsPaused() ||
		mesh.Spec.ZTunnel.EffectiveUpdateStrategy() != meshv1alpha1.UpdateNodeByNode ||
		!rolledOutAt(cs.ControlPlane, obs.Plan.Versions.ControlPlane) {
		return result, nil
	}
	pod := &corev1.Pod{}
	pod.Namespace, pod.Name = mesh.Spec.InstallNamespace(), next.Name
	// The UID precondition makes a retried or duplicated decision harmless:
	// it can only ever delete the pod it looked at.
	uid := next.UID
	if err := r.Delete(ctx, pod, client.Preconditions{UID: &uid}); client.IgnoreNotFound(err) != nil {
		return result, fmt.Errorf("delete ztunnel pod %s on node %s: %w", next.Name, next.Node, err)
	}
	r.event(mesh, corev1.EventTypeNormal, "ReplacingZTunnel", "Upgrade",
		"node %s: replacing ztunnel pod %s (%d/%d nodes updated)", next.Node, next.Name, obs.Nodes.Updated, obs.Nodes.Total)
	obs.Nodes.Transition, obs.Nodes.Delete = next.Node, nil
	if result.RequeueAfter == 0 {
		result.RequeueAfter = mesh.Spec.Upgrade.EffectiveNodeReadyTimeout()
	}
	return result, nil
}

// recordVersionSteps emits an event when a component is moved to another version.
func (r *Reconciler) recordVersionSteps(mesh *meshv1alpha1.AmbientMesh, obs *observation) {
	steps := []struct {
		name string
		w    workloadState
		to   string
	}{
		{"control plane", obs.Cluster.ControlPlane, obs.Plan.Versions.ControlPlane},
		{"CNI agent", obs.Cluster.CNI, obs.Plan.Versions.CNI},
		{"ztunnel", obs.Cluster.ZTunnel, obs.Plan.Versions.ZTunnel},
	}
	for _, s := range steps {
		if s.w.Exists && s.w.Version != "" && s.w.Version != s.to {
			r.event(mesh, corev1.EventTypeNormal, "UpgradeStep", "Upgrade", "%s: %s → %s", s.name, s.w.Version, s.to)
		}
	}
}

func ztunnelTemplateHash(objs []client.Object) string {
	for _, o := range objs {
		if ds, ok := o.(*appsv1.DaemonSet); ok && ds.Name == manifests.ZTunnelName {
			return ds.Spec.Template.Annotations[manifests.AnnotationTemplateHash]
		}
	}
	return ""
}

// event records an event on the mesh.
func (r *Reconciler) event(mesh *meshv1alpha1.AmbientMesh, eventType, reason, action, format string, args ...any) {
	if r.Recorder != nil {
		r.Recorder.Eventf(mesh, nil, eventType, reason, action, format, args...)
	}
}

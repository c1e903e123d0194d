package kubestandin

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ambientmesh/ambient-operator/controllers/ambientmesh/manifests"
)

// The workload controllers' part: the pods each Deployment and DaemonSet
// wants, where they go, rolling updates, and the workloads' status.

// SyncDeployment is one pass of the Deployment controller and the kubelet
// over d's pods: spec.replicas pods of the current template, spread over
// the nodes its nodeSelector admits. On a template change the new pods
// start beside the old ones, which are removed once as many new ones are
// ready (maxUnavailable 0, as the mesh's and the waypoints' Deployments
// ask). pods must have been listed before d was read: a pod seen deleted is
// then replaced from a template at least as new as the one that caused its
// deletion. It writes d's status and returns it.
func (s *StandIn[S]) SyncDeployment(ctx context.Context, d *appsv1.Deployment, pods []corev1.Pod) (appsv1.DeploymentStatus, error) {
	live, prepareErr := s.prepare(ctx, d, pods)
	hash := manifests.TemplateHash(d.Spec.Template)
	live, rollErr := s.rollDeployment(ctx, d, live, hash)
	runErr := s.runAll(ctx, live)
	st := deploymentStatus(d, live, hash)
	return st, errors.Join(prepareErr, rollErr, runErr, writeStatus(ctx, s.o.Client, d, &d.Status, st))
}

// SyncDaemonSet is one pass of the DaemonSet controller and the kubelet
// over ds's pods: one pod of the current template on each node its
// nodeSelector admits; outdated pods are replaced as its update strategy
// says (OnDelete: only once someone deletes them). pods as for
// SyncDeployment. It writes ds's status and returns it.
func (s *StandIn[S]) SyncDaemonSet(ctx context.Context, ds *appsv1.DaemonSet, pods []corev1.Pod) (appsv1.DaemonSetStatus, error) {
	live, prepareErr := s.prepare(ctx, ds, pods)
	hash := manifests.TemplateHash(ds.Spec.Template)
	nodes := s.admitted(ds.Spec.Template.Spec.NodeSelector)
	live, rollErr := s.rollDaemonSet(ctx, ds, nodes, live, hash)
	runErr := s.runAll(ctx, live)
	st := daemonSetStatus(ds, nodes, live, hash)
	return st, errors.Join(prepareErr, rollErr, runErr, writeStatus(ctx, s.o.Client, ds, &ds.Status, st))
}

// prepare tracks w's pods, frees what is left of those deleted behind the
// stand-in's back, finishes the graceful deletions, and returns the live
// pods sorted by name.
func (s *StandIn[S]) prepare(ctx context.Context, w client.Object, pods []corev1.Pod) ([]*Pod[S], error) {
	errs := []error{s.forgetVanished(ctx, pods, w.GetUID())}
	live, terminating := s.adopt(w, pods)
	for _, p := range terminating {
		errs = append(errs, s.finish(ctx, p, Deleted))
	}
	return live, errors.Join(errs...)
}

// rollDeployment keeps spec.replicas pods of the current template and
// removes the old ones once enough current ones are ready, or at once when
// the pods share a node's network.
func (s *StandIn[S]) rollDeployment(ctx context.Context, d *appsv1.Deployment, live []*Pod[S], hash string) ([]*Pod[S], error) {
	want := ptr.Deref(d.Spec.Replicas, 1)
	current, old := byHash(live, hash)
	nodes := s.admitted(d.Spec.Template.Spec.NodeSelector)
	shared := ""
	if s.o.HostNetworkOn != nil {
		shared = s.o.HostNetworkOn(d)
	}
	if shared != "" {
		nodes = []string{shared}
	}
	var errs []error
	if len(old) > 0 && (shared != "" || countReady(current) >= want) {
		errs = append(errs, s.remove(ctx, old))
		old = nil
	}
	if len(current) > int(want) {
		errs = append(errs, s.remove(ctx, current[want:]))
		current = current[:want]
	}
	for len(current) < int(want) && len(nodes) > 0 {
		p, err := s.create(ctx, d, KindDeployment, d.Spec.Template, leastUsed(nodes, current), hash)
		if err != nil {
			errs = append(errs, err)
			break
		}
		current = append(current, p)
	}
	return append(current, old...), errors.Join(errs...)
}

// rollDaemonSet removes the pods on nodes the template no longer admits,
// replaces outdated pods per the update strategy, and creates the pod of
// each node that has none.
func (s *StandIn[S]) rollDaemonSet(ctx context.Context, ds *appsv1.DaemonSet, nodes []string, live []*Pod[S], hash string) ([]*Pod[S], error) {
	stray := slices.DeleteFunc(slices.Clone(live), func(p *Pod[S]) bool { return slices.Contains(nodes, p.Object.Spec.NodeName) })
	errs := []error{s.remove(ctx, stray)}
	live = without(live, stray)
	if ds.Spec.UpdateStrategy.Type == appsv1.RollingUpdateDaemonSetStrategyType {
		var err error
		live, err = s.replaceOutdated(ctx, ds, nodes, live, hash)
		errs = append(errs, err)
	}
	for _, n := range nodes {
		if len(podsOn(live, n)) == 0 {
			var err error
			live, err = s.addDaemonPod(ctx, ds, n, hash, live)
			errs = append(errs, err)
		}
	}
	return live, errors.Join(errs...)
}

// addDaemonPod creates ds's pod on node and adds it to live.
func (s *StandIn[S]) addDaemonPod(ctx context.Context, ds *appsv1.DaemonSet, node, hash string, live []*Pod[S]) ([]*Pod[S], error) {
	p, err := s.create(ctx, ds, KindDaemonSet, ds.Spec.Template, node, hash)
	if err != nil {
		return live, err
	}
	return append(live, p), nil
}

// replaceOutdated is a DaemonSet's RollingUpdate, node by node in node
// order. With maxSurge the new pod starts beside the old one, which goes
// once the new one is ready; without, the old one goes first, while fewer
// than maxUnavailable nodes lack a ready pod. An outdated pod that is not
// ready goes at once (it serves nothing). The replacements of removed
// pods are created by the caller.
func (s *StandIn[S]) replaceOutdated(ctx context.Context, ds *appsv1.DaemonSet, nodes []string, live []*Pod[S], hash string) ([]*Pod[S], error) {
	maxSurge, maxUnavailable := rollingBudget(ds.Spec.UpdateStrategy.RollingUpdate, len(nodes))
	surging, unavailable := 0, 0
	for _, n := range nodes {
		current, old := byHash(podsOn(live, n), hash)
		if len(old) > 0 && len(current) > 0 && countReady(current) == 0 {
			surging++
		}
		if countReady(podsOn(live, n)) == 0 {
			unavailable++
		}
	}
	var gone []*Pod[S]
	var errs []error
	for _, n := range nodes {
		current, old := byHash(podsOn(live, n), hash)
		switch {
		case len(old) == 0:
		case countReady(current) > 0 || countReady(old) == 0:
			gone = append(gone, old...)
		case maxSurge > 0:
			if len(current) == 0 && surging < maxSurge {
				var err error
				live, err = s.addDaemonPod(ctx, ds, n, hash, live)
				errs = append(errs, err)
				surging++
			}
		case unavailable < maxUnavailable:
			gone = append(gone, old...)
			unavailable++
		}
	}
	errs = append(errs, s.remove(ctx, gone))
	return without(live, gone), errors.Join(errs...)
}

// rollingBudget resolves a DaemonSet's maxSurge and maxUnavailable (with
// the API's defaults, 0 and 1) against its number of nodes.
func rollingBudget(ru *appsv1.RollingUpdateDaemonSet, nodes int) (maxSurge, maxUnavailable int) {
	surge, unavailable := intstr.FromInt32(0), intstr.FromInt32(1)
	if ru != nil && ru.MaxSurge != nil {
		surge = *ru.MaxSurge
	}
	if ru != nil && ru.MaxUnavailable != nil {
		unavailable = *ru.MaxUnavailable
	}
	maxSurge, _ = intstr.GetScaledValueFromIntOrPercent(&surge, nodes, true)
	maxUnavailable, _ = intstr.GetScaledValueFromIntOrPercent(&unavailable, nodes, true)
	return maxSurge, maxUnavailable
}

// create makes a pod of w's template on node, controlled by w and labelled
// with the template's hash, as the workload controllers do.
func (s *StandIn[S]) create(ctx context.Context, w client.Object, kind string, t corev1.PodTemplateSpec, node, hash string) (*Pod[S], error) {
	prefix := w.GetName() + "-"
	if kind == KindDeployment {
		prefix += hash[:10] + "-"
	}
	podLabels := maps.Clone(t.Labels)
	if podLabels == nil {
		podLabels = map[string]string{}
	}
	podLabels[hashLabel(kind)] = hash
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: prefix, Namespace: w.GetNamespace(), Labels: podLabels, Annotations: maps.Clone(t.Annotations),
			OwnerReferences: []metav1.OwnerReference{{APIVersion: appsv1.SchemeGroupVersion.String(), Kind: kind,
				Name: w.GetName(), UID: w.GetUID(), Controller: ptr.To(true)}},
		},
		Spec: *t.Spec.DeepCopy(),
	}
	pod.Spec.NodeName = node
	if err := s.o.Client.Create(ctx, pod); err != nil {
		return nil, fmt.Errorf("creating a pod of %s %s/%s: %w", kind, w.GetNamespace(), w.GetName(), err)
	}
	return s.track(pod, &pod.OwnerReferences[0]), nil
}

// hashLabel is the pod label the workload's controller keeps the template
// hash in.
func hashLabel(kind string) string {
	if kind == KindDaemonSet {
		return appsv1.ControllerRevisionHashLabelKey
	}
	return appsv1.DefaultDeploymentUniqueLabelKey
}

// admitted lists the nodes a nodeSelector admits, in order.
func (s *StandIn[S]) admitted(nodeSelector map[string]string) []string {
	sel := labels.SelectorFromSet(nodeSelector)
	var out []string
	for _, n := range s.o.Nodes {
		if sel.Matches(labels.Set(n.Labels)) {
			out = append(out, n.Name)
		}
	}
	return out
}

// leastUsed is the first of nodes that runs the fewest of pods.
func leastUsed[S any](nodes []string, pods []*Pod[S]) string {
	return slices.MinFunc(nodes, func(a, b string) int { return len(podsOn(pods, a)) - len(podsOn(pods, b)) })
}

func deploymentStatus[S any](d *appsv1.Deployment, live []*Pod[S], hash string) appsv1.DeploymentStatus {
	want := ptr.Deref(d.Spec.Replicas, 1)
	current, _ := byHash(live, hash)
	ready := countReady(live)
	return appsv1.DeploymentStatus{
		ObservedGeneration: d.Generation, Replicas: int32(len(live)), UpdatedReplicas: int32(len(current)),
		ReadyReplicas: ready, AvailableReplicas: ready, UnavailableReplicas: max(want-ready, 0),
	}
}

// daemonSetStatus counts nodes: those with a pod, with a ready pod, with
// a pod of the current template.
func daemonSetStatus[S any](ds *appsv1.DaemonSet, nodes []string, live []*Pod[S], hash string) appsv1.DaemonSetStatus {
	var scheduled, ready, updated int32
	for _, n := range nodes {
		on := podsOn(live, n)
		current, _ := byHash(on, hash)
		if len(on) > 0 {
			scheduled++
		}
		if countReady(on) > 0 {
			ready++
		}
		if len(current) > 0 {
			updated++
		}
	}
	desired := int32(len(nodes))
	return appsv1.DaemonSetStatus{
		ObservedGeneration: ds.Generation, DesiredNumberScheduled: desired, CurrentNumberScheduled: scheduled,
		NumberReady: ready, NumberAvailable: ready, UpdatedNumberScheduled: updated, NumberUnavailable: desired - ready,
	}
}

// writeStatus writes a workload's status when it changed.
func writeStatus[T any](ctx context.Context, c client.Client, w client.Object, status *T, next T) error {
	if equality.Semantic.DeepEqual(*status, next) {
		return nil
	}
	*status = next
	return ignoreStale(c.Status().Update(ctx, w))
}

func byHash[S any](pods []*Pod[S], hash string) (current, old []*Pod[S]) {
	for _, p := range pods {
		if p.hash() == hash {
			current = append(current, p)
		} else {
			old = append(old, p)
		}
	}
	return current, old
}

func podsOn[S any](pods []*Pod[S], node string) []*Pod[S] {
	return slices.DeleteFunc(slices.Clone(pods), func(p *Pod[S]) bool { return p.Object.Spec.NodeName != node })
}

func without[S any](pods, gone []*Pod[S]) []*Pod[S] {
	return slices.DeleteFunc(pods, func(p *Pod[S]) bool { return slices.Contains(gone, p) })
}

func countReady[S any](pods []*Pod[S]) int32 {
	var n int32
	for _, p := range pods {
		if p.Ready {
			n++
		}
	}
	return n
}

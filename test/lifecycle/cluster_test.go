package lifecycle

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ambientmesh/ambient-operator/controllers/ambientmesh/manifests"
)

// fakeCluster plays the parts envtest lacks, against the real API server:
//   - the Deployment controller: status of the control plane Deployment
//     (one sync to observe a new template, the next to report it rolled out);
//   - the DaemonSet controller: one pod per node from the current template,
//     RollingUpdate replacing outdated pods one at a time, OnDelete only
//     recreating what was deleted; DaemonSet status from the pods;
//   - the kubelet: a new pod becomes Ready on the sync after its creation
//     unless its node is "broken" or readiness is held; a pod being deleted
//     is removed (force delete) on the next sync;
//   - the garbage collector: pods whose DaemonSet is gone are deleted.
//
// It records a timeline of what it observed and the ztunnel pods the
// operator deleted, and tracks how many nodes were in transition at once.
type fakeCluster struct {
	c     client.Client
	ns    string
	nodes []string

	mu            sync.Mutex
	broken        map[string]bool // node → its new ztunnel pods never become ready
	holdReady     map[string]bool // DaemonSet name → its new pods do not become ready
	holdGC        bool            // orphaned pods are not collected
	timeline      []string
	seen          map[string]bool
	deletedByOp   map[types.UID]string // ztunnel pod UID → "node version"
	transitioning map[string]bool      // nodes whose ztunnel the operator deleted and that have no ready new pod
	maxTransition int
	syncErr       error
}

func newFakeCluster(c client.Client, ns string, nodes int) *fakeCluster {
	f := &fakeCluster{c: c, ns: ns, broken: map[string]bool{}, seen: map[string]bool{}, holdReady: map[string]bool{},
		deletedByOp: map[types.UID]string{}, transitioning: map[string]bool{}}
	for i := 1; i <= nodes; i++ {
		f.nodes = append(f.nodes, fmt.Sprintf("node-%d", i))
	}
	return f
}

// run syncs every 50ms until ctx ends.
func (f *fakeCluster) run(ctx context.Context) {
	go func() {
		defer GinkgoRecover()
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				err := f.sync(ctx)
				f.mu.Lock()
				if err != nil && ctx.Err() == nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
					f.syncErr = err
				}
				f.mu.Unlock()
			}
		}
	}()
}

func (f *fakeCluster) set(fn func(f *fakeCluster)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// record appends to the timeline once per distinct entry.
func (f *fakeCluster) record(entry string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.seen[entry] {
		f.seen[entry] = true
		f.timeline = append(f.timeline, entry)
	}
}

func (f *fakeCluster) Timeline() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.timeline)
}

func (f *fakeCluster) DeletedByOperator() map[types.UID]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[types.UID]string{}
	for k, v := range f.deletedByOp {
		out[k] = v
	}
	return out
}

func (f *fakeCluster) MaxTransition() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.maxTransition
}

func (f *fakeCluster) Err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.syncErr
}

// sync plays one round of every controller. The control plane comes last
// so that, within a round, what the operator did first is recorded first
// (it deletes the control plane only after the node agents' pods are gone).
func (f *fakeCluster) sync(ctx context.Context) error {
	for _, name := range []string{manifests.CNIName, manifests.ZTunnelName} {
		if err := f.syncDaemonSet(ctx, name); err != nil {
			return err
		}
	}
	return f.syncControlPlane(ctx)
}

func (f *fakeCluster) syncControlPlane(ctx context.Context) error {
	d := &appsv1.Deployment{}
	if err := f.c.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: manifests.ControlPlaneName}, d); err != nil {
		if apierrors.IsNotFound(err) && f.seen["exists:controlplane"] {
			f.record("deleted:controlplane")
		}
		return client.IgnoreNotFound(err)
	}
	f.record("exists:controlplane")
	version := d.Spec.Template.Labels[manifests.LabelVersion]
	replicas := ptr.Deref(d.Spec.Replicas, 1)
	st := d.Status
	if st.ObservedGeneration < d.Generation {
		// First sync of a new template: seen, not rolled out yet.
		st.ObservedGeneration = d.Generation
		st.UpdatedReplicas = 0
	} else {
		st.Replicas, st.UpdatedReplicas, st.ReadyReplicas, st.AvailableReplicas = replicas, replicas, replicas, replicas
		f.record("controlplane:" + version)
	}
	if equality.Semantic.DeepEqual(d.Status, st) {
		return nil
	}
	d.Status = st
	return f.c.Status().Update(ctx, d)
}

func (f *fakeCluster) syncDaemonSet(ctx context.Context, name string) error {
	// Pods first, then the DaemonSet: the operator changes the template
	// before it deletes a pod, so a pod seen deleted here is always
	// replaced from the template that caused the deletion.
	pods := &corev1.PodList{}
	if err := f.c.List(ctx, pods, client.InNamespace(f.ns), client.MatchingLabels{manifests.LabelName: name}); err != nil {
		return err
	}
	ds := &appsv1.DaemonSet{}
	dsErr := f.c.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: name}, ds)
	if dsErr != nil && !apierrors.IsNotFound(dsErr) {
		return dsErr
	}
	dsGone := apierrors.IsNotFound(dsErr)
	if dsGone && f.seen["exists:"+name] {
		f.record("deleted:" + name)
	}
	if dsGone {
		return f.collectOrphans(ctx, name, pods.Items)
	}
	f.record("exists:" + name)
	version := ds.Spec.Template.Labels[manifests.LabelVersion]
	hash := ds.Spec.Template.Annotations[manifests.AnnotationTemplateHash]
	f.record(name + "-template:" + version)

	byNode := map[string]*corev1.Pod{}
	for i := range pods.Items {
		p := &pods.Items[i]
		if !p.DeletionTimestamp.IsZero() {
			if err := f.kubeletRemove(ctx, name, p); err != nil {
				return err
			}
			continue
		}
		byNode[p.Spec.NodeName] = p
	}
	var ready, updated int32
	for _, node := range f.nodes {
		p := byNode[node]
		switch {
		case p == nil:
			if err := f.createPod(ctx, ds, node); err != nil {
				return err
			}
		case !isReady(p):
			if err := f.kubeletStart(ctx, name, p); err != nil {
				return err
			}
		default:
			ready++
			if p.Annotations[manifests.AnnotationTemplateHash] == hash {
				updated++
				f.set(func(f *fakeCluster) { delete(f.transitioning, node) })
			}
		}
	}
	if name == manifests.ZTunnelName {
		f.set(func(f *fakeCluster) { f.maxTransition = max(f.maxTransition, len(f.transitioning)) })
	}
	if ds.Spec.UpdateStrategy.Type == appsv1.RollingUpdateDaemonSetStrategyType && ready == int32(len(f.nodes)) {
		if err := f.rollOnePod(ctx, byNode, hash); err != nil {
			return err
		}
	}
	desired := int32(len(f.nodes))
	if updated == desired && ready == desired {
		f.record(name + ":" + version)
	}
	st := appsv1.DaemonSetStatus{
		ObservedGeneration: ds.Generation, DesiredNumberScheduled: desired, CurrentNumberScheduled: int32(len(byNode)),
		NumberReady: ready, NumberAvailable: ready, UpdatedNumberScheduled: updated, NumberUnavailable: desired - ready,
	}
	if equality.Semantic.DeepEqual(ds.Status, st) {
		return nil
	}
	ds.Status = st
	return f.c.Status().Update(ctx, ds)
}

// kubeletRemove finishes a graceful deletion. A ztunnel pod whose deletion
// the fake cluster did not start was deleted by the operator.
func (f *fakeCluster) kubeletRemove(ctx context.Context, name string, p *corev1.Pod) error {
	if name == manifests.ZTunnelName && p.Labels["test/deleted-by"] == "" {
		f.set(func(f *fakeCluster) {
			if _, ok := f.deletedByOp[p.UID]; !ok {
				f.deletedByOp[p.UID] = p.Spec.NodeName + " " + p.Labels[manifests.LabelVersion]
				f.transitioning[p.Spec.NodeName] = true
				f.timeline = append(f.timeline, "ztunnel-deleted:"+p.Spec.NodeName)
			}
		})
	}
	return client.IgnoreNotFound(f.c.Delete(ctx, p, client.GracePeriodSeconds(0)))
}

func (f *fakeCluster) createPod(ctx context.Context, ds *appsv1.DaemonSet, node string) error {
	t := ds.Spec.Template
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: ds.Name + "-", Namespace: ds.Namespace,
			Labels: t.Labels, Annotations: t.Annotations,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "DaemonSet", Name: ds.Name, UID: ds.UID, Controller: ptr.To(true)}},
		},
		Spec: *t.Spec.DeepCopy(),
	}
	p.Spec.NodeName = node
	return f.c.Create(ctx, p)
}

// kubeletStart marks a pod running and, unless its DaemonSet's pods are
// held or it is a ztunnel on a broken node, Ready.
func (f *fakeCluster) kubeletStart(ctx context.Context, name string, p *corev1.Pod) error {
	f.mu.Lock()
	ok := !f.holdReady[name] && !(name == manifests.ZTunnelName && f.broken[p.Spec.NodeName])
	f.mu.Unlock()
	status := corev1.ConditionFalse
	if ok {
		status = corev1.ConditionTrue
	}
	if p.Status.Phase == corev1.PodRunning && len(p.Status.Conditions) > 0 && p.Status.Conditions[0].Status == status {
		return nil
	}
	p.Status.Phase = corev1.PodRunning
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: status, LastTransitionTime: metav1.Now()}}
	if err := f.c.Status().Update(ctx, p); err != nil {
		return err
	}
	if ok {
		f.record(name + "-ready:" + p.Spec.NodeName + ":" + p.Labels[manifests.LabelVersion])
	}
	return nil
}

// rollOnePod is the DaemonSet controller's RollingUpdate with maxUnavailable 1.
func (f *fakeCluster) rollOnePod(ctx context.Context, byNode map[string]*corev1.Pod, hash string) error {
	for _, node := range f.nodes {
		if p := byNode[node]; p != nil && p.Annotations[manifests.AnnotationTemplateHash] != hash {
			return f.deleteAsController(ctx, p)
		}
	}
	return nil
}

func (f *fakeCluster) collectOrphans(ctx context.Context, name string, pods []corev1.Pod) error {
	f.mu.Lock()
	hold := f.holdGC
	f.mu.Unlock()
	if len(pods) == 0 {
		if f.seen["deleted:"+name] {
			f.record("pods-gone:" + name)
		}
		return nil
	}
	if hold {
		return nil
	}
	for i := range pods {
		if err := f.deleteAsController(ctx, &pods[i]); err != nil {
			return err
		}
	}
	// Deleted with no grace period: they are gone now.
	f.record("pods-gone:" + name)
	return nil
}

// deleteAsController deletes a pod on behalf of a Kubernetes controller,
// marking it so it is not counted as an operator deletion.
func (f *fakeCluster) deleteAsController(ctx context.Context, p *corev1.Pod) error {
	base := p.DeepCopy()
	p.Labels["test/deleted-by"] = "controller"
	if err := f.c.Patch(ctx, p, client.MergeFrom(base)); err != nil {
		return client.IgnoreNotFound(err)
	}
	return client.IgnoreNotFound(f.c.Delete(ctx, p, client.GracePeriodSeconds(0)))
}

func isReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// indexOf is the position of the first timeline entry with the prefix, or -1.
func indexOf(timeline []string, prefix string) int {
	return slices.IndexFunc(timeline, func(e string) bool { return strings.HasPrefix(e, prefix) })
}

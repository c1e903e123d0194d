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
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ambientmesh/ambient-operator/controllers/ambientmesh/manifests"
	"github.com/ambientmesh/ambient-operator/test/testenv/kubestandin"
)

// fakeCluster plays the parts envtest lacks, against the real API server,
// through the shared stand-in (kubestandin): the Deployment and DaemonSet
// controllers, the garbage collector of their pods, and the kubelet. It is
// the stand-in's Runtime: a pod runs nothing, and is Ready at once unless
// it is a ztunnel on a "broken" node or its DaemonSet's readiness is held;
// once Ready it stays so.
//
// It records a timeline of what it observed and the ztunnel pods the
// operator deleted, and tracks how many nodes were in transition at once.
type fakeCluster struct {
	c       client.Client
	ns      string
	standin *kubestandin.StandIn[struct{}]

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
	o := kubestandin.Options{Client: c}
	for i := 1; i <= nodes; i++ {
		o.Nodes = append(o.Nodes, kubestandin.Node{Name: fmt.Sprintf("node-%d", i), Labels: map[string]string{corev1.LabelOSStable: "linux"}})
	}
	f.standin = kubestandin.New[struct{}](o, f)
	return f
}

// start syncs every 50ms until ctx ends.
func (f *fakeCluster) start(ctx context.Context) {
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

func (f *fakeCluster) recorded(entry string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.seen[entry]
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

// sync is one round of every workload. The control plane comes last so
// that, within a round, what the operator did first is recorded first (it
// deletes the control plane only after the node agents' pods are gone).
// Each workload's pods are listed before the workload is read, as the
// stand-in requires.
func (f *fakeCluster) sync(ctx context.Context) error {
	for _, name := range []string{manifests.CNIName, manifests.ZTunnelName} {
		if err := f.syncDaemonSet(ctx, name); err != nil {
			return err
		}
	}
	return f.syncControlPlane(ctx)
}

func (f *fakeCluster) syncDaemonSet(ctx context.Context, name string) error {
	pods, err := f.podsOf(ctx, name)
	if err != nil {
		return err
	}
	ds := &appsv1.DaemonSet{}
	if err := f.c.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: name}, ds); err != nil {
		return f.workloadGone(ctx, name, pods, err)
	}
	f.record("exists:" + name)
	version := ds.Spec.Template.Labels[manifests.LabelVersion]
	f.record(name + "-template:" + version)
	st, err := f.standin.SyncDaemonSet(ctx, ds, pods)
	if err != nil {
		return err
	}
	if st.UpdatedNumberScheduled == st.DesiredNumberScheduled && st.NumberReady == st.DesiredNumberScheduled {
		f.record(name + ":" + version)
	}
	return f.collect(ctx, kubestandin.Orphans(pods, ds))
}

func (f *fakeCluster) syncControlPlane(ctx context.Context) error {
	pods, err := f.podsOf(ctx, manifests.ControlPlaneName)
	if err != nil {
		return err
	}
	d := &appsv1.Deployment{}
	if err := f.c.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: manifests.ControlPlaneName}, d); err != nil {
		return f.workloadGone(ctx, "controlplane", pods, err)
	}
	f.record("exists:controlplane")
	st, err := f.standin.SyncDeployment(ctx, d, pods)
	if err != nil {
		return err
	}
	if replicas := ptr.Deref(d.Spec.Replicas, 1); st.Replicas == replicas && st.UpdatedReplicas == replicas && st.ReadyReplicas == replicas {
		f.record("controlplane:" + d.Spec.Template.Labels[manifests.LabelVersion])
	}
	return f.collect(ctx, kubestandin.Orphans(pods, d))
}

func (f *fakeCluster) podsOf(ctx context.Context, name string) ([]corev1.Pod, error) {
	pods := &corev1.PodList{}
	err := f.c.List(ctx, pods, client.InNamespace(f.ns), client.MatchingLabels{manifests.LabelName: name})
	return pods.Items, err
}

// workloadGone records a deleted workload (entry names it in the
// timeline) and, as the garbage collector, removes its pods.
func (f *fakeCluster) workloadGone(ctx context.Context, entry string, pods []corev1.Pod, getErr error) error {
	if !apierrors.IsNotFound(getErr) {
		return getErr
	}
	if f.recorded("exists:" + entry) {
		f.record("deleted:" + entry)
	}
	if orphans := kubestandin.Orphans(pods); len(orphans) > 0 {
		if f.holdingGC() {
			return nil
		}
		if err := f.standin.Remove(ctx, orphans); err != nil {
			return err
		}
	}
	if f.recorded("deleted:" + entry) {
		f.record("pods-gone:" + entry)
	}
	return nil
}

// collect removes orphaned pods, unless the garbage collector is held.
func (f *fakeCluster) collect(ctx context.Context, orphans []corev1.Pod) error {
	if len(orphans) == 0 || f.holdingGC() {
		return nil
	}
	return f.standin.Remove(ctx, orphans)
}

func (f *fakeCluster) holdingGC() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.holdGC
}

// Sandbox: a pod here has no network.
func (f *fakeCluster) Sandbox(context.Context, *kubestandin.Pod[struct{}]) (string, string, error) {
	return "", "", nil
}

// Run makes a pod ready (it runs nothing) unless its DaemonSet's pods are
// held or it is a ztunnel on a broken node. A ztunnel becoming ready ends
// its node's transition.
func (f *fakeCluster) Run(_ context.Context, p *kubestandin.Pod[struct{}]) (bool, error) {
	if p.Ready {
		return true, nil
	}
	node := p.Object.Spec.NodeName
	ztunnel := p.Workload == manifests.ZTunnelName
	f.mu.Lock()
	ready := !f.holdReady[p.Workload] && !(ztunnel && f.broken[node])
	if ready && ztunnel {
		delete(f.transitioning, node)
	}
	f.mu.Unlock()
	if ready {
		f.record(p.Workload + "-ready:" + node + ":" + p.Object.Labels[manifests.LabelVersion])
	}
	return ready, nil
}

// Stop records the ztunnel pods the operator deleted: the graceful
// deletions the stand-in did not make (the tests delete with no grace
// period, so theirs vanish).
func (f *fakeCluster) Stop(_ context.Context, p *kubestandin.Pod[struct{}], why kubestandin.StopReason, _ time.Duration) error {
	if why != kubestandin.Deleted || p.Workload != manifests.ZTunnelName {
		return nil
	}
	node := p.Object.Spec.NodeName
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.deletedByOp[p.Object.UID]; !ok {
		f.deletedByOp[p.Object.UID] = node + " " + p.Object.Labels[manifests.LabelVersion]
		f.transitioning[node] = true
		f.maxTransition = max(f.maxTransition, len(f.transitioning))
		f.timeline = append(f.timeline, "ztunnel-deleted:"+node)
	}
	return nil
}

// indexOf is the position of the first timeline entry with the prefix, or -1.
func indexOf(timeline []string, prefix string) int {
	return slices.IndexFunc(timeline, func(e string) bool { return strings.HasPrefix(e, prefix) })
}

package kubestandin

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
)

// The suites that use the stand-in (test/lifecycle, the local mesh) cover
// it against a real API server; these cover the rollouts they do not
// exercise, on the fake client.

// events is a Runtime whose pods are ready at once; it logs what it did.
type events struct{ log []string }

func (e *events) Sandbox(_ context.Context, p *Pod[struct{}]) (string, string, error) {
	e.log = append(e.log, "start "+p.Object.Spec.NodeName+" "+p.hash())
	return "", "", nil
}

func (e *events) Run(context.Context, *Pod[struct{}]) (bool, error) { return true, nil }

func (e *events) Stop(_ context.Context, p *Pod[struct{}], why StopReason, _ time.Duration) error {
	e.log = append(e.log, fmt.Sprintf("stop %s %s %d", p.Object.Spec.NodeName, p.hash(), why))
	return nil
}

func newStandIn(t *testing.T, objs ...client.Object) (*StandIn[struct{}], client.Client, *events) {
	t.Helper()
	uids := 0
	c := fake.NewClientBuilder().WithObjects(objs...).
		WithStatusSubresource(&corev1.Pod{}, &appsv1.Deployment{}, &appsv1.DaemonSet{}).
		WithInterceptorFuncs(interceptor.Funcs{Create: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.CreateOption) error {
			uids++
			o.SetUID(types.UID(fmt.Sprint("uid-", uids)))
			return c.Create(ctx, o, opts...)
		}}).Build()
	rt := &events{}
	nodes := []Node{{Name: "n1", Labels: map[string]string{"os": "linux"}}, {Name: "n2", Labels: map[string]string{"os": "linux"}}}
	return New[struct{}](Options{Client: c, Nodes: nodes}, rt), c, rt
}

func template(version string) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "a", "version": version}},
		Spec:       corev1.PodSpec{NodeSelector: map[string]string{"os": "linux"}, Containers: []corev1.Container{{Name: "c", Image: "i"}}},
	}
}

// syncOnce runs the stand-in once and returns the pods per node, as
// "node:version" sorted.
func syncOnce(t *testing.T, s *StandIn[struct{}], c client.Client) []string {
	t.Helper()
	if err := s.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	pods := &corev1.PodList{}
	if err := c.List(context.Background(), pods); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range pods.Items {
		out = append(out, p.Spec.NodeName+":"+p.Labels["version"])
	}
	slices.Sort(out)
	return out
}

func update[T client.Object](t *testing.T, c client.Client, obj T, change func(T)) {
	t.Helper()
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(obj), obj); err != nil {
		t.Fatal(err)
	}
	change(obj)
	if err := c.Update(context.Background(), obj); err != nil {
		t.Fatal(err)
	}
}

func expectPods(t *testing.T, step string, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s: pods %v, want %v", step, got, want)
	}
}

func daemonSet(strategy appsv1.DaemonSetUpdateStrategy) *appsv1.DaemonSet {
	return &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "ds", Namespace: "ns", UID: "ds-uid"},
		Spec: appsv1.DaemonSetSpec{Template: template("1"), UpdateStrategy: strategy}}
}

func TestDaemonSetSurgeStartsTheNewPodBesideTheOldOneNodeByNode(t *testing.T) {
	ds := daemonSet(appsv1.DaemonSetUpdateStrategy{Type: appsv1.RollingUpdateDaemonSetStrategyType,
		RollingUpdate: &appsv1.RollingUpdateDaemonSet{MaxSurge: ptr.To(intstr.FromInt32(1)), MaxUnavailable: ptr.To(intstr.FromInt32(0))}})
	s, c, _ := newStandIn(t, ds)
	expectPods(t, "install", syncOnce(t, s, c), "n1:1", "n2:1")
	update(t, c, ds, func(ds *appsv1.DaemonSet) { ds.Spec.Template = template("2") })
	expectPods(t, "surge on n1", syncOnce(t, s, c), "n1:1", "n1:2", "n2:1")
	expectPods(t, "n1 replaced, surge on n2", syncOnce(t, s, c), "n1:2", "n2:1", "n2:2")
	expectPods(t, "done", syncOnce(t, s, c), "n1:2", "n2:2")
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(ds), ds); err != nil {
		t.Fatal(err)
	}
	if st := ds.Status; st.UpdatedNumberScheduled != 2 || st.NumberReady != 2 || st.DesiredNumberScheduled != 2 {
		t.Errorf("status %+v", st)
	}
}

func TestDaemonSetMaxUnavailableReplacesTheOldPodFirst(t *testing.T) {
	s, c, rt := newStandIn(t, daemonSet(appsv1.DaemonSetUpdateStrategy{Type: appsv1.RollingUpdateDaemonSetStrategyType}))
	expectPods(t, "install", syncOnce(t, s, c), "n1:1", "n2:1")
	update(t, c, &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "ds", Namespace: "ns"}},
		func(ds *appsv1.DaemonSet) { ds.Spec.Template = template("2") })
	rt.log = nil
	expectPods(t, "n1 replaced", syncOnce(t, s, c), "n1:2", "n2:1")
	if len(rt.log) != 2 || rt.log[0][:8] != "stop n1 " || rt.log[1][:9] != "start n1 " {
		t.Errorf("want the old pod stopped (Removed) before the new one starts, got %q", rt.log)
	}
	expectPods(t, "n2 replaced", syncOnce(t, s, c), "n1:2", "n2:2")
}

func TestOnDeleteReplacesOnlyWhatVanished(t *testing.T) {
	s, c, rt := newStandIn(t, daemonSet(appsv1.DaemonSetUpdateStrategy{Type: appsv1.OnDeleteDaemonSetStrategyType}))
	expectPods(t, "install", syncOnce(t, s, c), "n1:1", "n2:1")
	update(t, c, &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "ds", Namespace: "ns"}},
		func(ds *appsv1.DaemonSet) { ds.Spec.Template = template("2") })
	expectPods(t, "template changed", syncOnce(t, s, c), "n1:1", "n2:1")
	for _, p := range s.Pods() {
		if p.Object.Spec.NodeName == "n2" {
			if err := c.Delete(context.Background(), p.Object, client.GracePeriodSeconds(0)); err != nil {
				t.Fatal(err)
			}
		}
	}
	rt.log = nil
	expectPods(t, "n2 deleted", syncOnce(t, s, c), "n1:1", "n2:2")
	if len(rt.log) == 0 || rt.log[0][len(rt.log[0])-1:] != fmt.Sprint(int(Vanished)) {
		t.Errorf("want the deleted pod stopped as Vanished first, got %q", rt.log)
	}
}

func TestDeploymentRolloutKeepsOldPodsUntilTheNewOnesAreReady(t *testing.T) {
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "d", Namespace: "ns", UID: "d-uid"},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To(int32(2)), Template: template("1")}}
	s, c, _ := newStandIn(t, d)
	expectPods(t, "install: one replica per node", syncOnce(t, s, c), "n1:1", "n2:1")
	update(t, c, d, func(d *appsv1.Deployment) { d.Spec.Template = template("2") })
	expectPods(t, "new replicas beside the old", syncOnce(t, s, c), "n1:1", "n1:2", "n2:1", "n2:2")
	expectPods(t, "old ones gone once the new are ready", syncOnce(t, s, c), "n1:2", "n2:2")
	update(t, c, d, func(d *appsv1.Deployment) { d.Spec.Replicas = ptr.To(int32(1)) })
	if got := syncOnce(t, s, c); len(got) != 1 {
		t.Fatalf("scaled to 1: pods %v", got)
	}
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(d), d); err != nil {
		t.Fatal(err)
	}
	if st := d.Status; st.Replicas != 1 || st.UpdatedReplicas != 1 || st.ReadyReplicas != 1 {
		t.Errorf("status %+v", st)
	}
}

func TestHostNetworkDeploymentReplacesTheOldPodFirst(t *testing.T) {
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "d", Namespace: "ns", UID: "d-uid"},
		Spec: appsv1.DeploymentSpec{Template: template("1")}}
	s, c, rt := newStandIn(t, d)
	s.o.HostNetworkOn = func(*appsv1.Deployment) string { return "cp" }
	expectPods(t, "install", syncOnce(t, s, c), "cp:1")
	update(t, c, d, func(d *appsv1.Deployment) { d.Spec.Template = template("2") })
	rt.log = nil
	expectPods(t, "replaced in one pass", syncOnce(t, s, c), "cp:2")
	if len(rt.log) != 2 || rt.log[0][:8] != "stop cp " {
		t.Errorf("want the old pod stopped before the new one starts, got %q", rt.log)
	}
}

func TestSyncRemovesThePodsOfDeletedWorkloads(t *testing.T) {
	s, c, _ := newStandIn(t, daemonSet(appsv1.DaemonSetUpdateStrategy{Type: appsv1.OnDeleteDaemonSetStrategyType}))
	expectPods(t, "install", syncOnce(t, s, c), "n1:1", "n2:1")
	if err := c.Delete(context.Background(), &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "ds", Namespace: "ns"}}); err != nil {
		t.Fatal(err)
	}
	expectPods(t, "collected", syncOnce(t, s, c))
	if len(s.Pods()) != 0 {
		t.Errorf("still tracked: %d", len(s.Pods()))
	}
}

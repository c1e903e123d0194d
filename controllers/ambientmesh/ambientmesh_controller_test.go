package ambientmesh

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	cmv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/event"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controllers/ambientmesh/manifests"
	"github.com/ambientmesh/ambient-operator/internal/meshscheme"
)

// These unit tests cover error paths with a fake client and interceptors;
// the behaviour on a real API server is tested in test/lifecycle.

var now = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

func installedMesh() *meshv1alpha1.AmbientMesh {
	m := &meshv1alpha1.AmbientMesh{}
	m.Name = meshv1alpha1.MeshName
	m.UID = "mesh-uid"
	m.Finalizers = []string{Finalizer}
	m.Spec.Version = "0.1.0"
	return m
}

func newReconciler(t *testing.T, funcs interceptor.Funcs, objs ...client.Object) (*Reconciler, client.Client) {
	t.Helper()
	c := fake.NewClientBuilder().WithScheme(meshscheme.New()).
		WithObjects(objs...).
		WithStatusSubresource(&meshv1alpha1.AmbientMesh{}).
		WithInterceptorFuncs(funcs).
		Build()
	return &Reconciler{Client: c, APIReader: c, Recorder: events.NewFakeRecorder(100), Clock: clocktesting.NewFakePassiveClock(now)}, c
}

func reconcileMesh(r *Reconciler) (ctrl.Result, error) {
	return r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKey{Name: meshv1alpha1.MeshName}})
}

func readyCond(t *testing.T, c client.Client) *metav1.Condition {
	t.Helper()
	m := &meshv1alpha1.AmbientMesh{}
	if err := c.Get(context.Background(), client.ObjectKey{Name: meshv1alpha1.MeshName}, m); err != nil {
		t.Fatal(err)
	}
	cond := meta.FindStatusCondition(m.Status.Conditions, meshv1alpha1.MeshConditionReady)
	if cond == nil {
		t.Fatal("no Ready condition written")
	}
	return cond
}

func TestFirstPassOnlyAddsTheFinalizer(t *testing.T) {
	m := installedMesh()
	m.Finalizers = nil
	r, c := newReconciler(t, interceptor.Funcs{}, m)
	if _, err := reconcileMesh(r); err != nil {
		t.Fatal(err)
	}
	got := &meshv1alpha1.AmbientMesh{}
	_ = c.Get(context.Background(), client.ObjectKey{Name: meshv1alpha1.MeshName}, got)
	if !slices.Contains(got.Finalizers, Finalizer) {
		t.Fatalf("finalizers = %v", got.Finalizers)
	}
}

func TestApplyFailureIsReportedInStatus(t *testing.T) {
	forbidden := apierrors.NewForbidden(schema.GroupResource{Resource: "configmaps"}, "ambientmesh-config", errors.New("RBAC says no"))
	r, c := newReconciler(t, interceptor.Funcs{
		Apply: func(context.Context, client.WithWatch, runtime.ApplyConfiguration, ...client.ApplyOption) error {
			return forbidden
		},
	}, installedMesh())
	_, err := reconcileMesh(r)
	if err == nil || !strings.Contains(err.Error(), "apply ConfigMap ambient-system/ambientmesh-config") {
		t.Fatalf("Reconcile error = %v, want the failing object named", err)
	}
	cond := readyCond(t, c)
	if cond.Reason != meshv1alpha1.ReasonApplyFailed || !strings.Contains(cond.Message, "RBAC says no") {
		t.Fatalf("Ready = %s: %s", cond.Reason, cond.Message)
	}
}

func TestReadFailureStillWritesStatus(t *testing.T) {
	r, c := newReconciler(t, interceptor.Funcs{
		List: func(ctx context.Context, cl client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			if _, ok := list.(*corev1.PodList); ok {
				return errors.New("etcd timeout")
			}
			return cl.List(ctx, list, opts...)
		},
	}, installedMesh())
	if _, err := reconcileMesh(r); err == nil || !strings.Contains(err.Error(), "etcd timeout") {
		t.Fatalf("Reconcile error = %v", err)
	}
	if cond := readyCond(t, c); cond.Reason != meshv1alpha1.ReasonApplyFailed || cond.Message != "etcd timeout" {
		t.Fatalf("Ready = %s: %s", cond.Reason, cond.Message)
	}
}

func TestStatusPatchFailureIsReturned(t *testing.T) {
	r, _ := newReconciler(t, interceptor.Funcs{
		Apply: func(context.Context, client.WithWatch, runtime.ApplyConfiguration, ...client.ApplyOption) error {
			return nil
		},
		SubResourcePatch: func(context.Context, client.Client, string, client.Object, client.Patch, ...client.SubResourcePatchOption) error {
			return errors.New("status write refused")
		},
	}, installedMesh())
	if _, err := reconcileMesh(r); err == nil || !strings.Contains(err.Error(), "status write refused") {
		t.Fatalf("Reconcile error = %v, want the status error joined", err)
	}
}

// A pass that changes nothing sends no status patch, even later (the
// condition times are kept); a pass that changes the status sends one.
func TestStatusIsPatchedOnlyWhenItChanges(t *testing.T) {
	statusPatches := 0
	r, c := newReconciler(t, interceptor.Funcs{
		Apply: func(context.Context, client.WithWatch, runtime.ApplyConfiguration, ...client.ApplyOption) error {
			return nil
		},
		SubResourcePatch: func(ctx context.Context, cl client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
			statusPatches++
			return cl.SubResource(sub).Patch(ctx, obj, patch, opts...)
		},
	}, installedMesh())
	reconcileAndCount := func(step string, want int) {
		t.Helper()
		statusPatches = 0
		if _, err := reconcileMesh(r); err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		if statusPatches != want {
			t.Errorf("%s: %d status patches, want %d", step, statusPatches, want)
		}
	}

	reconcileAndCount("first pass", 1)
	r.Clock = clocktesting.NewFakePassiveClock(now.Add(time.Minute))
	reconcileAndCount("a minute later, nothing changed", 0)

	issuer := &cmv1.Issuer{ObjectMeta: metav1.ObjectMeta{Namespace: "ambient-system", Name: manifests.CAIssuerName}}
	issuer.Status.Conditions = []cmv1.IssuerCondition{{Type: cmv1.IssuerConditionReady, Status: cmmeta.ConditionTrue}}
	if err := c.Create(context.Background(), issuer); err != nil {
		t.Fatal(err)
	}
	reconcileAndCount("the CA issuer became ready", 1)
	m := &meshv1alpha1.AmbientMesh{}
	if err := c.Get(context.Background(), client.ObjectKey{Name: meshv1alpha1.MeshName}, m); err != nil {
		t.Fatal(err)
	}
	if !meta.IsStatusConditionTrue(m.Status.Conditions, meshv1alpha1.MeshConditionIdentityReady) {
		t.Errorf("IdentityReady is not True after the issuer became ready: %+v", m.Status.Conditions)
	}
}

// A rollout in progress: the control plane and CNI agent run 0.2.0, two
// nodes still run the old ztunnel. Deleting the next pod fails.
func TestPodDeleteFailureNamesTheNode(t *testing.T) {
	m := installedMesh()
	m.Spec.Version = "0.2.0"
	ns := "ambient-system"
	objs := []client.Object{m, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}}
	rendered, err := manifests.Render(manifests.Input{Mesh: m, Versions: manifests.Uniform("0.2.0")})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range rendered {
		switch w := o.(type) {
		case *appsv1.Deployment:
			w.Status = appsv1.DeploymentStatus{Replicas: 1, ReadyReplicas: 1, UpdatedReplicas: 1, AvailableReplicas: 1}
			objs = append(objs, w)
		case *appsv1.DaemonSet:
			w.Status = appsv1.DaemonSetStatus{DesiredNumberScheduled: 2, NumberReady: 2, UpdatedNumberScheduled: 2}
			objs = append(objs, w)
		}
	}
	for _, node := range []string{"node-a", "node-b"} {
		objs = append(objs, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{
				Name: "ztunnel-" + node, Namespace: ns, UID: types.UID("uid-" + node),
				Labels: map[string]string{manifests.LabelManagedBy: manifests.ManagedByValue, manifests.LabelMesh: "default",
					manifests.LabelName: manifests.ZTunnelName, manifests.LabelVersion: "0.1.0"},
				Annotations: map[string]string{manifests.AnnotationTemplateHash: "old"},
			},
			Spec:   corev1.PodSpec{NodeName: node},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
		})
	}
	r, c := newReconciler(t, interceptor.Funcs{
		Apply: func(context.Context, client.WithWatch, runtime.ApplyConfiguration, ...client.ApplyOption) error {
			return nil
		},
		Delete: func(ctx context.Context, cl client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			if _, ok := obj.(*corev1.Pod); ok {
				return errors.New("admission webhook denied")
			}
			return cl.Delete(ctx, obj, opts...)
		},
	}, objs...)
	_, err = reconcileMesh(r)
	if err == nil || !strings.Contains(err.Error(), "delete ztunnel pod ztunnel-node-a on node node-a") {
		t.Fatalf("Reconcile error = %v, want node-a named", err)
	}
	if cond := readyCond(t, c); cond.Reason != meshv1alpha1.ReasonApplyFailed {
		t.Fatalf("Ready = %s: %s", cond.Reason, cond.Message)
	}
}

func TestUninstallWithNamespaceGoneFinishes(t *testing.T) {
	m := installedMesh()
	m.DeletionTimestamp = ptr.To(metav1.NewTime(now.Add(-time.Second)))
	r, c := newReconciler(t, interceptor.Funcs{}, m)
	if _, err := reconcileMesh(r); err != nil {
		t.Fatal(err)
	}
	err := c.Get(context.Background(), client.ObjectKey{Name: meshv1alpha1.MeshName}, &meshv1alpha1.AmbientMesh{})
	if !apierrors.IsNotFound(err) {
		t.Fatalf("mesh still there after uninstall (err %v): the finalizer was not removed", err)
	}
}

func TestUninstallWaitsForCNIPodsThenGivesUp(t *testing.T) {
	m := installedMesh()
	m.DeletionTimestamp = ptr.To(metav1.NewTime(now.Add(-time.Second)))
	cniPod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "cni-x", Namespace: "ambient-system",
		Labels: map[string]string{manifests.LabelManagedBy: manifests.ManagedByValue, manifests.LabelMesh: "default", manifests.LabelName: manifests.CNIName}}}
	r, c := newReconciler(t, interceptor.Funcs{}, m, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ambient-system"}}, cniPod)
	res, err := reconcileMesh(r)
	if err != nil || res.RequeueAfter == 0 {
		t.Fatalf("result %+v, err %v: want a wait", res, err)
	}
	if cond := readyCond(t, c); cond.Reason != meshv1alpha1.ReasonDeleting || !strings.Contains(cond.Message, "1 CNI agent pod(s)") {
		t.Fatalf("Ready = %s: %s", cond.Reason, cond.Message)
	}
	// The node is down and the pod never ends: after the timeout the uninstall goes on.
	r.Clock = clocktesting.NewFakePassiveClock(now.Add(podTerminationTimeout(m) + time.Minute))
	if _, err := reconcileMesh(r); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(context.Background(), client.ObjectKey{Name: meshv1alpha1.MeshName}, &meshv1alpha1.AmbientMesh{}); !apierrors.IsNotFound(err) {
		t.Fatalf("mesh still there after the timeout: %v", err)
	}
}

func TestWaypointVersionEvents(t *testing.T) {
	proxy := func(version string) *appsv1.Deployment {
		d := &appsv1.Deployment{}
		d.Labels = map[string]string{meshv1alpha1.LabelWaypoint: "wp"}
		d.Spec.Template.Labels = map[string]string{manifests.LabelVersion: version}
		return d
	}
	scaled := proxy("0.1.0")
	scaled.Status.ReadyReplicas = 3
	notAProxy := &appsv1.Deployment{}
	tests := []struct {
		name     string
		old, cur *appsv1.Deployment
		want     bool
	}{
		{"a proxy's version changes", proxy("0.1.0"), proxy("0.2.0"), true},
		{"a proxy scales", proxy("0.1.0"), scaled, false},
		{"another Deployment changes", notAProxy, notAProxy.DeepCopy(), false},
	}
	for _, tt := range tests {
		if got := waypointVersionEvents.Update(event.UpdateEvent{ObjectOld: tt.old, ObjectNew: tt.cur}); got != tt.want {
			t.Errorf("%s: passes = %v, want %v", tt.name, got, tt.want)
		}
	}
	if !waypointVersionEvents.Create(event.CreateEvent{Object: proxy("0.1.0")}) || waypointVersionEvents.Create(event.CreateEvent{Object: notAProxy}) {
		t.Error("creation passes for proxies only")
	}
}

package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/dataplane/cni/wire"
)

// PodReconciler keeps each pod on this node captured exactly when Decide
// says so. It sees only this node's pods (the cache is filtered by
// spec.nodeName); namespace label changes re-queue the namespace's pods.
type PodReconciler struct {
	client.Client
	Enroller *Enroller
	Finder   *NetnsFinder
	Recorder events.EventRecorder
	// StateFile is where the enrollment state for the plugin is written.
	StateFile string
	// Resync re-checks an enrolled pod's rules this often (drift repair).
	Resync time.Duration

	stateMu   sync.Mutex
	lastState []byte
}

// Reconcile: fetch → decide → capture or release → annotate.
func (r *PodReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	defer r.writeState(ctx)
	pod := &corev1.Pod{}
	if err := r.Get(ctx, req.NamespacedName, pod); err != nil {
		if !apierrors.IsNotFound(err) {
			return ctrl.Result{}, err
		}
		return ctrl.Result{}, r.release(ctx, nil, req.Namespace, req.Name)
	}
	ns := &corev1.Namespace{}
	if err := r.Get(ctx, types.NamespacedName{Name: pod.Namespace}, ns); err != nil {
		if !apierrors.IsNotFound(err) {
			return ctrl.Result{}, err
		}
		ns = nil
	}
	if d := Decide(ns, pod); !d.Enroll {
		return ctrl.Result{}, r.release(ctx, pod, pod.Namespace, pod.Name)
	}
	return r.capture(ctx, pod)
}

func (r *PodReconciler) capture(ctx context.Context, pod *corev1.Pod) (ctrl.Result, error) {
	p := podFromObject(pod)
	if len(p.IPs) == 0 {
		return ctrl.Result{}, nil // not running yet: CNI ADD captures it, or the IP update re-queues it
	}
	if known, ok := r.Enroller.Get(p.UID); ok {
		p.NetnsPath = known.NetnsPath
	} else {
		path, err := r.Finder.Find(p.IPs)
		if err != nil {
			r.Enroller.Metrics.Failures.WithLabelValues("netns").Inc()
			r.Recorder.Eventf(pod, nil, corev1.EventTypeWarning, "NetnsNotFound", "Capture", "cannot find the pod's network namespace: %v", err)
			return ctrl.Result{RequeueAfter: 5 * time.Second}, nil
		}
		p.NetnsPath = path
	}
	if err := r.Enroller.Enroll(p, false); err != nil {
		r.Recorder.Eventf(pod, nil, corev1.EventTypeWarning, "CaptureFailed", "Capture", "cannot capture the pod's traffic: %v", err)
		return ctrl.Result{}, err
	}
	if err := r.annotate(ctx, pod, true); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: r.Resync}, nil
}

// release un-enrolls every capture of namespace/name (pod may be nil when
// the object is gone) and drops the annotation.
func (r *PodReconciler) release(ctx context.Context, pod *corev1.Pod, namespace, name string) error {
	for _, uid := range r.Enroller.Lookup(namespace, name) {
		if err := r.Enroller.Unenroll(uid); err != nil {
			if pod != nil {
				r.Recorder.Eventf(pod, nil, corev1.EventTypeWarning, "ReleaseFailed", "Release", "cannot release the pod from the mesh: %v", err)
			}
			return err
		}
		log.FromContext(ctx).Info("pod released from the mesh", "uid", uid)
	}
	if pod == nil {
		return nil
	}
	return r.annotate(ctx, pod, false)
}

// annotate sets or clears ambientmesh.dev/status with one merge patch.
func (r *PodReconciler) annotate(ctx context.Context, pod *corev1.Pod, enrolled bool) error {
	_, has := pod.Annotations[meshv1.AnnotationStatus]
	if has == enrolled && (!enrolled || pod.Annotations[meshv1.AnnotationStatus] == meshv1.StatusEnrolled) {
		return nil
	}
	var value any // null deletes the key in a merge patch
	if enrolled {
		value = meshv1.StatusEnrolled
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{meshv1.AnnotationStatus: value}}})
	if err := r.Patch(ctx, pod, client.RawPatch(types.MergePatchType, patch)); err != nil && !apierrors.IsNotFound(err) {
		r.Enroller.Metrics.Failures.WithLabelValues("annotate").Inc()
		return fmt.Errorf("annotating pod: %w", err)
	}
	return nil
}

// writeState records, for the plugin's fallback, which namespaces are
// labeled and which pods on this node decide for themselves.
func (r *PodReconciler) writeState(ctx context.Context) {
	state, err := BuildState(ctx, r.Client)
	if err != nil {
		log.FromContext(ctx).Error(err, "building enrollment state")
		return
	}
	data, _ := json.Marshal(state)
	r.stateMu.Lock()
	defer r.stateMu.Unlock()
	if bytes.Equal(data, r.lastState) {
		return
	}
	if err := wire.WriteState(r.StateFile, state); err != nil {
		log.FromContext(ctx).Error(err, "writing enrollment state", "file", r.StateFile)
		return
	}
	r.lastState = data
}

// BuildState derives the plugin's enrollment state from the cache.
func BuildState(ctx context.Context, c client.Reader) (*wire.EnrollmentState, error) {
	var nsList corev1.NamespaceList
	if err := c.List(ctx, &nsList, client.MatchingLabels{meshv1.LabelDataplaneMode: meshv1.DataplaneModeAmbient}); err != nil {
		return nil, err
	}
	var pods corev1.PodList
	if err := c.List(ctx, &pods, client.HasLabels{meshv1.LabelDataplaneMode}); err != nil {
		return nil, err
	}
	s := &wire.EnrollmentState{Namespaces: []string{}, Pods: map[string]bool{}}
	for _, ns := range nsList.Items {
		s.Namespaces = append(s.Namespaces, ns.Name)
	}
	for _, p := range pods.Items {
		switch p.Labels[meshv1.LabelDataplaneMode] {
		case meshv1.DataplaneModeAmbient:
			s.Pods[p.Namespace+"/"+p.Name] = true
		case meshv1.DataplaneModeNone:
			s.Pods[p.Namespace+"/"+p.Name] = false
		}
	}
	return s, nil
}

// podsOfNamespace maps a namespace event to its pods on this node.
func (r *PodReconciler) podsOfNamespace(ctx context.Context, obj client.Object) []reconcile.Request {
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.InNamespace(obj.GetName())); err != nil {
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(pods.Items))
	for _, p := range pods.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&p)})
	}
	return reqs
}

// SetupWithManager registers the controller.
func (r *PodReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("cni-pod").
		For(&corev1.Pod{}).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(r.podsOfNamespace)).
		// One agent per process in production; tests run several in turn.
		WithOptions(controller.Options{SkipNameValidation: ptr.To(true)}).
		Complete(r)
}

// Rebuild enrolls, from the cache, every pod that should be captured, before
// the first connection to ztunnel: the snapshot sent on connect must name
// every pod, or ztunnel would drop the ones missing. Rules already in place
// are left untouched (Install reconciles).
func (r *PodReconciler) Rebuild(ctx context.Context) {
	var pods corev1.PodList
	if err := r.List(ctx, &pods); err != nil {
		log.FromContext(ctx).Error(err, "listing pods for the startup rebuild")
		return
	}
	for i := range pods.Items {
		if _, err := r.Reconcile(ctx, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&pods.Items[i])}); err != nil {
			log.FromContext(ctx).Error(err, "startup rebuild", "pod", client.ObjectKeyFromObject(&pods.Items[i]))
		}
	}
}

// Package kubestandin plays, against a real API server, what envtest lacks
// for Deployments and DaemonSets: kube-controller-manager's workload
// controllers (pods from the current template, placed on nodes, rolling
// updates, workload status) and its garbage collector for their pods, and
// the kubelet's pod lifecycle (sandbox, start, readiness, pod status,
// finishing graceful deletions). What running a pod's containers means is
// a Runtime's: nothing at all in the lifecycle suite, the component binary
// in a network namespace in the local mesh.
package kubestandin

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Workload kinds, as in a pod's controller reference.
const (
	KindDeployment = "Deployment"
	KindDaemonSet  = "DaemonSet"
)

// Node is a node pods are placed on.
type Node struct {
	Name string
	// Labels are matched against pod templates' nodeSelector.
	Labels map[string]string
}

// StopReason says why a pod's containers are stopped.
type StopReason int

const (
	// Deleted: someone else (the operator, a test) deleted the pod through
	// the API; the stand-in finishes the graceful deletion.
	Deleted StopReason = iota
	// Removed: the stand-in removed it, as a workload controller or the
	// garbage collector does (rollout, scale-down, workload gone).
	Removed
	// Vanished: the object is gone without a graceful deletion (deleted
	// with no grace period); only what the runtime holds is left to free.
	Vanished
)

// Runtime runs pods' containers: the kubelet's container runtime part.
type Runtime[S any] interface {
	// Sandbox gives a new pod its network before its containers start and
	// returns the pod's IP and its node's ("" for none). An error is
	// retried on the next sync.
	Sandbox(ctx context.Context, p *Pod[S]) (podIP, hostIP string, err error)
	// Run is called on every sync of a pod that is not being deleted: it
	// starts the containers when they do not run (a new pod, an exited
	// container), and reports whether the pod is ready.
	Run(ctx context.Context, p *Pod[S]) (ready bool, err error)
	// Stop stops the pod's containers, waiting up to grace for them to
	// exit, and frees its sandbox. On an error the pod's object is kept
	// and Stop is called again on the next sync (except for Vanished).
	Stop(ctx context.Context, p *Pod[S], why StopReason, grace time.Duration) error
}

// Pod is a pod of a Deployment or DaemonSet that the stand-in runs.
type Pod[S any] struct {
	// Object is the Pod as last read or written.
	Object *corev1.Pod
	// Kind and Workload name the Deployment or DaemonSet controlling it.
	Kind, Workload string
	// IP and HostIP are the addresses its sandbox got.
	IP, HostIP string
	// Ready is the readiness last written to its status. A runtime that
	// restarts a container clears it: the probe starts over.
	Ready bool
	// State is the runtime's own (its process, its network namespace).
	State S

	owner     types.UID
	sandboxed bool
	removed   bool // the stand-in deleted it: its Stop reason stays Removed
}

// hash is the template hash the pod was made from.
func (p *Pod[S]) hash() string { return p.Object.Labels[hashLabel(p.Kind)] }

// Options configure a StandIn.
type Options struct {
	Client client.Client
	// Nodes run the DaemonSets' pods, one on each node the template's
	// nodeSelector admits; Deployments' pods are spread over the same.
	Nodes []Node
	// Namespace limits Sync to one namespace ("": every namespace).
	Namespace string
	// Selects picks the workloads Sync runs (nil: every one).
	Selects func(client.Object) bool
	// HostNetworkOn, when it returns a node name, puts all of a
	// Deployment's pods on that node, sharing its network: as two such pods
	// would contend for the same ports, an old pod is then removed before
	// its replacement starts, whatever the rolling update asks.
	HostNetworkOn func(*appsv1.Deployment) string
}

// StandIn keeps the pods of Deployments and DaemonSets running. Its Sync
// methods are called from one goroutine; Pods may be called from any.
type StandIn[S any] struct {
	o  Options
	rt Runtime[S]

	mu   sync.Mutex
	pods map[types.UID]*Pod[S]
}

// New returns a stand-in that runs pods with rt.
func New[S any](o Options, rt Runtime[S]) *StandIn[S] {
	return &StandIn[S]{o: o, rt: rt, pods: map[types.UID]*Pod[S]{}}
}

// Pods lists the pods the stand-in runs, sorted by namespace and name.
func (s *StandIn[S]) Pods() []*Pod[S] {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*Pod[S], 0, len(s.pods))
	for _, p := range s.pods {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b *Pod[S]) int {
		return strings.Compare(a.Object.Namespace+"/"+a.Object.Name, b.Object.Namespace+"/"+b.Object.Name)
	})
	return out
}

// Sync is one pass over every selected workload in the namespace, then
// the garbage collector's: pods whose workload is gone are removed.
func (s *StandIn[S]) Sync(ctx context.Context) error {
	// Pods first, then the workloads (see SyncDeployment).
	pods := &corev1.PodList{}
	deps := &appsv1.DeploymentList{}
	dss := &appsv1.DaemonSetList{}
	for _, list := range []client.ObjectList{pods, deps, dss} {
		if err := s.o.Client.List(ctx, list, client.InNamespace(s.o.Namespace)); err != nil {
			return err
		}
	}
	var workloads []client.Object
	for i := range dss.Items {
		workloads = append(workloads, &dss.Items[i])
	}
	for i := range deps.Items {
		workloads = append(workloads, &deps.Items[i])
	}
	errs := []error{s.forgetVanished(ctx, pods.Items, "")}
	for _, w := range workloads {
		if !s.selects(w) {
			continue
		}
		var err error
		switch w := w.(type) {
		case *appsv1.DaemonSet:
			_, err = s.SyncDaemonSet(ctx, w, pods.Items)
		case *appsv1.Deployment:
			_, err = s.SyncDeployment(ctx, w, pods.Items)
		}
		errs = append(errs, err)
	}
	errs = append(errs, s.Remove(ctx, Orphans(pods.Items, workloads...)))
	return errors.Join(errs...)
}

func (s *StandIn[S]) selects(o client.Object) bool { return s.o.Selects == nil || s.o.Selects(o) }

// Orphans are the pods controlled by a Deployment or DaemonSet that is not
// among workloads: the garbage collector's to delete.
func Orphans(pods []corev1.Pod, workloads ...client.Object) []corev1.Pod {
	var out []corev1.Pod
	for _, p := range pods {
		ref := metav1.GetControllerOf(&p)
		if ref == nil || (ref.Kind != KindDeployment && ref.Kind != KindDaemonSet) {
			continue
		}
		if !slices.ContainsFunc(workloads, func(w client.Object) bool { return w.GetUID() == ref.UID }) {
			out = append(out, p)
		}
	}
	return out
}

// Remove deletes pods as their controller or the garbage collector does
// (gracefully) and finishes the deletions as the kubelet does.
func (s *StandIn[S]) Remove(ctx context.Context, pods []corev1.Pod) error {
	var handles []*Pod[S]
	for i := range pods {
		if ref := metav1.GetControllerOf(&pods[i]); ref != nil {
			handles = append(handles, s.track(&pods[i], ref))
		}
	}
	return s.remove(ctx, handles)
}

// adopt tracks the pods w controls and splits them into live and
// terminating ones, each sorted by name.
func (s *StandIn[S]) adopt(w client.Object, pods []corev1.Pod) (live, terminating []*Pod[S]) {
	for i := range pods {
		ref := metav1.GetControllerOf(&pods[i])
		if ref == nil || ref.UID != w.GetUID() {
			continue
		}
		p := s.track(&pods[i], ref)
		if p.Object.DeletionTimestamp != nil {
			terminating = append(terminating, p)
		} else {
			live = append(live, p)
		}
	}
	byName := func(a, b *Pod[S]) int { return strings.Compare(a.Object.Name, b.Object.Name) }
	slices.SortFunc(live, byName)
	slices.SortFunc(terminating, byName)
	return live, terminating
}

// track returns the pod's handle, made on first sight, with the object.
func (s *StandIn[S]) track(pod *corev1.Pod, ref *metav1.OwnerReference) *Pod[S] {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.pods[pod.UID]
	if p == nil {
		p = &Pod[S]{Kind: ref.Kind, Workload: ref.Name, owner: ref.UID}
		s.pods[pod.UID] = p
	}
	p.Object = pod.DeepCopy()
	return p
}

func (s *StandIn[S]) untrack(p *Pod[S]) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.pods, p.Object.UID)
}

// tracked lists the handles of owner's pods ("": every pod's).
func (s *StandIn[S]) tracked(owner types.UID) []*Pod[S] {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*Pod[S]
	for _, p := range s.pods {
		if owner == "" || p.owner == owner {
			out = append(out, p)
		}
	}
	return out
}

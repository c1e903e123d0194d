package kubestandin

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The kubelet's part: run the pods placed on the nodes and report them;
// finish their deletions.

// runAll runs each pod and reports it; one pod's failure does not hold
// the others.
func (s *StandIn[S]) runAll(ctx context.Context, pods []*Pod[S]) error {
	var errs []error
	for _, p := range pods {
		if err := s.run(ctx, p); err != nil {
			errs = append(errs, fmt.Errorf("pod %s/%s: %w", p.Object.Namespace, p.Object.Name, err))
		}
	}
	return errors.Join(errs...)
}

// run gives a new pod its sandbox (reporting its addresses before its
// containers start, as a kubelet does), runs it and reports its readiness.
func (s *StandIn[S]) run(ctx context.Context, p *Pod[S]) error {
	if !p.sandboxed {
		ip, hostIP, err := s.rt.Sandbox(ctx, p)
		if err != nil {
			return err
		}
		p.sandboxed, p.IP, p.HostIP = true, ip, hostIP
		if err := s.report(ctx, p, false); err != nil {
			return err
		}
	}
	ready, err := s.rt.Run(ctx, p)
	if err != nil {
		return err
	}
	if ready == p.Ready && p.Object.Status.Phase == corev1.PodRunning {
		return nil
	}
	return s.report(ctx, p, ready)
}

// report writes the pod's status; a stale object is written on the next
// sync, from the object read then.
func (s *StandIn[S]) report(ctx context.Context, p *Pod[S], ready bool) error {
	if err := WritePodStatus(ctx, s.o.Client, p.Object, p.IP, p.HostIP, ready); err != nil {
		return ignoreStale(err)
	}
	p.Ready = ready
	return nil
}

// remove deletes pods gracefully, so that watchers (a control plane) see
// them terminating while their containers drain, and finishes each
// deletion.
func (s *StandIn[S]) remove(ctx context.Context, pods []*Pod[S]) error {
	var errs []error
	for _, p := range pods {
		p.removed = true
		if err := s.o.Client.Delete(ctx, p.Object); client.IgnoreNotFound(err) != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, s.finish(ctx, p, Removed))
	}
	return errors.Join(errs...)
}

// finish does what the kubelet does for a pod being deleted: stop its
// containers within the grace period, free its sandbox, then remove the
// object.
func (s *StandIn[S]) finish(ctx context.Context, p *Pod[S], why StopReason) error {
	if p.removed {
		why = Removed
	}
	if err := s.rt.Stop(ctx, p, why, gracePeriod(p.Object)); err != nil {
		return fmt.Errorf("stopping pod %s/%s: %w", p.Object.Namespace, p.Object.Name, err)
	}
	if err := s.o.Client.Delete(ctx, p.Object, client.GracePeriodSeconds(0)); client.IgnoreNotFound(err) != nil {
		return err
	}
	s.untrack(p)
	return nil
}

// forgetVanished stops what is left of owner's tracked pods ("": every
// tracked pod) that are no longer among pods.
func (s *StandIn[S]) forgetVanished(ctx context.Context, pods []corev1.Pod, owner types.UID) error {
	present := map[types.UID]bool{}
	for i := range pods {
		present[pods[i].UID] = true
	}
	var errs []error
	for _, p := range s.tracked(owner) {
		if !present[p.Object.UID] {
			errs = append(errs, s.rt.Stop(ctx, p, Vanished, gracePeriod(p.Object)))
			s.untrack(p)
		}
	}
	return errors.Join(errs...)
}

// gracePeriod is the pod's deletion grace period, else its spec's.
func gracePeriod(pod *corev1.Pod) time.Duration {
	seconds := ptr.Deref(pod.DeletionGracePeriodSeconds, ptr.Deref(pod.Spec.TerminationGracePeriodSeconds, 30))
	return time.Duration(seconds) * time.Second
}

// WritePodStatus writes what a kubelet reports of a running pod: phase
// Running, its addresses ("": none yet), its containers started, and its
// readiness. pod is updated on success.
func WritePodStatus(ctx context.Context, c client.Client, pod *corev1.Pod, ip, hostIP string, ready bool) error {
	cond := corev1.ConditionFalse
	if ready {
		cond = corev1.ConditionTrue
	}
	now := metav1.Now()
	p := pod.DeepCopy()
	p.Status.Phase = corev1.PodRunning
	if ip != "" {
		p.Status.PodIP, p.Status.PodIPs = ip, []corev1.PodIP{{IP: ip}}
	}
	if hostIP != "" {
		p.Status.HostIP, p.Status.HostIPs = hostIP, []corev1.HostIP{{IP: hostIP}}
	}
	if p.Status.StartTime == nil {
		p.Status.StartTime = &now
	}
	p.Status.Conditions = []corev1.PodCondition{
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.ContainersReady, Status: cond, LastTransitionTime: now},
		{Type: corev1.PodReady, Status: cond, LastTransitionTime: now},
	}
	p.Status.ContainerStatuses = nil
	for _, ctr := range p.Spec.Containers {
		p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{
			Name: ctr.Name, Image: ctr.Image, Ready: ready, Started: ptr.To(true),
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: *p.Status.StartTime}},
		})
	}
	if err := c.Status().Update(ctx, p); err != nil {
		return fmt.Errorf("pod %s/%s status: %w", p.Namespace, p.Name, err)
	}
	*pod = *p
	return nil
}

// ignoreStale drops the errors of writing an object that changed or went
// away since it was read: the next sync reads it again.
func ignoreStale(err error) error {
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

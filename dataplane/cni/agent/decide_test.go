package agent

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestDecide(t *testing.T) {
	now := metav1.Now()
	ns := func(mode string) *corev1.Namespace {
		n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}
		if mode != "" {
			n.Labels = map[string]string{"ambientmesh.dev/dataplane-mode": mode}
		}
		return n
	}
	pod := func(mode string, mutate ...func(*corev1.Pod)) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"},
			Status: corev1.PodStatus{Phase: corev1.PodRunning}}
		if mode != "" {
			p.Labels = map[string]string{"ambientmesh.dev/dataplane-mode": mode}
		}
		for _, m := range mutate {
			m(p)
		}
		return p
	}
	hostNet := func(p *corev1.Pod) { p.Spec.HostNetwork = true }
	deleting := func(p *corev1.Pod) { p.DeletionTimestamp = &now }
	done := func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }
	failed := func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed }

	for _, tc := range []struct {
		name string
		ns   *corev1.Namespace
		pod  *corev1.Pod
		want bool
	}{
		{"namespace ambient", ns("ambient"), pod(""), true},
		{"namespace unlabeled", ns(""), pod(""), false},
		{"namespace other value", ns("sidecar"), pod(""), false},
		{"namespace unknown yet", nil, pod(""), false},
		{"pod opts out of ambient namespace", ns("ambient"), pod("none"), false},
		{"pod opts in from unlabeled namespace", ns(""), pod("ambient"), true},
		{"pod opts in, namespace unknown", nil, pod("ambient"), true},
		{"pod label other value follows namespace", ns("ambient"), pod("typo"), true},
		{"host network never", ns("ambient"), pod("ambient", hostNet), false},
		{"terminating pod", ns("ambient"), pod("", deleting), false},
		{"succeeded pod", ns("ambient"), pod("", done), false},
		{"failed pod", ns("ambient"), pod("", failed), false},
		{"pending pod (CNI ADD time)", ns("ambient"), pod("", func(p *corev1.Pod) { p.Status.Phase = corev1.PodPending }), true},
		{"no pod", ns("ambient"), nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Decide(tc.ns, tc.pod)
			if d.Enroll != tc.want || d.Reason == "" {
				t.Fatalf("Decide = %+v, want enroll=%v with a reason", d, tc.want)
			}
		})
	}
}

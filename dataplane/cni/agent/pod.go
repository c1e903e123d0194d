package agent

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"
)

// podFromObject is what the agent needs of a pod object (netns not included).
func podFromObject(pod *corev1.Pod) Pod {
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	p := Pod{Workload: Workload{UID: string(pod.UID), Name: pod.Name, Namespace: pod.Namespace, ServiceAccount: sa}}
	for _, ip := range pod.Status.PodIPs {
		if a, err := netip.ParseAddr(ip.IP); err == nil {
			p.IPs = append(p.IPs, a)
		}
	}
	if len(p.IPs) == 0 && pod.Status.PodIP != "" {
		if a, err := netip.ParseAddr(pod.Status.PodIP); err == nil {
			p.IPs = append(p.IPs, a)
		}
	}
	return p
}

package cluster

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/internal/tcpdump"
)

// ztunnelMetrics fetches the metrics of the ztunnel on node from its pod IP
// (this machine's root network namespace routes every pod CIDR).
func ztunnelMetrics(ctx context.Context, node string) (string, error) {
	pods, err := clientset.CoreV1().Pods(meshv1alpha1.DefaultNamespace).List(ctx, metav1.ListOptions{
		LabelSelector: labels.SelectorFromSet(map[string]string{"app.kubernetes.io/name": "ztunnel"}).String(),
		FieldSelector: "spec.nodeName=" + node,
	})
	if err != nil {
		return "", err
	}
	if len(pods.Items) != 1 || pods.Items[0].Status.PodIP == "" {
		return "", fmt.Errorf("node %s: want one ztunnel pod with an IP, got %d", node, len(pods.Items))
	}
	url := fmt.Sprintf("http://%s:%d/metrics", pods.Items[0].Status.PodIP, meshv1alpha1.PortMetrics)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s %v", url, resp.Status, err)
	}
	return string(body), nil
}

// appPods lists the ready pods of an app in the app namespace.
func appPods(ctx context.Context, app string) []corev1.Pod {
	pods, err := clientset.CoreV1().Pods(appNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
	Expect(err).NotTo(HaveOccurred())
	return pods.Items
}

// capture is tcpdump printing payloads of every TCP packet on all of a
// node's interfaces: its eth0 and every pod's host-side veth. Loopback
// traffic is left out: it never carries pods' traffic (their redirection to
// ztunnel happens inside the pod's own namespace), but it does carry the
// kubelet's exec streams from containerd's streaming server on 127.0.0.1 in
// plaintext, and with them what an exec'd echo client prints of its request.
type capture struct{ *tcpdump.Capture }

func startCapture(node string) *capture {
	c, err := tcpdump.Start(node, "any", "tcp and not net 127.0.0.0/8", filepath.Join(GinkgoT().TempDir(), node+".txt"))
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() { _, _ = c.Stop() }) // when the spec fails before stop
	return &capture{c}
}

// stop ends the capture and returns what it printed.
func (c *capture) stop() string {
	text, err := c.Stop()
	Expect(err).NotTo(HaveOccurred())
	return text
}

package cluster

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
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
// node's interfaces: its eth0 and every pod's host-side veth.
type capture struct {
	cmd  *exec.Cmd
	path string
}

func startCapture(node string) *capture {
	path := filepath.Join(GinkgoT().TempDir(), node+".txt")
	out, err := os.Create(path)
	Expect(err).NotTo(HaveOccurred())
	cmd := exec.Command("ip", "netns", "exec", node, "tcpdump", "-i", "any", "-nn", "-l", "-A", "-s", "0", "tcp")
	cmd.Stdout = out
	stderr, err := cmd.StderrPipe()
	Expect(err).NotTo(HaveOccurred())
	Expect(cmd.Start()).To(Succeed())
	DeferCleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); _ = out.Close() })
	// tcpdump says "listening on" once it captures.
	listening := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "listening on") {
				close(listening)
				_, _ = io.Copy(io.Discard, stderr)
				return
			}
		}
	}()
	Eventually(listening).WithTimeout(10 * time.Second).Should(BeClosed())
	return &capture{cmd: cmd, path: path}
}

// stop ends the capture and returns what it printed.
func (c *capture) stop() string {
	// Let tcpdump print the packets it still holds, then end it cleanly.
	_ = c.cmd.Process.Signal(syscall.SIGINT)
	_ = c.cmd.Wait()
	data, err := os.ReadFile(c.path)
	Expect(err).NotTo(HaveOccurred())
	return string(data)
}

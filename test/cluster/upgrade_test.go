package cluster

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/gomega"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
)

// loadDeployment is the steady traffic of the upgrade check: the test
// application's load mode, a new connection to the server Service every 50 ms.
func loadDeployment(image string) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: load, namespace: %[1]s}
spec:
  replicas: 1
  selector: {matchLabels: {app: load}}
  template:
    metadata: {labels: {app: load}}
    spec:
      serviceAccountName: client
      containers:
      - name: load
        image: %[2]s
        args: [load, -interval, 50ms, "http://server.%[1]s/load"]
`, appNamespace, image)
}

// loadCounts is what the load pod reported so far.
type loadCounts struct {
	Sent, Failed int
	Failures     []string // its FAIL lines
}

// loadTotals reads the load pod's log: its latest totals and every failure.
func loadTotals(ctx context.Context) (loadCounts, error) {
	logs, err := kubectl(ctx, "", "-n", appNamespace, "logs", "deploy/load")
	if err != nil {
		return loadCounts{}, err
	}
	var c loadCounts
	for _, line := range strings.Split(logs, "\n") {
		switch {
		case strings.HasPrefix(line, "FAIL "):
			c.Failures = append(c.Failures, line)
		case strings.HasPrefix(line, "sent="):
			if _, err := fmt.Sscanf(line, "sent=%d failed=%d", &c.Sent, &c.Failed); err != nil {
				return loadCounts{}, fmt.Errorf("load log line %q: %w", line, err)
			}
		}
	}
	return c, nil
}

// ztunnelWatch polls the ztunnel pods while an upgrade runs and remembers the
// most nodes that were without a ready ztunnel at the same time.
type ztunnelWatch struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	most   int
	err    error
}

func watchZtunnels(ctx context.Context, nodes int) *ztunnelWatch {
	ctx, cancel := context.WithCancel(ctx)
	w := &ztunnelWatch{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			without, err := nodesWithoutReadyZtunnel(ctx, nodes)
			w.mu.Lock()
			if err != nil && ctx.Err() == nil {
				w.err = err
			}
			w.most = max(w.most, without)
			w.mu.Unlock()
		}
	}()
	return w
}

// stop ends the watch and returns the most nodes seen without a ready ztunnel at once.
func (w *ztunnelWatch) stop() int {
	w.cancel()
	<-w.done
	Expect(w.err).NotTo(HaveOccurred())
	return w.most
}

func nodesWithoutReadyZtunnel(ctx context.Context, nodes int) (int, error) {
	pods, err := clientset.CoreV1().Pods(meshv1alpha1.DefaultNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=ztunnel"})
	if err != nil {
		return 0, err
	}
	ready := map[string]bool{}
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		for _, c := range p.Status.Conditions {
			if c.Type == "Ready" && c.Status == "True" {
				ready[p.Spec.NodeName] = true
			}
		}
	}
	return nodes - len(ready), nil
}

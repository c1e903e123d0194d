package cluster

import (
	"context"
	"fmt"
	"sync"
	"time"

	. "github.com/onsi/gomega"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
)

// The steady traffic of the upgrade check: the echo client in the client pod
// sends batches of loadBatch requests to the server Service, each on a new
// connection, one every 50 ms, until stopped.
const loadBatch = 100

// loadCounts is what the load sent so far.
type loadCounts struct {
	Sent, Failed int
	Failures     []string // the first failure of each batch that had one
}

type load struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	sum  loadCounts
	err  error // the first run that says nothing about its requests (the exec failed)
}

func startLoad(ctx context.Context) *load {
	l := &load{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-l.stop:
				return
			default:
			}
			l.runBatch(ctx)
		}
	}()
	return l
}

// runBatch sends one batch and adds it to the counts. A batch is never cut
// short by stop, so every request sent is counted.
func (l *load) runBatch(ctx context.Context) {
	out, runErr := kubectl(ctx, "", "-n", appNamespace, "exec", "deploy/client", "--", echoClient,
		"http://server."+appNamespace+"/load", "--count", fmt.Sprint(loadBatch), "--qps", "20",
		"--new-connection-per-request", "--timeout", "30s")
	failed, failure, err := countEchoBatch(out, runErr, loadBatch)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		if l.err == nil && ctx.Err() == nil {
			l.err = err
		}
		return
	}
	l.sum.Sent += loadBatch
	l.sum.Failed += failed
	if failure != "" {
		l.sum.Failures = append(l.sum.Failures, failure)
	}
}

// sent is the number of requests sent so far.
func (l *load) sent() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sum.Sent
}

// finish waits for the running batch, ends the load and returns its counts.
func (l *load) finish() loadCounts {
	close(l.stop)
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	Expect(l.err).NotTo(HaveOccurred())
	return l.sum
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

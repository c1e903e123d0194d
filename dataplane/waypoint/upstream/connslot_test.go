package upstream

import (
	"context"
	"errors"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"

	"github.com/ambientmesh/ambient-operator/internal/testwait"
)

// limitedCluster is a cluster with max_connections and max_pending_requests.
func limitedCluster(t *testing.T, maxConnections, maxPending uint32) (*fixture, *Cluster) {
	f := newFixture(t)
	c := f.push(edsCluster(testCluster, withThresholds(&clusterv3.CircuitBreakers_Thresholds{
		MaxConnections: u32(maxConnections), MaxPendingRequests: u32(maxPending)})),
		assignment(testCluster, endpointAt("10.0.0.1:80")))
	return f, c
}

// closer is an io.Closer that runs f.
type closer func()

func (f closer) Close() error { f(); return nil }

// waitInBackground calls WaitConnection on its own goroutine.
func waitInBackground(ctx context.Context, c *Cluster) <-chan error {
	got := make(chan error, 1)
	go func() {
		s, err := c.WaitConnection(ctx)
		if err == nil {
			defer s.Release()
		}
		got <- err
	}()
	return got
}

func TestWaitConnectionPendsAtMaxConnectionsAndOverflowsAtMaxPending(t *testing.T) {
	f, c := limitedCluster(t, 1, 1)
	first, err := c.WaitConnection(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	waiter := waitInBackground(t.Context(), c)
	testwait.For(t, "one pending request", 5*time.Second, func() bool {
		return clusterStatus(t, f.set, testCluster).RqPendingActive == 1
	})
	if _, err := c.WaitConnection(t.Context()); !errors.Is(err, ErrOverflow) {
		t.Fatalf("a second waiter over max_pending_requests 1: err = %v, want ErrOverflow", err)
	}
	select {
	case err := <-waiter:
		t.Fatalf("the pending request got its connection while the only slot is taken (err %v)", err)
	default:
	}
	first.Release()
	if err := <-waiter; err != nil {
		t.Fatalf("the pending request after the slot freed: %v", err)
	}
	cs := clusterStatus(t, f.set, testCluster)
	if cs.RqPendingActive != 0 || cs.RqPendingOverflow != 1 || cs.CxOverflow != 1 || cs.CxTotal != 2 || cs.CxActive != 0 {
		t.Errorf("status = pending %d, pending overflow %d, cx overflow %d, cx total %d, cx active %d; want 0, 1, 1, 2, 0",
			cs.RqPendingActive, cs.RqPendingOverflow, cs.CxOverflow, cs.CxTotal, cs.CxActive)
	}
}

func TestWaitConnectionClosesAnIdleConnectionToMakeRoom(t *testing.T) {
	_, c := limitedCluster(t, 1, 1)
	idle, err := c.WaitConnection(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	idle.Idle(closer(func() { close(closed); idle.Release() }))
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	s, err := c.WaitConnection(ctx)
	if err != nil {
		t.Fatalf("with the only connection idle: %v, want a slot", err)
	}
	defer s.Release()
	select {
	case <-closed:
	default:
		t.Fatal("the idle connection was not closed")
	}
	if idle.Claim() {
		t.Error("Claim of the closed idle connection = true, want false: its pool must drop it")
	}
}

func TestWaitConnectionLeavesAClaimedConnection(t *testing.T) {
	_, c := limitedCluster(t, 1, 1)
	s, err := c.WaitConnection(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	s.Idle(closer(func() { t.Error("a claimed connection was closed") }))
	if !s.Claim() {
		t.Fatal("Claim of an idle connection = false, want true")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.WaitConnection(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("while the only connection is in use: err = %v, want the context's deadline", err)
	}
	// A connection that becomes idle wakes the waiter, which closes it and takes its slot.
	waiter := waitInBackground(t.Context(), c)
	s.Idle(closer(s.Release))
	if err := <-waiter; err != nil {
		t.Fatalf("after the connection went idle: %v", err)
	}
}

func TestWaitConnectionWakesWhenMaxConnectionsGrows(t *testing.T) {
	f, c := limitedCluster(t, 1, 1)
	if _, err := c.WaitConnection(t.Context()); err != nil {
		t.Fatal(err)
	}
	waiter := waitInBackground(t.Context(), c)
	testwait.For(t, "one pending request", 5*time.Second, func() bool {
		return clusterStatus(t, f.set, testCluster).RqPendingActive == 1
	})
	f.push(edsCluster(testCluster, withThresholds(&clusterv3.CircuitBreakers_Thresholds{MaxConnections: u32(2)})),
		assignment(testCluster, endpointAt("10.0.0.1:80")))
	if err := <-waiter; err != nil {
		t.Fatalf("after max_connections grew to 2: %v", err)
	}
}

package server

import (
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/internal/testwait"
)

// recordingCache records the flushes it is given.
type recordingCache struct {
	mu    sync.Mutex
	calls []call
}

type call struct {
	updated []string
	deleted []string
}

func (c *recordingCache) apply(changes map[string]deltaResource) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var updated, deleted []string
	for name, r := range changes {
		if r.version == "" {
			deleted = append(deleted, name)
		} else {
			updated = append(updated, name)
		}
	}
	sort.Strings(updated)
	sort.Strings(deleted)
	c.calls = append(c.calls, call{updated, deleted})
}

func (c *recordingCache) snapshot() []call {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]call(nil), c.calls...)
}

func newTestPublisher(debounce time.Duration) (*Publisher, *recordingCache) {
	rc := &recordingCache{}
	updates := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x"}, []string{"type"})
	return newPublisher(map[string]resourceCache{pb.WorkloadTypeURL: rc}, debounce, updates), rc
}

func workload(uid, node string) *pb.Workload {
	return &pb.Workload{Uid: uid, Namespace: "shop", Name: uid, Node: node}
}

func TestPublisherDropsNoOpUpdates(t *testing.T) {
	p, rc := newTestPublisher(0)
	if !p.Set(pb.WorkloadTypeURL, "a", workload("a", "n1")) {
		t.Fatal("first Set reported no change")
	}
	if p.Set(pb.WorkloadTypeURL, "a", workload("a", "n1")) {
		t.Fatal("an equal Workload was published again")
	}
	if p.Set(pb.WorkloadTypeURL, "missing", nil) {
		t.Fatal("deleting an unknown resource reported a change")
	}
	if p.Set("type.googleapis.com/unknown", "a", workload("a", "n1")) {
		t.Fatal("an unknown type was accepted")
	}
	if got := len(rc.snapshot()); got != 1 {
		t.Fatalf("cache updated %d times, want 1", got)
	}
}

func TestPublisherDebouncesIntoOneUpdate(t *testing.T) {
	p, rc := newTestPublisher(time.Hour) // flushed by hand below
	p.Set(pb.WorkloadTypeURL, "a", workload("a", "n1"))
	p.Set(pb.WorkloadTypeURL, "a", workload("a", "n2")) // same resource twice: sent once, last state
	p.Set(pb.WorkloadTypeURL, "b", workload("b", "n1"))
	p.Set(pb.WorkloadTypeURL, "c", workload("c", "n1"))
	p.Set(pb.WorkloadTypeURL, "c", nil) // added and removed within the window
	if got := len(rc.snapshot()); got != 0 {
		t.Fatalf("cache updated before the window closed (%d calls)", got)
	}
	p.Flush()
	calls := rc.snapshot()
	if len(calls) != 1 {
		t.Fatalf("got %d cache updates, want 1", len(calls))
	}
	if want := []string{"a", "b"}; !equal(calls[0].updated, want) || !equal(calls[0].deleted, []string{"c"}) {
		t.Fatalf("update = %+v, want updated %v deleted [c]", calls[0], want)
	}
	got, version := p.GetWithVersion(pb.WorkloadTypeURL, "a")
	if got.(*pb.Workload).GetNode() != "n2" || version != ResourceVersion(got) {
		t.Fatalf("published node %q, want the last state n2", got)
	}
}

func TestPublisherFlushesAfterTheWindow(t *testing.T) {
	p, rc := newTestPublisher(20 * time.Millisecond)
	p.Set(pb.WorkloadTypeURL, "a", workload("a", "n1"))
	testwait.For(t, "the pending change to be flushed", 5*time.Second, func() bool { return len(rc.snapshot()) > 0 })
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

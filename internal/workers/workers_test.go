package workers

import (
	"testing"
	"time"

	"github.com/ambientmesh/ambient-operator/internal/testwait"
)

// An idle worker takes the next function instead of a new goroutine, and idle workers end
// after the timeout.
func TestWorkersAreReusedThenEnd(t *testing.T) {
	p := NewPool(200 * time.Millisecond)

	ran := make(chan struct{})
	p.Go(func() { close(ran) })
	<-ran
	// A worker takes a hand-off only while it waits in its select, which it reaches a moment
	// after its function returns: retry until it is there.
	release := make(chan struct{})
	testwait.For(t, "the idle worker to take the next function", 5*time.Second, func() bool {
		return handToIdleWorker(p, func() { <-release })
	})
	if n := p.live.Load(); n != 1 {
		t.Fatalf("workers: %d, want 1 (the reused one)", n)
	}

	// With that worker busy, two more functions start two new workers.
	for range 2 {
		p.Go(func() { <-release })
	}
	if n := p.live.Load(); n != 3 {
		t.Fatalf("workers while three functions run: %d, want 3", n)
	}
	close(release)

	testwait.For(t, "idle workers to end", 5*time.Second, func() bool { return p.live.Load() == 0 })
}

// With reuse off, Go leaves an idle worker alone and starts a goroutine of its own.
func TestSetReuseOffStartsNewGoroutines(t *testing.T) {
	ran := make(chan struct{})
	Go(func() { close(ran) })
	<-ran
	testwait.For(t, "a worker of the process's pool to be idle", 5*time.Second, func() bool {
		return handToIdleWorker(shared, func() {})
	})
	workers := shared.live.Load()

	SetReuse(false)
	defer SetReuse(true)
	release := make(chan struct{})
	defer close(release)
	Go(func() { <-release })
	if n := shared.live.Load(); n != workers {
		t.Fatalf("with reuse off, Go started a worker: %d workers, want %d", n, workers)
	}
	// Had Go handed its function to the idle worker, it would stay busy until release.
	testwait.For(t, "the worker to be idle", 5*time.Second, func() bool { return handToIdleWorker(shared, func() {}) })
}

// handToIdleWorker gives fn to a worker of p that waits for work, as Go does, and reports
// whether there was one.
func handToIdleWorker(p *Pool, fn func()) bool {
	select {
	case p.handoff <- fn:
		return true
	default:
		return false
	}
}

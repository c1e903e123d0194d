package workers

import (
	"runtime"
	"testing"
	"time"

	"github.com/ambientmesh/ambient-operator/internal/testwait"
)

// An idle worker takes the next function instead of a new goroutine, and idle workers end
// after the timeout.
func TestWorkersAreReusedThenEnd(t *testing.T) {
	p := NewPool(200 * time.Millisecond)
	base := runtime.NumGoroutine()

	ran := make(chan struct{})
	p.Go(func() { close(ran) })
	<-ran
	testwait.For(t, "the first worker to become idle", 5*time.Second, func() bool { return idleWorkers(p) })
	if n := runtime.NumGoroutine(); n != base+1 {
		t.Fatalf("goroutines: %d, want %d (the idle worker)", n, base+1)
	}

	// Three at once: the idle worker takes one, two new workers the others.
	release := make(chan struct{})
	for range 3 {
		p.Go(func() { <-release })
	}
	if n := runtime.NumGoroutine(); n != base+3 {
		t.Fatalf("goroutines while three run: %d, want %d", n, base+3)
	}
	close(release)

	testwait.For(t, "idle workers to end", 5*time.Second, func() bool { return runtime.NumGoroutine() == base })
}

// With reuse off, Go leaves an idle worker alone and starts a goroutine of its own.
func TestSetReuseOffStartsNewGoroutines(t *testing.T) {
	ran := make(chan struct{})
	Go(func() { close(ran) })
	<-ran
	testwait.For(t, "a worker of the process's pool to become idle", 5*time.Second, func() bool { return idleWorkers(shared) })

	SetReuse(false)
	defer SetReuse(true)
	release := make(chan struct{})
	defer close(release)
	Go(func() { <-release })
	if !idleWorkers(shared) {
		t.Fatal("with reuse off, Go handed its function to the idle worker")
	}
}

// idleWorkers reports whether some worker of p waits for work.
func idleWorkers(p *Pool) bool {
	probe := make(chan struct{})
	select {
	case p.handoff <- func() { close(probe) }:
		<-probe
		return true
	default:
		return false
	}
}

package hbone

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Every function runs, concurrently when they block, and the goroutines are gone once idle.
func TestWorkersRunEverythingAndExitWhenIdle(t *testing.T) {
	w := newWorkers()
	base := runtime.NumGoroutine()
	var ran atomic.Int64
	release := make(chan struct{})
	var wg sync.WaitGroup
	for range 50 { // 50 blocked at once: each needs a goroutine of its own
		wg.Add(1)
		w.Go(func() { defer wg.Done(); <-release; ran.Add(1) })
	}
	close(release)
	wg.Wait()
	for range 500 { // sequential work reuses the idle goroutines
		wg.Add(1)
		w.Go(func() { defer wg.Done(); ran.Add(1) })
		wg.Wait()
	}
	if ran.Load() != 550 {
		t.Fatalf("%d functions ran, want 550", ran.Load())
	}
	if n := runtime.NumGoroutine(); n > base+50 {
		t.Fatalf("%d goroutines for at most 50 concurrent functions (base %d)", n, base)
	}
	deadline := time.Now().Add(workerIdle + 5*time.Second)
	for runtime.NumGoroutine() > base && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > base {
		t.Fatalf("%d goroutines left after %v idle, want %d", n, workerIdle, base)
	}
}

// Package workers runs short-lived functions on reused goroutines.
//
// A new goroutine starts with a small stack and grows it, copying it each time, on the
// way down to the TLS and socket calls: profiled, that was 8–10 % of a ztunnel's CPU per
// new connection. A goroutine that ran such work before already has the stack, so the
// per-connection goroutines (stream handlers, the second direction of a copy, accepted
// connections) are taken from idle ones when there are (docs/benchmarks.md: new-connection
// latency ratio 2.9–3.0 → 2.7–2.8).
//
// Reuse is on by default; SetReuse(false) turns it off for the whole process (the proxies'
// AMBIENT_PERF_WORKERS=off, docs/performance.md), so that its worth can be measured.
package workers

import (
	"sync/atomic"
	"time"
)

// Pool is a set of idle workers.
type Pool struct {
	// handoff passes work to an idle worker; unbuffered, so a send succeeds only when a
	// worker is waiting.
	handoff chan func()
	// idleTimeout is how long an idle worker waits for more work before it ends.
	idleTimeout time.Duration
	// live counts the pool's workers, idle or busy: the process's goroutine count cannot
	// tell them apart from other goroutines that start and end at the same time.
	live atomic.Int32
}

// NewPool makes a pool whose workers end after idleTimeout without work.
func NewPool(idleTimeout time.Duration) *Pool {
	return &Pool{handoff: make(chan func()), idleTimeout: idleTimeout}
}

// shared is the process's pool. Two seconds: long enough for a steady flow of connections
// to keep reusing workers, short enough that a burst leaves no lasting goroutines (and
// their stacks) behind.
var shared = NewPool(2 * time.Second)

// noReuse is set by SetReuse(false).
var noReuse atomic.Bool

// SetReuse turns the reuse of the process's workers on (the default) or off. Off, Go starts
// a new goroutine for every function, as a go statement does; idle workers end after their
// timeout.
func SetReuse(on bool) { noReuse.Store(!on) }

// Go runs fn on an idle worker of the process's pool, or on a new one; on a new goroutine
// when reuse is off (SetReuse).
func Go(fn func()) {
	if noReuse.Load() {
		go fn()
		return
	}
	shared.Go(fn)
}

// Go runs fn on an idle worker, or on a new one.
func (p *Pool) Go(fn func()) {
	select {
	case p.handoff <- fn:
	default:
		p.live.Add(1)
		go p.work(fn)
	}
}

func (p *Pool) work(fn func()) {
	defer p.live.Add(-1)
	idle := time.NewTimer(p.idleTimeout)
	defer idle.Stop()
	for {
		fn()
		fn = nil // release what it captured while idle
		idle.Reset(p.idleTimeout)
		select {
		case fn = <-p.handoff:
		case <-idle.C:
			return
		}
	}
}

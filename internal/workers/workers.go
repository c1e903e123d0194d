// Package workers runs short-lived functions on reused goroutines.
//
// A new goroutine starts with a small stack and grows it, copying it each time, on the
// way down to the TLS and socket calls: profiled, that was 8–10 % of a ztunnel's CPU per
// new connection. A goroutine that ran such work before already has the stack, so the
// per-connection goroutines (stream handlers, the second direction of a copy, accepted
// connections) are taken from idle ones when there are (docs/benchmarks.md: new-connection
// latency ratio 2.9–3.0 → 2.7–2.8).
package workers

import "time"

// Pool is a set of idle workers.
type Pool struct {
	// handoff passes work to an idle worker; unbuffered, so a send succeeds only when a
	// worker is waiting.
	handoff chan func()
	// idleTimeout is how long an idle worker waits for more work before it ends.
	idleTimeout time.Duration
}

// NewPool makes a pool whose workers end after idleTimeout without work.
func NewPool(idleTimeout time.Duration) *Pool {
	return &Pool{handoff: make(chan func()), idleTimeout: idleTimeout}
}

// shared is the process's pool. Two seconds: long enough for a steady flow of connections
// to keep reusing workers, short enough that a burst leaves no lasting goroutines (and
// their stacks) behind.
var shared = NewPool(2 * time.Second)

// Go runs fn on an idle worker of the process's pool, or on a new one.
func Go(fn func()) { shared.Go(fn) }

// Go runs fn on an idle worker, or on a new one.
func (p *Pool) Go(fn func()) {
	select {
	case p.handoff <- fn:
	default:
		go p.work(fn)
	}
}

func (p *Pool) work(fn func()) {
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

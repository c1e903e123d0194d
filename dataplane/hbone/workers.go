package hbone

import "time"

// workerIdle is how long a reusable goroutine waits for more work before it exits.
const workerIdle = time.Second

// workers runs functions on reused goroutines. A new goroutine starts with a small stack
// and grows it by copying (runtime.newstack) several times on a connection's deep call
// paths (TLS, HTTP/2, logging) — a visible share of the proxy's CPU when connections are
// short. A goroutine that already served a connection keeps its grown stack for the next
// one. Idle goroutines exit after workerIdle, so nothing is kept on a quiet proxy.
type workers struct{ work chan func() }

func newWorkers() *workers { return &workers{work: make(chan func())} }

// Go runs fn on an idle worker, or on a new one when none is idle.
func (w *workers) Go(fn func()) {
	select {
	case w.work <- fn:
	default:
		go w.loop(fn)
	}
}

func (w *workers) loop(fn func()) {
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		fn()
		idle.Reset(workerIdle)
		select {
		case fn = <-w.work:
		case <-idle.C:
			return
		}
	}
}

// goWorkers is shared by every Server and Join of the process.
var goWorkers = newWorkers()

// Go runs fn on a reused goroutine (see workers): for callers that start one goroutine
// per connection, like the ztunnel's accept loops.
func Go(fn func()) { goWorkers.Go(fn) }

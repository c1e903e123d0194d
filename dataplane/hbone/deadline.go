package hbone

import (
	"sync"
	"time"
)

// deadline is a resettable point in time with a channel that is closed once
// it has passed, like the deadlines of net.Pipe. net/http's server moves a
// stream's read deadline several times per request (header timeout, none,
// "now" to stop its background read, none, idle timeout, none), so setting
// one is cheap: the same deadline again changes nothing, and one timer per
// deadline is re-armed rather than a new one made each time.
type deadline struct {
	mu      sync.Mutex
	at      time.Time   // the deadline set (zero: none)
	timer   *time.Timer // runs expire; made at the first deadline in the future
	expired chan struct{}
}

func newDeadline() *deadline { return &deadline{expired: make(chan struct{})} }

// set arms the deadline at t; the zero time disarms it. It reports whether
// anything changed (a caller blocked on the old deadline must look again).
func (d *deadline) set(t time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if t.Equal(d.at) {
		return false
	}
	d.at = t
	if d.timer != nil {
		d.timer.Stop() // an expire already running finds d.at changed
	}
	if isClosed(d.expired) {
		d.expired = make(chan struct{})
	}
	if t.IsZero() {
		return true
	}
	dur := time.Until(t)
	switch {
	case dur <= 0:
		close(d.expired)
	case d.timer == nil:
		d.timer = time.AfterFunc(dur, d.expire)
	default:
		d.timer.Reset(dur)
	}
	return true
}

// expire closes the channel once the deadline set has passed; a timer armed
// for an earlier deadline finds a later one and waits for it.
func (d *deadline) expire() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.at.IsZero() || isClosed(d.expired) {
		return
	}
	if dur := time.Until(d.at); dur > 0 {
		d.timer.Reset(dur)
		return
	}
	close(d.expired)
}

// wait returns a channel closed when the deadline has passed.
func (d *deadline) wait() chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.expired
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

package hbone

import (
	"testing"
	"time"
)

func TestDeadlineFiresMovesAndRearms(t *testing.T) {
	d := newDeadline()
	if d.set(time.Time{}) {
		t.Error("disarming a disarmed deadline reported a change")
	}
	// Moved later before it fires: the first arming must not close it.
	d.set(time.Now().Add(20 * time.Millisecond))
	later := time.Now().Add(200 * time.Millisecond)
	d.set(later)
	if d.set(later) {
		t.Error("setting the same deadline again reported a change")
	}
	select {
	case <-d.wait():
		if time.Now().Before(later) {
			t.Fatal("expired before the deadline it was moved to")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("never expired")
	}
	// Re-armed after expiring: a fresh channel that closes again.
	d.set(time.Now().Add(time.Hour))
	if isClosed(d.wait()) {
		t.Fatal("re-armed deadline still reads as expired")
	}
	d.set(time.Now().Add(10 * time.Millisecond))
	select {
	case <-d.wait():
	case <-time.After(5 * time.Second):
		t.Fatal("re-armed deadline never expired")
	}
	// A deadline in the past expires at once; disarming opens a new channel.
	d.set(time.Unix(1, 0))
	if !isClosed(d.wait()) {
		t.Fatal("a deadline in the past is not expired")
	}
	d.set(time.Time{})
	if isClosed(d.wait()) {
		t.Fatal("a disarmed deadline reads as expired")
	}
}

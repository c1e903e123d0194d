// Package testwait waits in tests for something another goroutine or
// process does, by polling: no fixed sleeps, and a message naming what
// never happened.
package testwait

import "time"

// T is what For needs of a test: testing.TB and GinkgoT() both fit.
type T interface {
	Helper()
	Fatalf(format string, args ...any)
}

// pollEvery is short next to every timeout the tests use, and long enough
// that a condition doing a request (an admin endpoint) does not load the CPU.
const pollEvery = 20 * time.Millisecond

// For polls cond until it holds, and fails t if it does not within timeout.
func For(t T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(pollEvery)
	}
}

// Package testwait waits in tests for something another goroutine or
// process does, by polling: no fixed sleeps, and a message naming what
// never happened.
package testwait

import (
	"errors"
	"fmt"
	"time"
)

// T is what For needs of a test: testing.TB and GinkgoT() both fit.
type T interface {
	Helper()
	Fatalf(format string, args ...any)
}

// pollEvery is short next to every timeout the tests use, and long enough
// that a condition doing a request (an admin endpoint) does not load the CPU.
const pollEvery = 20 * time.Millisecond

// untilEvery is Until's pause between tries: its callers (the local mesh
// harness) start processes and make apiserver requests on every try.
const untilEvery = 250 * time.Millisecond

// errNotYet is For's condition not holding, as an error for poll.
var errNotYet = errors.New("not yet")

// For polls cond until it holds, and fails t if it does not within timeout.
func For(t T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	err := poll(timeout, pollEvery, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	})
	if err != nil {
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
}

// Until calls fn until it returns nil, for code that reports an error
// instead of failing a test. If fn still fails after timeout, Until returns
// its last error, wrapped with the timeout.
func Until(timeout time.Duration, fn func() error) error {
	if err := poll(timeout, untilEvery, fn); err != nil {
		return fmt.Errorf("still failing after %v: %w", timeout, err)
	}
	return nil
}

// poll calls fn every interval until it returns nil, or returns its last
// error once timeout has passed.
func poll(timeout, every time.Duration, fn func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(every)
	}
}

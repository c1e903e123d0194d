// Package testwait waits in tests for something another goroutine or
// process does, by polling: no fixed sleeps, and a message naming what
// never happened.
package testwait

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// T is what For needs of a test: testing.TB and GinkgoT() both fit.
type T interface {
	Helper()
	Fatalf(format string, args ...any)
}

// pace is the pause between tries: first after the first try, then doubling
// up to most.
type pace struct{ first, most time.Duration }

func (p pace) after(pause time.Duration) time.Duration { return min(2*pause, p.most) }

// forPace starts at a millisecond so that a condition that holds a moment
// later (an xDS push answered) costs the test a moment, not a full pause.
// It settles at 20 ms: short next to every timeout the tests use, and long
// enough that a condition doing a request (an admin endpoint) does not load
// the CPU.
var forPace = pace{first: time.Millisecond, most: 20 * time.Millisecond}

// untilPace is Until's: its callers (the local mesh harness, benchmarks
// against an API server) start processes and make apiserver requests on
// every try.
var untilPace = pace{first: 250 * time.Millisecond, most: 250 * time.Millisecond}

// errNotYet is For's condition not holding, as an error for poll.
var errNotYet = errors.New("not yet")

// For polls cond until it holds, and fails t if it does not within timeout.
func For(t T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	err := poll(context.Background(), timeout, forPace, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	})
	if err != nil {
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
}

// ForNoError is For for a condition that says why it does not hold yet: it
// polls try until it returns nil, and fails t with try's last error if that
// does not happen within timeout.
func ForNoError(t T, what string, timeout time.Duration, try func() error) {
	t.Helper()
	if err := poll(context.Background(), timeout, forPace, try); err != nil {
		t.Fatalf("timed out after %v waiting for %s: %v", timeout, what, err)
	}
}

// Until calls fn until it returns nil, for code that reports an error
// instead of failing a test. If fn still fails after timeout, Until returns
// its last error, wrapped with the timeout.
func Until(timeout time.Duration, fn func() error) error {
	return UntilContext(context.Background(), timeout, fn)
}

// UntilContext is Until that also gives up when ctx ends, returning ctx's
// error with fn's last one.
func UntilContext(ctx context.Context, timeout time.Duration, fn func() error) error {
	err := poll(ctx, timeout, untilPace, fn)
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("%w; last error: %v", ctx.Err(), err)
	default:
		return fmt.Errorf("still failing after %v: %w", timeout, err)
	}
}

// poll calls fn at p's pace until it returns nil, and returns its last
// error once timeout has passed or ctx has ended.
func poll(ctx context.Context, timeout time.Duration, p pace, fn func() error) error {
	deadline := time.Now().Add(timeout)
	pause := p.first
	for {
		err := fn()
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(pause):
		}
		pause = p.after(pause)
	}
}

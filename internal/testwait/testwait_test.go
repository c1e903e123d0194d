package testwait

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestForReturnsOnceTheConditionHolds(t *testing.T) {
	var calls atomic.Int32
	For(t, "the third call", 5*time.Second, func() bool { return calls.Add(1) == 3 })
	if n := calls.Load(); n != 3 {
		t.Fatalf("cond called %d times, want 3 (For returns as soon as it holds)", n)
	}
}

// recorder stands in for a test so the failure can be inspected.
type recorder struct{ failure string }

func (r *recorder) Helper() {}
func (r *recorder) Fatalf(format string, args ...any) {
	r.failure = fmt.Sprintf(format, args...)
	panic(r) // Fatalf does not return
}

func TestForFailsAfterTheTimeoutNamingWhat(t *testing.T) {
	r := &recorder{}
	start := time.Now()
	func() {
		defer func() {
			if p := recover(); p != r {
				panic(p)
			}
		}()
		For(r, "the moon", 100*time.Millisecond, func() bool { return false })
	}()
	if elapsed := time.Since(start); elapsed < 100*time.Millisecond {
		t.Fatalf("gave up after %v, before the 100ms timeout", elapsed)
	}
	if !strings.Contains(r.failure, "waiting for the moon") || !strings.Contains(r.failure, "100ms") {
		t.Fatalf("failure %q does not name what and the timeout", r.failure)
	}
}

func TestUntilReturnsNilOnceFnSucceeds(t *testing.T) {
	calls := 0
	err := Until(5*time.Second, func() error {
		if calls++; calls < 3 {
			return fmt.Errorf("call %d failed", calls)
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("Until = %v after %d calls, want nil after 3", err, calls)
	}
}

func TestUntilReturnsTheLastErrorAfterTheTimeout(t *testing.T) {
	var last error
	calls := 0
	err := Until(300*time.Millisecond, func() error {
		calls++
		last = fmt.Errorf("call %d failed", calls)
		return last
	})
	if calls < 2 {
		t.Fatalf("fn called %d times in 300ms, want a retry", calls)
	}
	if !errors.Is(err, last) || !strings.Contains(err.Error(), "300ms") {
		t.Fatalf("Until = %v, want the last error (%v) and the timeout", err, last)
	}
}

func TestForNoErrorFailsWithTheLastError(t *testing.T) {
	r := &recorder{}
	calls := 0
	func() {
		defer func() {
			if p := recover(); p != r {
				panic(p)
			}
		}()
		ForNoError(r, "the door", 100*time.Millisecond, func() error {
			calls++
			return fmt.Errorf("locked (try %d)", calls)
		})
	}()
	want := fmt.Sprintf("locked (try %d)", calls)
	if !strings.Contains(r.failure, "waiting for the door") || !strings.HasSuffix(r.failure, want) {
		t.Fatalf("failure %q does not name what and end with the last error %q", r.failure, want)
	}
}

func TestForNoErrorReturnsOnceTryIsNil(t *testing.T) {
	calls := 0
	ForNoError(t, "the third try", 5*time.Second, func() error {
		if calls++; calls < 3 {
			return errNotYet
		}
		return nil
	})
	if calls != 3 {
		t.Fatalf("try called %d times, want 3", calls)
	}
}

// For's pauses start short, so a condition that holds a moment later costs
// a moment, and settle at 20 ms.
func TestForPausesDoubleFromAMillisecondToTwenty(t *testing.T) {
	var got []time.Duration
	for pause, i := forPace.first, 0; i < 7; pause, i = forPace.after(pause), i+1 {
		got = append(got, pause)
	}
	want := []time.Duration{1, 2, 4, 8, 16, 20, 20}
	for i := range want {
		if got[i] != want[i]*time.Millisecond {
			t.Fatalf("pauses %v, want %v ms", got, want)
		}
	}
}

func TestUntilContextStopsWhenTheContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	failed := errors.New("not there")
	start := time.Now()
	err := UntilContext(ctx, time.Minute, func() error {
		cancel()
		return failed
	})
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "not there") {
		t.Fatalf("UntilContext = %v, want the context's error and the last one", err)
	}
	if elapsed := time.Since(start); elapsed > 10*time.Second {
		t.Fatalf("returned after %v, not when the context ended", elapsed)
	}
}

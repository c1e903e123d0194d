package testwait

import (
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

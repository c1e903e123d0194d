package bootstrap

import "testing"

func TestWorkerThreads(t *testing.T) {
	for _, tc := range []struct {
		flag      int
		env       string
		available int
		want      int
	}{
		{available: 1, want: 1},
		{available: 2, want: 1},
		{available: 3, want: 2},
		{available: 8, want: 4},
		{flag: 3, available: 2, want: 3},           // the flag wins
		{env: "4", available: 8, want: 0},          // $GOMAXPROCS wins over the default: leave it
		{flag: 2, env: "4", available: 8, want: 2}, // ... but not over the flag
	} {
		if got := workerThreads(tc.flag, tc.env, tc.available); got != tc.want {
			t.Errorf("workerThreads(%d, %q, %d) = %d, want %d", tc.flag, tc.env, tc.available, got, tc.want)
		}
	}
}

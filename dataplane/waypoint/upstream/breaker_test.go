package upstream

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
)

func TestCircuitBreakers(t *testing.T) {
	type starter func(*Cluster) (func(), error)
	startRequest := (*Cluster).StartRequest
	startConnection := (*Cluster).StartConnection
	startRetry := func(c *Cluster) (func(), error) {
		// Retries are limited by, and belong to, active requests.
		if _, err := c.StartRequest(); err != nil {
			return nil, err
		}
		return c.StartRetry()
	}
	tests := []struct {
		name       string
		thresholds *clusterv3.CircuitBreakers_Thresholds // nil: no circuit_breakers
		start      starter
		want       int // admitted before the first overflow
		overflow   func(ClusterStatus) uint64
	}{
		{"max_requests", &clusterv3.CircuitBreakers_Thresholds{MaxRequests: u32(3)}, startRequest, 3,
			func(cs ClusterStatus) uint64 { return cs.RqOverflow }},
		{"max_requests default 1024", nil, startRequest, 1024,
			func(cs ClusterStatus) uint64 { return cs.RqOverflow }},
		{"max_connections", &clusterv3.CircuitBreakers_Thresholds{MaxConnections: u32(5)}, startConnection, 5,
			func(cs ClusterStatus) uint64 { return cs.CxOverflow }},
		{"max_connections default 1024", nil, startConnection, 1024,
			func(cs ClusterStatus) uint64 { return cs.CxOverflow }},
		{"max_retries", &clusterv3.CircuitBreakers_Thresholds{MaxRetries: u32(4)}, startRetry, 4,
			func(cs ClusterStatus) uint64 { return cs.RetryOverflow }},
		{"max_retries default 3", nil, startRetry, 3,
			func(cs ClusterStatus) uint64 { return cs.RetryOverflow }},
		{"HIGH priority thresholds do not apply",
			&clusterv3.CircuitBreakers_Thresholds{Priority: corev3.RoutingPriority_HIGH, MaxRequests: u32(1)}, startRequest, 1024,
			func(cs ClusterStatus) uint64 { return cs.RqOverflow }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			var edits []func(*clusterv3.Cluster)
			if tt.thresholds != nil {
				edits = append(edits, withThresholds(tt.thresholds))
			}
			c := f.push(edsCluster(testCluster, edits...), assignment(testCluster, endpointAt("10.0.0.1:80")))
			var dones []func()
			for range tt.want {
				done, err := tt.start(c)
				if err != nil {
					t.Fatalf("refused after %d: %v", len(dones), err)
				}
				dones = append(dones, done)
			}
			if _, err := tt.start(c); !errors.Is(err, ErrOverflow) {
				t.Fatalf("admission %d: err = %v, want ErrOverflow", tt.want+1, err)
			}
			if got := tt.overflow(clusterStatus(t, f.set, testCluster)); got != 1 {
				t.Errorf("overflow counter = %d, want 1", got)
			}
			dones[0]()
			dones[0]() // done twice gives back one slot only
			if _, err := tt.start(c); err != nil {
				t.Fatalf("after done: %v", err)
			}
			if _, err := tt.start(c); !errors.Is(err, ErrOverflow) {
				t.Fatalf("a second done freed a second slot: err = %v", err)
			}
		})
	}
}

func TestRetryBudget(t *testing.T) {
	tests := []struct {
		name           string
		percent        *typev3.Percent // nil: default 20%
		minConcurrency *uint32         // nil: default 3
		active         int
		want           int // concurrent retries admitted
	}{
		{name: "100% of 10 active requests", percent: &typev3.Percent{Value: 100}, minConcurrency: ptr(uint32(0)), active: 10, want: 10},
		{name: "100% of 1 active request", percent: &typev3.Percent{Value: 100}, minConcurrency: ptr(uint32(0)), active: 1, want: 1},
		{name: "100% of 40 active requests", percent: &typev3.Percent{Value: 100}, minConcurrency: ptr(uint32(0)), active: 40, want: 40},
		{name: "default 20% of 40", active: 40, want: 8},
		{name: "default floor: min_retry_concurrency 3", active: 5, want: 3},
		{name: "50% of 9 rounds down", percent: &typev3.Percent{Value: 50}, minConcurrency: ptr(uint32(1)), active: 9, want: 4},
		{name: "0% with min 0: no retries", percent: &typev3.Percent{Value: 0}, minConcurrency: ptr(uint32(0)), active: 10, want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			budget := &clusterv3.CircuitBreakers_Thresholds_RetryBudget{BudgetPercent: tt.percent}
			if tt.minConcurrency != nil {
				budget.MinRetryConcurrency = u32(*tt.minConcurrency)
			}
			// max_retries 1 shows that the budget replaces it.
			c := f.push(edsCluster(testCluster, withThresholds(&clusterv3.CircuitBreakers_Thresholds{MaxRetries: u32(1), RetryBudget: budget})),
				assignment(testCluster, endpointAt("10.0.0.1:80")))
			for range tt.active {
				if _, err := c.StartRequest(); err != nil {
					t.Fatal(err)
				}
			}
			admitted := 0
			for ; admitted <= tt.active+5; admitted++ {
				if _, err := c.StartRetry(); err != nil {
					if !errors.Is(err, ErrOverflow) {
						t.Fatal(err)
					}
					break
				}
			}
			if admitted != tt.want {
				t.Errorf("admitted %d concurrent retries, want %d", admitted, tt.want)
			}
		})
	}
}

// TestRetryBudgetNeverDoublesLoad checks the promise of a 100% budget as
// requests come and go, each retrying any number of times at once: a retry is
// never admitted beyond as many concurrent retries as active requests.
func TestRetryBudgetNeverDoublesLoad(t *testing.T) {
	f := newFixture(t)
	budget := &clusterv3.CircuitBreakers_Thresholds_RetryBudget{BudgetPercent: &typev3.Percent{Value: 100}, MinRetryConcurrency: u32(0)}
	c := f.push(edsCluster(testCluster, withThresholds(&clusterv3.CircuitBreakers_Thresholds{RetryBudget: budget})),
		assignment(testCluster, endpointAt("10.0.0.1:80")))
	type request struct {
		done    func()
		retries []func()
	}
	var active []*request
	walk := rand.New(rand.NewPCG(1, 2))
	for step := range 2000 {
		switch n := len(active); {
		case n == 0 || walk.IntN(3) == 0:
			done, err := c.StartRequest()
			if err != nil {
				t.Fatal(err)
			}
			active = append(active, &request{done: done})
		case walk.IntN(2) == 0:
			done, err := c.StartRetry()
			if err != nil {
				break
			}
			r := active[walk.IntN(n)]
			r.retries = append(r.retries, done)
			if cs := clusterStatus(t, f.set, testCluster); cs.RetriesActive > cs.RqActive {
				t.Fatalf("step %d: admitted a retry: %d concurrent retries for %d active requests", step, cs.RetriesActive, cs.RqActive)
			}
		default:
			i := walk.IntN(n)
			for _, retryDone := range active[i].retries {
				retryDone()
			}
			active[i].done()
			active = slices.Delete(active, i, i+1)
		}
	}
	if cs := clusterStatus(t, f.set, testCluster); cs.Retries == 0 || cs.RetryOverflow == 0 {
		t.Errorf("the walk did not both admit and refuse retries: %+v", cs)
	}
}

func TestOverflowErrorNamesTheLimit(t *testing.T) {
	f := newFixture(t)
	c := f.push(edsCluster(testCluster, withThresholds(&clusterv3.CircuitBreakers_Thresholds{MaxRequests: u32(0)})),
		assignment(testCluster, endpointAt("10.0.0.1:80")))
	_, err := c.StartRequest()
	if want := fmt.Sprintf("%v: max_requests 0", ErrOverflow); err == nil || err.Error() != want {
		t.Errorf("err = %v, want %q", err, want)
	}
}

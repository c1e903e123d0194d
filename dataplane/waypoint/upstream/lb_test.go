package upstream

import (
	"errors"
	"maps"
	"slices"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
)

// ejectAll is outlier detection that ejects after one 5xx and lets every
// host be ejected.
var ejectAll = withOutlier(&clusterv3.OutlierDetection{Consecutive_5Xx: u32(1), MaxEjectionPercent: u32(100)})

func TestRoundRobin(t *testing.T) {
	tests := []struct {
		name      string
		endpoints []*endpointv3.LbEndpoint
		eject     []string // hosts to eject before picking
		want      map[string]int
	}{{
		name:      "spreads evenly",
		endpoints: []*endpointv3.LbEndpoint{endpointAt("10.0.0.1:80"), endpointAt("10.0.0.2:80"), endpointAt("10.0.0.3:80")},
		want:      map[string]int{"10.0.0.1:80": 100, "10.0.0.2:80": 100, "10.0.0.3:80": 100},
	}, {
		name: "skips unhealthy, draining and degraded hosts; unknown is healthy",
		endpoints: []*endpointv3.LbEndpoint{
			endpointAt("10.0.0.1:80"),
			endpointWith("10.0.0.2:80", corev3.HealthStatus_UNHEALTHY, nil),
			endpointWith("10.0.0.3:80", corev3.HealthStatus_UNKNOWN, nil),
			endpointWith("10.0.0.4:80", corev3.HealthStatus_DRAINING, nil),
			endpointWith("10.0.0.5:80", corev3.HealthStatus_HEALTHY, nil),
			endpointWith("10.0.0.6:80", corev3.HealthStatus_DEGRADED, nil),
		},
		want: map[string]int{"10.0.0.1:80": 100, "10.0.0.3:80": 100, "10.0.0.5:80": 100},
	}, {
		name:      "skips ejected hosts",
		endpoints: []*endpointv3.LbEndpoint{endpointAt("10.0.0.1:80"), endpointAt("10.0.0.2:80"), endpointAt("10.0.0.3:80")},
		eject:     []string{"10.0.0.2:80"},
		want:      map[string]int{"10.0.0.1:80": 150, "10.0.0.3:80": 150},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			c := f.push(edsCluster(testCluster, ejectAll), assignment(testCluster, tt.endpoints...))
			for _, addr := range tt.eject {
				serve(host(t, c, addr), 1, Outcome{Status: 500})
			}
			if got := pickCounts(t, c, 300); !maps.Equal(got, tt.want) {
				t.Errorf("picks = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestLeastRequest(t *testing.T) {
	tests := []struct {
		name   string
		active map[string]int // active requests per host
		choice uint32         // choice_count; 0 for the default 2
		rand   []int          // the random draws
		want   string
	}{{
		name:   "two hosts: the idle one, whatever the draws",
		active: map[string]int{"10.0.0.1:80": 3, "10.0.0.2:80": 0},
		rand:   []int{0, 0, 0},
		want:   "10.0.0.2:80",
	}, {
		name:   "two choices among four: the idler of the two drawn",
		active: map[string]int{"10.0.0.1:80": 0, "10.0.0.2:80": 5, "10.0.0.3:80": 1, "10.0.0.4:80": 0},
		rand:   []int{1, 2},
		want:   "10.0.0.3:80",
	}, {
		name:   "the first drawn keeps a tie",
		active: map[string]int{"10.0.0.1:80": 2, "10.0.0.2:80": 2, "10.0.0.3:80": 2},
		rand:   []int{2, 0},
		want:   "10.0.0.3:80",
	}, {
		name:   "choice_count 3 over three hosts scans them all",
		active: map[string]int{"10.0.0.1:80": 4, "10.0.0.2:80": 4, "10.0.0.3:80": 1},
		choice: 3,
		want:   "10.0.0.3:80",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			var eps []*endpointv3.LbEndpoint
			for _, addr := range []string{"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80"} {
				if _, ok := tt.active[addr]; ok {
					eps = append(eps, endpointAt(addr))
				}
			}
			edits := []func(*clusterv3.Cluster){withLbPolicy(clusterv3.Cluster_LEAST_REQUEST)}
			if tt.choice != 0 {
				edits = append(edits, func(c *clusterv3.Cluster) {
					c.LbConfig = &clusterv3.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &clusterv3.Cluster_LeastRequestLbConfig{ChoiceCount: u32(tt.choice)}}
				})
			}
			c := f.push(edsCluster(testCluster, edits...), assignment(testCluster, eps...))
			for addr, n := range tt.active {
				for range n {
					host(t, c, addr).Begin()
				}
			}
			f.rand.values = tt.rand
			h, err := c.Pick()
			if err != nil {
				t.Fatal(err)
			}
			if h.Addr.String() != tt.want {
				t.Errorf("Pick = %s, want %s", h.Addr, tt.want)
			}
		})
	}
}

func TestLeastRequestFollowsEndedRequests(t *testing.T) {
	f := newFixture(t)
	c := f.push(edsCluster(testCluster, withLbPolicy(clusterv3.Cluster_LEAST_REQUEST)),
		assignment(testCluster, endpointAt("10.0.0.1:80"), endpointAt("10.0.0.2:80")))
	busy := host(t, c, "10.0.0.1:80")
	busy.Begin()
	if h, _ := c.Pick(); h.Addr.String() != "10.0.0.2:80" {
		t.Fatalf("Pick = %s while 10.0.0.1 is busy, want 10.0.0.2", h.Addr)
	}
	busy.End(Outcome{Status: 200})
	other := host(t, c, "10.0.0.2:80")
	other.Begin()
	if h, _ := c.Pick(); h.Addr.String() != "10.0.0.1:80" {
		t.Errorf("Pick = %s once 10.0.0.1 is idle and 10.0.0.2 busy, want 10.0.0.1", h.Addr)
	}
}

func TestRandom(t *testing.T) {
	f := newFixture(t)
	c := f.push(edsCluster(testCluster, withLbPolicy(clusterv3.Cluster_RANDOM)),
		assignment(testCluster, endpointAt("10.0.0.1:80"), endpointAt("10.0.0.2:80"), endpointAt("10.0.0.3:80")))
	f.rand.values = []int{2, 0, 1}
	var got []string
	for range 3 {
		h, err := c.Pick()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, h.Addr.String())
	}
	want := []string{"10.0.0.3:80", "10.0.0.1:80", "10.0.0.2:80"}
	if !slices.Equal(got, want) {
		t.Errorf("picks = %v, want %v", got, want)
	}
}

func TestPanicThreshold(t *testing.T) {
	healthy := func(addr string) *endpointv3.LbEndpoint { return endpointAt(addr) }
	unhealthy := func(addr string) *endpointv3.LbEndpoint {
		return endpointWith(addr, corev3.HealthStatus_UNHEALTHY, nil)
	}
	tests := []struct {
		name      string
		threshold *float64 // nil: the default 50%
		endpoints []*endpointv3.LbEndpoint
		eject     []string
		want      map[string]int
		wantErr   error
		wantPanic bool
	}{{
		name:      "half available is not panic",
		endpoints: []*endpointv3.LbEndpoint{healthy("10.0.0.1:80"), healthy("10.0.0.2:80"), unhealthy("10.0.0.3:80"), unhealthy("10.0.0.4:80")},
		want:      map[string]int{"10.0.0.1:80": 60, "10.0.0.2:80": 60},
	}, {
		name:      "below half: route to all hosts",
		endpoints: []*endpointv3.LbEndpoint{healthy("10.0.0.1:80"), unhealthy("10.0.0.2:80"), unhealthy("10.0.0.3:80"), unhealthy("10.0.0.4:80")},
		want:      map[string]int{"10.0.0.1:80": 30, "10.0.0.2:80": 30, "10.0.0.3:80": 30, "10.0.0.4:80": 30},
		wantPanic: true,
	}, {
		name:      "ejected hosts count as unavailable and take traffic again in panic",
		endpoints: []*endpointv3.LbEndpoint{healthy("10.0.0.1:80"), healthy("10.0.0.2:80"), healthy("10.0.0.3:80")},
		eject:     []string{"10.0.0.1:80", "10.0.0.2:80"},
		want:      map[string]int{"10.0.0.1:80": 40, "10.0.0.2:80": 40, "10.0.0.3:80": 40},
		wantPanic: true,
	}, {
		name:      "none healthy: all hosts",
		endpoints: []*endpointv3.LbEndpoint{unhealthy("10.0.0.1:80"), unhealthy("10.0.0.2:80")},
		want:      map[string]int{"10.0.0.1:80": 60, "10.0.0.2:80": 60},
		wantPanic: true,
	}, {
		name:      "threshold 0 disables panic mode",
		threshold: ptr(0.0),
		endpoints: []*endpointv3.LbEndpoint{unhealthy("10.0.0.1:80"), unhealthy("10.0.0.2:80")},
		wantErr:   ErrNoHealthyUpstream,
	}, {
		name:      "threshold 0 keeps the last healthy host alone",
		threshold: ptr(0.0),
		endpoints: []*endpointv3.LbEndpoint{healthy("10.0.0.1:80"), unhealthy("10.0.0.2:80"), unhealthy("10.0.0.3:80")},
		want:      map[string]int{"10.0.0.1:80": 120},
	}, {
		name:      "overprovisioning: 75% available counts as 105%, no panic at threshold 100",
		threshold: ptr(100.0),
		endpoints: []*endpointv3.LbEndpoint{healthy("10.0.0.1:80"), healthy("10.0.0.2:80"), healthy("10.0.0.3:80"), unhealthy("10.0.0.4:80")},
		want:      map[string]int{"10.0.0.1:80": 40, "10.0.0.2:80": 40, "10.0.0.3:80": 40},
	}, {
		name:      "no endpoints",
		endpoints: nil,
		wantErr:   ErrNoHealthyUpstream,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			edits := []func(*clusterv3.Cluster){ejectAll}
			if tt.threshold != nil {
				edits = append(edits, withPanicThreshold(*tt.threshold))
			}
			c := f.push(edsCluster(testCluster, edits...), assignment(testCluster, tt.endpoints...))
			for _, addr := range tt.eject {
				serve(host(t, c, addr), 1, Outcome{Status: 500})
			}
			if tt.wantErr != nil {
				if _, err := c.Pick(); !errors.Is(err, tt.wantErr) {
					t.Fatalf("Pick error = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if got := pickCounts(t, c, 120); !maps.Equal(got, tt.want) {
				t.Errorf("picks = %v, want %v", got, tt.want)
			}
			if got := clusterStatus(t, f.set, testCluster).Panic; got != tt.wantPanic {
				t.Errorf("dump panic = %v, want %v", got, tt.wantPanic)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

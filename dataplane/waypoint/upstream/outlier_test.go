package upstream

import (
	"fmt"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

var (
	ok200         = Outcome{Status: 200}
	notFound404   = Outcome{Status: 404}
	err500        = Outcome{Status: 500}
	err503        = Outcome{Status: 503}
	connectFailed = Outcome{ConnectFailure: true}
	reset         = Outcome{Reset: true}
	noResponse    = Outcome{}
)

const (
	sick  = "10.0.0.1:80"
	sound = "10.0.0.2:80"
)

// twoHosts is a cluster of two hosts with the given outlier detection.
func twoHosts(t *testing.T, od *clusterv3.OutlierDetection) (*fixture, *Cluster) {
	t.Helper()
	f := newFixture(t)
	c := f.push(edsCluster(testCluster, withOutlier(od)), assignment(testCluster, endpointAt(sick), endpointAt(sound)))
	return f, c
}

func ejected(t *testing.T, f *fixture) bool {
	t.Helper()
	return !hostStatus(t, f.set, testCluster, sick).EjectedUntil.IsZero()
}

func TestConsecutiveErrors(t *testing.T) {
	tests := []struct {
		name     string
		od       *clusterv3.OutlierDetection
		outcomes []Outcome
		want     bool // ejected
	}{{
		name:     "three 5xx of three",
		od:       &clusterv3.OutlierDetection{Consecutive_5Xx: u32(3), MaxEjectionPercent: u32(100)},
		outcomes: []Outcome{err500, err503, err500},
		want:     true,
	}, {
		name:     "two 5xx of three",
		od:       &clusterv3.OutlierDetection{Consecutive_5Xx: u32(3), MaxEjectionPercent: u32(100)},
		outcomes: []Outcome{err500, err500},
	}, {
		name:     "the default is five",
		od:       &clusterv3.OutlierDetection{MaxEjectionPercent: u32(100)},
		outcomes: []Outcome{err500, err500, err500, err500, err500},
		want:     true,
	}, {
		name:     "a success resets the count",
		od:       &clusterv3.OutlierDetection{Consecutive_5Xx: u32(3), MaxEjectionPercent: u32(100)},
		outcomes: []Outcome{err500, err500, ok200, err500, err500},
	}, {
		name:     "a 4xx is a success",
		od:       &clusterv3.OutlierDetection{Consecutive_5Xx: u32(3), MaxEjectionPercent: u32(100)},
		outcomes: []Outcome{err500, err500, notFound404, err500, err500},
	}, {
		name:     "connect failures and resets count as 5xx",
		od:       &clusterv3.OutlierDetection{Consecutive_5Xx: u32(3), MaxEjectionPercent: u32(100)},
		outcomes: []Outcome{err500, connectFailed, reset},
		want:     true,
	}, {
		name:     "a request without a response or failure says nothing",
		od:       &clusterv3.OutlierDetection{Consecutive_5Xx: u32(3), MaxEjectionPercent: u32(100)},
		outcomes: []Outcome{err500, err500, noResponse, err500},
		want:     true,
	}, {
		name:     "consecutive_5xx 0 disables it",
		od:       &clusterv3.OutlierDetection{Consecutive_5Xx: u32(0), MaxEjectionPercent: u32(100)},
		outcomes: []Outcome{err500, err500, err500, err500, err500, err500, err500},
	}, {
		name:     "enforcing_consecutive_5xx 0 only detects",
		od:       &clusterv3.OutlierDetection{Consecutive_5Xx: u32(2), EnforcingConsecutive_5Xx: u32(0), MaxEjectionPercent: u32(100)},
		outcomes: []Outcome{err500, err500},
	}, {
		name:     "gateway failures are detected but not enforced by default",
		od:       &clusterv3.OutlierDetection{Consecutive_5Xx: u32(0), ConsecutiveGatewayFailure: u32(2), MaxEjectionPercent: u32(100)},
		outcomes: []Outcome{err503, err503, err503},
	}, {
		name: "gateway failures eject when enforced",
		od: &clusterv3.OutlierDetection{Consecutive_5Xx: u32(0), ConsecutiveGatewayFailure: u32(2),
			EnforcingConsecutiveGatewayFailure: u32(100), MaxEjectionPercent: u32(100)},
		outcomes: []Outcome{err503, {Status: 504}},
		want:     true,
	}, {
		name: "a connect failure is a gateway failure",
		od: &clusterv3.OutlierDetection{Consecutive_5Xx: u32(0), ConsecutiveGatewayFailure: u32(2),
			EnforcingConsecutiveGatewayFailure: u32(100), MaxEjectionPercent: u32(100)},
		outcomes: []Outcome{connectFailed, {Status: 502}},
		want:     true,
	}, {
		name: "a 500 breaks a run of gateway failures",
		od: &clusterv3.OutlierDetection{Consecutive_5Xx: u32(0), ConsecutiveGatewayFailure: u32(2),
			EnforcingConsecutiveGatewayFailure: u32(100), MaxEjectionPercent: u32(100)},
		outcomes: []Outcome{err503, err500, err503},
	}, {
		name: "split: connect failures count as local origin failures",
		od: &clusterv3.OutlierDetection{SplitExternalLocalOriginErrors: true, ConsecutiveLocalOriginFailure: u32(2),
			MaxEjectionPercent: u32(100)},
		outcomes: []Outcome{connectFailed, reset},
		want:     true,
	}, {
		name: "split: any response clears local origin failures",
		od: &clusterv3.OutlierDetection{SplitExternalLocalOriginErrors: true, ConsecutiveLocalOriginFailure: u32(2),
			MaxEjectionPercent: u32(100)},
		outcomes: []Outcome{connectFailed, err500, connectFailed},
	}, {
		name: "split: local origin failures do not count as 5xx",
		od: &clusterv3.OutlierDetection{SplitExternalLocalOriginErrors: true, Consecutive_5Xx: u32(3),
			MaxEjectionPercent: u32(100)},
		outcomes: []Outcome{err500, connectFailed, err500},
	}, {
		name: "split: enforcing_consecutive_local_origin_failure 0 only detects",
		od: &clusterv3.OutlierDetection{SplitExternalLocalOriginErrors: true, ConsecutiveLocalOriginFailure: u32(1),
			EnforcingConsecutiveLocalOriginFailure: u32(0), MaxEjectionPercent: u32(100)},
		outcomes: []Outcome{connectFailed, connectFailed},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, c := twoHosts(t, tt.od)
			h := host(t, c, sick)
			for _, o := range tt.outcomes {
				serve(h, 1, o)
			}
			if got := ejected(t, f); got != tt.want {
				t.Errorf("ejected = %v, want %v", got, tt.want)
			}
			if tt.want {
				if got := pickCounts(t, c, 10); got[sick] != 0 {
					t.Errorf("the ejected host was picked %d times", got[sick])
				}
			}
		})
	}
}

func TestEnforcingPercentDrawsRandom(t *testing.T) {
	od := &clusterv3.OutlierDetection{Consecutive_5Xx: u32(1), EnforcingConsecutive_5Xx: u32(50), MaxEjectionPercent: u32(100)}
	for draw, want := range map[int]bool{49: true, 50: false} {
		t.Run(fmt.Sprint(draw), func(t *testing.T) {
			f, c := twoHosts(t, od)
			f.rand.values = []int{draw}
			serve(host(t, c, sick), 1, err500)
			if got := ejected(t, f); got != want {
				t.Errorf("draw %d: ejected = %v, want %v", draw, got, want)
			}
		})
	}
}

// TestEjectionTime follows one host through ejections: each step waits in
// service, fails the host once, checks how long it is out and lets it return.
func TestEjectionTime(t *testing.T) {
	type step struct {
		wait    time.Duration // in service before failing
		wantOut time.Duration // the ejection that follows
	}
	tests := []struct {
		name   string
		od     *clusterv3.OutlierDetection
		jitter []int
		steps  []step
	}{{
		name: "grows with each ejection: 30s, 60s, 90s",
		od:   &clusterv3.OutlierDetection{Consecutive_5Xx: u32(1), MaxEjectionPercent: u32(100)},
		steps: []step{
			{wait: 0, wantOut: 30 * time.Second},
			{wait: 0, wantOut: 60 * time.Second},
			{wait: 0, wantOut: 90 * time.Second},
		},
	}, {
		name: "capped by max_ejection_time",
		od: &clusterv3.OutlierDetection{Consecutive_5Xx: u32(1), MaxEjectionPercent: u32(100),
			BaseEjectionTime: seconds(10), MaxEjectionTime: seconds(25)},
		steps: []step{
			{wait: 0, wantOut: 10 * time.Second},
			{wait: 0, wantOut: 20 * time.Second},
			{wait: 0, wantOut: 25 * time.Second},
			{wait: 0, wantOut: 25 * time.Second},
		},
	}, {
		name: "shrinks by one base for every interval spent back in service",
		od:   &clusterv3.OutlierDetection{Consecutive_5Xx: u32(1), MaxEjectionPercent: u32(100), Interval: seconds(10)},
		steps: []step{
			{wait: 0, wantOut: 30 * time.Second},
			{wait: 0, wantOut: 60 * time.Second},
			{wait: 9 * time.Second, wantOut: 90 * time.Second},  // less than an interval: no change
			{wait: 20 * time.Second, wantOut: 60 * time.Second}, // two intervals: 3-2, then +1
			{wait: 35 * time.Second, wantOut: 30 * time.Second}, // three intervals: 2-3 stops at 0, then +1
		},
	}, {
		name:   "plus a random jitter",
		od:     &clusterv3.OutlierDetection{Consecutive_5Xx: u32(1), MaxEjectionPercent: u32(100), MaxEjectionTimeJitter: seconds(1)},
		jitter: []int{250},
		steps:  []step{{wait: 0, wantOut: 30*time.Second + 250*time.Millisecond}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, c := twoHosts(t, tt.od)
			f.rand.values = tt.jitter
			h := host(t, c, sick)
			for i, s := range tt.steps {
				f.clock.Advance(s.wait)
				if ejected(t, f) {
					t.Fatalf("step %d: still ejected after waiting %s", i, s.wait)
				}
				serve(h, 1, err500)
				got := hostStatus(t, f.set, testCluster, sick)
				if out := got.EjectedUntil.Sub(f.clock.Now()); out != s.wantOut {
					t.Fatalf("step %d: ejected for %s, want %s", i, out, s.wantOut)
				}
				if got.Ejections != uint64(i+1) {
					t.Errorf("step %d: ejections = %d, want %d", i, got.Ejections, i+1)
				}
				f.clock.Advance(s.wantOut - time.Millisecond)
				if counts := pickCounts(t, c, 4); counts[sick] != 0 {
					t.Fatalf("step %d: picked %d times a millisecond before its return", i, counts[sick])
				}
				f.clock.Advance(time.Millisecond)
				if counts := pickCounts(t, c, 4); counts[sick] != 2 {
					t.Fatalf("step %d: picked %d of 4 times once back, want 2", i, counts[sick])
				}
			}
		})
	}
}

func TestReturnClearsCounts(t *testing.T) {
	f, c := twoHosts(t, &clusterv3.OutlierDetection{Consecutive_5Xx: u32(2), ConsecutiveGatewayFailure: u32(3),
		EnforcingConsecutiveGatewayFailure: u32(100), MaxEjectionPercent: u32(100)})
	h := host(t, c, sick)
	serve(h, 2, err503) // 5xx ejects at 2; the gateway count stands at 2
	f.clock.Advance(30 * time.Second)
	serve(h, 1, err503)
	if ejected(t, f) {
		t.Error("one 503 after returning ejected the host: its counts were not cleared")
	}
}

func TestMaxEjectionPercent(t *testing.T) {
	tests := []struct {
		name         string
		hosts        int
		percent      *wrapperspb.UInt32Value
		alwaysOne    bool
		wantEjected  int
		wantOverflow uint64
	}{
		{name: "10% of 10 hosts: one", hosts: 10, wantEjected: 1, wantOverflow: 9},
		{name: "10% of 5 hosts: none (Envoy counts the ejection itself)", hosts: 5, wantEjected: 0, wantOverflow: 5},
		{name: "always_eject_one_host: one of 5", hosts: 5, alwaysOne: true, wantEjected: 1, wantOverflow: 4},
		{name: "50% of 4 hosts: two", hosts: 4, percent: u32(50), wantEjected: 2, wantOverflow: 2},
		{name: "100%: all", hosts: 3, percent: u32(100), wantEjected: 3},
		{name: "0%: none, even with always_eject_one_host off", hosts: 3, percent: u32(0), wantEjected: 0, wantOverflow: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			od := &clusterv3.OutlierDetection{Consecutive_5Xx: u32(1), MaxEjectionPercent: tt.percent}
			if tt.alwaysOne {
				od.AlwaysEjectOneHost = wrapperspb.Bool(true)
			}
			var eps []*endpointv3.LbEndpoint
			for i := range tt.hosts {
				eps = append(eps, endpointAt(fmt.Sprintf("10.0.0.%d:80", i+1)))
			}
			c := f.push(edsCluster(testCluster, withOutlier(od)), assignment(testCluster, eps...))
			for i := range tt.hosts {
				serve(host(t, c, fmt.Sprintf("10.0.0.%d:80", i+1)), 1, err500)
			}
			cs := clusterStatus(t, f.set, testCluster)
			if cs.EjectionsActive != tt.wantEjected || cs.EjectionsOverflow != tt.wantOverflow {
				t.Errorf("ejected %d (overflow %d), want %d (overflow %d)", cs.EjectionsActive, cs.EjectionsOverflow, tt.wantEjected, tt.wantOverflow)
			}
		})
	}
}

func TestMaxEjectionPercentFreesUpOnReturn(t *testing.T) {
	f, c := twoHosts(t, &clusterv3.OutlierDetection{Consecutive_5Xx: u32(1), MaxEjectionPercent: u32(50)})
	serve(host(t, c, sick), 1, err500)
	serve(host(t, c, sound), 1, err500)
	if got := clusterStatus(t, f.set, testCluster).EjectionsActive; got != 1 {
		t.Fatalf("ejections active = %d, want 1 (50%% of 2)", got)
	}
	f.clock.Advance(30 * time.Second)
	serve(host(t, c, sound), 1, err500)
	if !hostStatus(t, f.set, testCluster, sound).EjectedUntil.After(f.clock.Now()) {
		t.Error("the second host was not ejected once the first returned")
	}
}

func TestNoOutlierDetectionWithoutConfig(t *testing.T) {
	f := newFixture(t)
	c := f.push(edsCluster(testCluster), assignment(testCluster, endpointAt(sick), endpointAt(sound)))
	serve(host(t, c, sick), 20, err500)
	hs := hostStatus(t, f.set, testCluster, sick)
	if !hs.EjectedUntil.IsZero() || hs.Failures != 20 {
		t.Errorf("host = %+v, want 20 failures and no ejection", hs)
	}
}

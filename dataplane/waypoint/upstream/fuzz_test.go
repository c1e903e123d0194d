package upstream

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// FuzzUpdate decodes a Cluster and a ClusterLoadAssignment, applies them and
// drives the result: whatever the bytes, nothing panics and the dump
// marshals.
func FuzzUpdate(f *testing.F) {
	seeds := []struct {
		cluster *clusterv3.Cluster
		load    *endpointv3.ClusterLoadAssignment
	}{
		{edsCluster(testCluster), assignment(testCluster, endpointAt("10.0.0.1:80"), endpointAt("10.0.0.2:80"))},
		{edsCluster(testCluster, withLbPolicy(clusterv3.Cluster_LEAST_REQUEST),
			withOutlier(&clusterv3.OutlierDetection{Consecutive_5Xx: u32(1), MaxEjectionPercent: u32(100),
				MaxEjectionTimeJitter: seconds(1), SplitExternalLocalOriginErrors: true, AlwaysEjectOneHost: wrapperspb.Bool(true)}),
			withThresholds(&clusterv3.CircuitBreakers_Thresholds{MaxRequests: u32(2), RetryBudget: &clusterv3.CircuitBreakers_Thresholds_RetryBudget{
				BudgetPercent: &typev3.Percent{Value: 100}}}),
			withPanicThreshold(80)),
			assignment(testCluster, endpointAt("10.0.0.1:80"),
				endpointWith("[fd00::1]:8080", corev3.HealthStatus_DRAINING, map[string]any{"tunnel": "none", "workload": "db", "canonical_service": "db", "cluster": "Kubernetes"}),
				endpointWith("10.0.0.3:80", corev3.HealthStatus_UNKNOWN, nil))},
		{edsCluster(testCluster, withLbPolicy(clusterv3.Cluster_RANDOM)), assignment(testCluster)},
	}
	for _, s := range seeds {
		cb, err := proto.Marshal(s.cluster)
		if err != nil {
			f.Fatal(err)
		}
		lb, err := proto.Marshal(s.load)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(cb, lb)
	}
	outcomes := []Outcome{{Status: 200}, {Status: 503}, {Status: 500}, {ConnectFailure: true}, {Reset: true}, {}}
	f.Fuzz(func(t *testing.T, clusterBytes, loadBytes []byte) {
		c := &clusterv3.Cluster{}
		cla := &endpointv3.ClusterLoadAssignment{}
		if proto.Unmarshal(clusterBytes, c) != nil || proto.Unmarshal(loadBytes, cla) != nil {
			return
		}
		// File the assignment where the cluster looks for it.
		cla.ClusterName = c.GetName()
		if name := c.GetEdsClusterConfig().GetServiceName(); name != "" {
			cla.ClusterName = name
		}
		clock := newFakeClock()
		random := rand.New(rand.NewPCG(uint64(len(clusterBytes)), uint64(len(loadBytes))))
		set := NewSet(Options{Now: clock.Now, Rand: random.IntN})
		clusters := map[string]*clusterv3.Cluster{c.GetName(): c}
		loads := map[string]*endpointv3.ClusterLoadAssignment{cla.GetClusterName(): cla}
		if set.Update(clusters, loads) != nil {
			return
		}
		for round := range 2 { // the second round runs after a re-push
			cluster := set.Cluster(c.GetName())
			for i := range 40 {
				done, err := cluster.StartRequest()
				if err != nil {
					continue
				}
				if h, err := cluster.Pick(); err == nil {
					h.Begin()
					h.End(outcomes[(i+round)%len(outcomes)])
				}
				if retryDone, err := cluster.StartRetry(); err == nil {
					retryDone()
				}
				done()
				clock.Advance(time.Duration(i) * time.Second)
			}
			if _, err := json.Marshal(set.Dump()); err != nil {
				t.Fatal(err)
			}
			if err := set.Update(clusters, loads); err != nil {
				t.Fatalf("re-push of an accepted config failed: %v", err)
			}
		}
	})
}

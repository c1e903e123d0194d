package upstream

import (
	"net/netip"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

const testCluster = "outbound|8080||reviews.shop.svc.cluster.local"

// fakeClock is a settable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// scriptedRand returns its values in turn (each reduced mod n), then 0.
type scriptedRand struct {
	mu     sync.Mutex
	values []int
}

func (r *scriptedRand) Rand(n int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.values) == 0 {
		return 0
	}
	v := r.values[0]
	r.values = r.values[1:]
	return v % n
}

// edsCluster is a minimal valid EDS cluster, changed by the edits.
func edsCluster(name string, edits ...func(*clusterv3.Cluster)) *clusterv3.Cluster {
	c := &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{
			ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
			ResourceApiVersion:    corev3.ApiVersion_V3,
		}},
		ConnectTimeout: durationpb.New(2 * time.Second),
	}
	for _, edit := range edits {
		edit(c)
	}
	return c
}

func withLbPolicy(p clusterv3.Cluster_LbPolicy) func(*clusterv3.Cluster) {
	return func(c *clusterv3.Cluster) { c.LbPolicy = p }
}

func withOutlier(od *clusterv3.OutlierDetection) func(*clusterv3.Cluster) {
	return func(c *clusterv3.Cluster) { c.OutlierDetection = od }
}

func withThresholds(t *clusterv3.CircuitBreakers_Thresholds) func(*clusterv3.Cluster) {
	return func(c *clusterv3.Cluster) {
		c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{t}}
	}
}

func withPanicThreshold(percent float64) func(*clusterv3.Cluster) {
	return func(c *clusterv3.Cluster) {
		c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: percent}}
	}
}

func u32(v uint32) *wrapperspb.UInt32Value { return wrapperspb.UInt32(v) }

func seconds(s int) *durationpb.Duration { return durationpb.New(time.Duration(s) * time.Second) }

// endpointAt is an endpoint reached over HBONE, healthy.
func endpointAt(addr string) *endpointv3.LbEndpoint {
	return endpointWith(addr, corev3.HealthStatus_HEALTHY, map[string]any{
		"tunnel": "hbone", "identity": "spiffe://cluster.local/ns/shop/sa/reviews",
	})
}

// endpointWith builds an endpoint with a health status and the
// ambientmesh.dev/endpoint metadata (none when md is nil).
func endpointWith(addr string, health corev3.HealthStatus, md map[string]any) *endpointv3.LbEndpoint {
	ap := netip.MustParseAddrPort(addr)
	lbe := &endpointv3.LbEndpoint{
		HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address:       ap.Addr().String(),
				PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(ap.Port())},
			}}},
		}},
		HealthStatus: health,
	}
	if md != nil {
		s, err := structpb.NewStruct(md)
		if err != nil {
			panic(err)
		}
		lbe.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{EndpointMetadataKey: s}}
	}
	return lbe
}

func assignment(name string, eps ...*endpointv3.LbEndpoint) *endpointv3.ClusterLoadAssignment {
	return &endpointv3.ClusterLoadAssignment{
		ClusterName: name,
		Endpoints:   []*endpointv3.LocalityLbEndpoints{{LbEndpoints: eps}},
	}
}

// fixture is a Set with a fake clock and scripted randomness.
type fixture struct {
	t     *testing.T
	set   *Set
	clock *fakeClock
	rand  *scriptedRand
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{t: t, clock: newFakeClock(), rand: &scriptedRand{}}
	f.set = NewSet(Options{Now: f.clock.Now, Rand: f.rand.Rand})
	return f
}

// push applies one cluster and its endpoints, which must be valid protos.
func (f *fixture) push(c *clusterv3.Cluster, cla *endpointv3.ClusterLoadAssignment) *Cluster {
	f.t.Helper()
	clusters := map[string]*clusterv3.Cluster{c.GetName(): c}
	loads := map[string]*endpointv3.ClusterLoadAssignment{}
	if cla != nil {
		loads[cla.GetClusterName()] = cla
	}
	f.pushAll(clusters, loads)
	return f.set.Cluster(c.GetName())
}

func (f *fixture) pushAll(clusters map[string]*clusterv3.Cluster, loads map[string]*endpointv3.ClusterLoadAssignment) {
	f.t.Helper()
	requireValid(f.t, clusters, loads)
	if err := f.set.Update(clusters, loads); err != nil {
		f.t.Fatalf("Update: %v", err)
	}
}

// requireValid checks the test's own protos against their generated rules.
func requireValid(t *testing.T, clusters map[string]*clusterv3.Cluster, loads map[string]*endpointv3.ClusterLoadAssignment) {
	t.Helper()
	for _, c := range clusters {
		if err := c.ValidateAll(); err != nil {
			t.Fatalf("test cluster is not valid: %v", err)
		}
	}
	for _, cla := range loads {
		if err := cla.ValidateAll(); err != nil {
			t.Fatalf("test load assignment is not valid: %v", err)
		}
	}
}

// host finds a cluster's host by address.
func host(t *testing.T, c *Cluster, addr string) *Host {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, h := range c.hosts {
		if h.Addr.String() == addr {
			return h
		}
	}
	t.Fatalf("no host %s in %s", addr, c.Name())
	return nil
}

// serve runs n requests on h that end with o.
func serve(h *Host, n int, o Outcome) {
	for range n {
		h.Begin()
		h.End(o)
	}
}

// pickCounts picks n times and counts the addresses chosen.
func pickCounts(t *testing.T, c *Cluster, n int) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for range n {
		h, err := c.Pick()
		if err != nil {
			t.Fatalf("Pick: %v", err)
		}
		counts[h.Addr.String()]++
	}
	return counts
}

// hostStatus returns the dump of one host.
func hostStatus(t *testing.T, s *Set, cluster, addr string) HostStatus {
	t.Helper()
	for _, cs := range s.Dump() {
		if cs.Name != cluster {
			continue
		}
		for _, hs := range cs.Hosts {
			if hs.Address == addr {
				return hs
			}
		}
	}
	t.Fatalf("no host %s in the dump of %s", addr, cluster)
	return HostStatus{}
}

func clusterStatus(t *testing.T, s *Set, cluster string) ClusterStatus {
	t.Helper()
	for _, cs := range s.Dump() {
		if cs.Name == cluster {
			return cs
		}
	}
	t.Fatalf("no cluster %s in the dump", cluster)
	return ClusterStatus{}
}

package upstream

import (
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/ambientmesh/ambient-operator/internal/spiffe"
)

func TestUpdateKeepsHostState(t *testing.T) {
	f := newFixture(t)
	od := withOutlier(&clusterv3.OutlierDetection{Consecutive_5Xx: u32(1), MaxEjectionPercent: u32(100)})
	c := f.push(edsCluster(testCluster, od),
		assignment(testCluster, endpointAt("10.0.0.1:80"), endpointAt("10.0.0.2:80"), endpointAt("10.0.0.3:80")))
	kept := host(t, c, "10.0.0.1:80")
	kept.Begin()
	serve(kept, 2, ok200)
	serve(host(t, c, "10.0.0.2:80"), 1, err500) // ejected
	removed := host(t, c, "10.0.0.3:80")
	removed.Begin()
	requestDone, err := c.StartRequest()
	if err != nil {
		t.Fatal(err)
	}
	ejectedUntil := hostStatus(t, f.set, testCluster, "10.0.0.2:80").EjectedUntil

	// Re-push: .3 leaves, .4 arrives, .1 changes its identity.
	changed := endpointWith("10.0.0.1:80", corev3.HealthStatus_HEALTHY, map[string]any{
		"tunnel": "hbone", "identity": "spiffe://cluster.local/ns/shop/sa/reviews-v2",
	})
	c2 := f.push(edsCluster(testCluster, od),
		assignment(testCluster, changed, endpointAt("10.0.0.2:80"), endpointAt("10.0.0.4:80")))
	if c2 != c {
		t.Fatal("the re-pushed cluster is a new object: done functions and hosts handed out would be lost")
	}

	cs := clusterStatus(t, f.set, testCluster)
	var addrs []string
	for _, hs := range cs.Hosts {
		addrs = append(addrs, hs.Address)
	}
	if got, want := strings.Join(addrs, " "), "10.0.0.1:80 10.0.0.2:80 10.0.0.4:80"; got != want {
		t.Errorf("hosts = %s, want %s", got, want)
	}
	if hs := hostStatus(t, f.set, testCluster, "10.0.0.1:80"); hs.Active != 1 || hs.Successes != 2 ||
		hs.Identity != "spiffe://cluster.local/ns/shop/sa/reviews-v2" {
		t.Errorf("kept host = %+v, want 1 active, 2 successes and the new identity", hs)
	}
	if hs := hostStatus(t, f.set, testCluster, "10.0.0.2:80"); !hs.EjectedUntil.Equal(ejectedUntil) || hs.Ejections != 1 {
		t.Errorf("ejected host = %+v, want still ejected until %s", hs, ejectedUntil)
	}
	if cs.RqActive != 1 {
		t.Errorf("rq_active = %d, want the request started before the update", cs.RqActive)
	}

	// Requests begun before the update end on either Host value.
	kept.End(ok200)
	removed.End(err500)
	requestDone()
	if hs := hostStatus(t, f.set, testCluster, "10.0.0.1:80"); hs.Active != 0 || hs.Successes != 3 {
		t.Errorf("kept host after End on the old Host = %+v, want 0 active, 3 successes", hs)
	}
	if got := clusterStatus(t, f.set, testCluster).RqActive; got != 0 {
		t.Errorf("rq_active = %d after done, want 0", got)
	}

	// A removed host that comes back starts afresh.
	f.push(edsCluster(testCluster, od),
		assignment(testCluster, endpointAt("10.0.0.1:80"), endpointAt("10.0.0.2:80"), endpointAt("10.0.0.3:80")))
	if hs := hostStatus(t, f.set, testCluster, "10.0.0.3:80"); hs.Active != 0 || hs.Failures != 0 {
		t.Errorf("re-added host = %+v, want fresh state", hs)
	}
}

func TestUpdateReplacesClusters(t *testing.T) {
	f := newFixture(t)
	const other = "outbound|9090||ratings.shop.svc.cluster.local"
	f.pushAll(map[string]*clusterv3.Cluster{testCluster: edsCluster(testCluster), other: edsCluster(other)},
		map[string]*endpointv3.ClusterLoadAssignment{testCluster: assignment(testCluster, endpointAt("10.0.0.1:80"))})
	if c := f.set.Cluster(other); c == nil {
		t.Fatal("cluster without a load assignment is missing")
	} else if _, err := c.Pick(); !errors.Is(err, ErrNoHealthyUpstream) {
		t.Errorf("cluster without a load assignment: Pick err = %v, want ErrNoHealthyUpstream", err)
	}
	if got := []string{f.set.Dump()[0].Name, f.set.Dump()[1].Name}; got[0] != testCluster || got[1] != other {
		t.Errorf("dump order = %v, want sorted by name", got)
	}

	f.pushAll(map[string]*clusterv3.Cluster{other: edsCluster(other)}, nil)
	if f.set.Cluster(testCluster) != nil {
		t.Error("a cluster left out of the update is still there")
	}
	if f.set.Cluster("outbound|1||nope") != nil {
		t.Error("unknown cluster is not nil")
	}
}

func TestUpdateFindsEndpointsByServiceName(t *testing.T) {
	f := newFixture(t)
	c := edsCluster(testCluster)
	c.EdsClusterConfig.ServiceName = "reviews-endpoints"
	f.pushAll(map[string]*clusterv3.Cluster{testCluster: c},
		map[string]*endpointv3.ClusterLoadAssignment{"reviews-endpoints": assignment("reviews-endpoints", endpointAt("10.0.0.1:80"))})
	h, err := f.set.Cluster(testCluster).Pick()
	if err != nil || h.Addr.String() != "10.0.0.1:80" {
		t.Errorf("Pick = %v, %v; want 10.0.0.1:80 from the service_name's assignment", h, err)
	}
}

func TestUpdateIsAllOrNothing(t *testing.T) {
	f := newFixture(t)
	f.push(edsCluster(testCluster), assignment(testCluster, endpointAt("10.0.0.1:80")))
	const other = "outbound|9090||ratings.shop.svc.cluster.local"
	bad := edsCluster(other, withLbPolicy(clusterv3.Cluster_MAGLEV))
	err := f.set.Update(map[string]*clusterv3.Cluster{testCluster: edsCluster(testCluster), other: bad},
		map[string]*endpointv3.ClusterLoadAssignment{testCluster: assignment(testCluster, endpointAt("10.0.0.9:80"))})
	if err == nil || !strings.Contains(err.Error(), other) {
		t.Fatalf("err = %v, want one naming %s", err, other)
	}
	h, err := f.set.Cluster(testCluster).Pick()
	if err != nil || h.Addr.String() != "10.0.0.1:80" {
		t.Errorf("after a rejected update Pick = %v, %v; want the old endpoint 10.0.0.1:80", h, err)
	}
	if f.set.Cluster(other) != nil {
		t.Error("the rejected cluster was applied")
	}
}

func TestEndpointMetadata(t *testing.T) {
	reviews := spiffe.MustNew("cluster.local", "shop", "reviews")
	tests := []struct {
		name         string
		md           map[string]any // nil: no metadata
		wantTunnel   Tunnel
		wantIdentity spiffe.ID
		wantWorkload Workload
		wantErr      string
	}{
		{name: "hbone with identity", md: map[string]any{"tunnel": "hbone", "identity": reviews.String()},
			wantTunnel: TunnelHBONE, wantIdentity: reviews},
		{name: "none", md: map[string]any{"tunnel": "none"}, wantTunnel: TunnelNone},
		{name: "none may name an identity", md: map[string]any{"tunnel": "none", "identity": reviews.String()},
			wantTunnel: TunnelNone, wantIdentity: reviews},
		{name: "no metadata is plain TCP", md: nil, wantTunnel: TunnelNone},
		{name: "unknown fields are ignored", md: map[string]any{"tunnel": "none", "zone": "a"}, wantTunnel: TunnelNone},
		{name: "hbone without identity", md: map[string]any{"tunnel": "hbone"},
			wantErr: "identity is required with tunnel hbone"},
		{name: "hbone with an empty identity", md: map[string]any{"tunnel": "hbone", "identity": ""},
			wantErr: "identity is required with tunnel hbone"},
		{name: "identity not SPIFFE", md: map[string]any{"tunnel": "hbone", "identity": "https://cluster.local/ns/shop/sa/reviews"},
			wantErr: "identity: spiffe"},
		{name: "identity not a mesh identity", md: map[string]any{"tunnel": "hbone", "identity": "spiffe://cluster.local/reviews"},
			wantErr: "identity: spiffe"},
		{name: "identity not a string", md: map[string]any{"tunnel": "hbone", "identity": 7.0},
			wantErr: "identity must be a string"},
		{name: "unknown tunnel", md: map[string]any{"tunnel": "h2c"}, wantErr: `tunnel "h2c"`},
		{name: "missing tunnel", md: map[string]any{"identity": reviews.String()}, wantErr: `tunnel ""`},
		{name: "tunnel not a string", md: map[string]any{"tunnel": true}, wantErr: "tunnel must be a string"},
		{name: "telemetry names", md: map[string]any{"tunnel": "hbone", "identity": reviews.String(),
			"workload": "reviews-v2", "canonical_service": "reviews", "canonical_revision": "v2", "app": "reviews", "version": "v2", "cluster": "east"},
			wantTunnel: TunnelHBONE, wantIdentity: reviews,
			wantWorkload: Workload{Name: "reviews-v2", CanonicalService: "reviews", CanonicalRevision: "v2", App: "reviews", Version: "v2", Cluster: "east"}},
		{name: "telemetry name not a string", md: map[string]any{"tunnel": "none", "canonical_service": 1.0},
			wantErr: "canonical_service must be a string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			cla := assignment(testCluster, endpointWith("10.0.0.1:80", corev3.HealthStatus_HEALTHY, tt.md))
			clusters := map[string]*clusterv3.Cluster{testCluster: edsCluster(testCluster)}
			loads := map[string]*endpointv3.ClusterLoadAssignment{testCluster: cla}
			requireValid(t, clusters, loads)
			err := f.set.Update(clusters, loads)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), EndpointMetadataKey) {
					t.Fatalf("err = %v, want one about %s containing %q", err, EndpointMetadataKey, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			h, err := f.set.Cluster(testCluster).Pick()
			if err != nil {
				t.Fatal(err)
			}
			if h.Tunnel != tt.wantTunnel || h.PeerID != tt.wantIdentity || h.Identity != tt.wantIdentity.String() {
				t.Errorf("host = %s %s %q, want %s %v", h.Tunnel, h.PeerID, h.Identity, tt.wantTunnel, tt.wantIdentity)
			}
			if h.Workload != tt.wantWorkload {
				t.Errorf("host workload = %+v, want %+v", h.Workload, tt.wantWorkload)
			}
		})
	}
}

func TestUpdateRejects(t *testing.T) {
	const other = "outbound|9090||ratings.shop.svc.cluster.local"
	socket := func(sa *corev3.SocketAddress) *endpointv3.LbEndpoint {
		lbe := endpointAt("10.0.0.1:80")
		lbe.GetEndpoint().Address = &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: sa}}
		return lbe
	}
	weighted := func(addr string, w uint32) *endpointv3.LbEndpoint {
		lbe := endpointAt(addr)
		lbe.LoadBalancingWeight = u32(w)
		return lbe
	}
	tests := []struct {
		name         string
		cluster      *clusterv3.Cluster
		load         *endpointv3.ClusterLoadAssignment
		invalidProto bool // the one case that shows ValidateAll runs
		wantErr      string
	}{
		{name: "fails ValidateAll", invalidProto: true,
			cluster: edsCluster(testCluster, withLbPolicy(clusterv3.Cluster_LbPolicy(99))),
			wantErr: "LbPolicy"},
		{name: "STATIC cluster", cluster: edsCluster(testCluster, func(c *clusterv3.Cluster) {
			c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}
		}), wantErr: "type must be EDS"},
		{name: "RING_HASH", cluster: edsCluster(testCluster, withLbPolicy(clusterv3.Cluster_RING_HASH)),
			wantErr: "lb_policy RING_HASH is not supported"},
		{name: "load_balancing_policy", cluster: edsCluster(testCluster, func(c *clusterv3.Cluster) {
			c.LoadBalancingPolicy = &clusterv3.LoadBalancingPolicy{}
		}), wantErr: "load_balancing_policy"},
		{name: "subsets", cluster: edsCluster(testCluster, func(c *clusterv3.Cluster) {
			c.LbSubsetConfig = &clusterv3.Cluster_LbSubsetConfig{SubsetSelectors: []*clusterv3.Cluster_LbSubsetConfig_LbSubsetSelector{{Keys: []string{"version"}}}}
		}), wantErr: "lb_subset_config"},
		{name: "transport socket", cluster: edsCluster(testCluster, func(c *clusterv3.Cluster) {
			c.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls"}
		}), wantErr: "transport sockets"},
		{name: "max_ejection_time below base", cluster: edsCluster(testCluster, withOutlier(&clusterv3.OutlierDetection{
			BaseEjectionTime: seconds(60), MaxEjectionTime: seconds(30)})), wantErr: "max_ejection_time"},
		{name: "cluster under another name", cluster: edsCluster(other), wantErr: "different name"},
		{name: "load assignment under another name", load: assignment(other, endpointAt("10.0.0.1:80")),
			wantErr: "different name"},
		{name: "priority 1", load: func() *endpointv3.ClusterLoadAssignment {
			cla := assignment(testCluster, endpointAt("10.0.0.1:80"))
			cla.Endpoints[0].Priority = 1
			return cla
		}(), wantErr: "priority 1"},
		{name: "differing weights", load: assignment(testCluster, weighted("10.0.0.1:80", 2), weighted("10.0.0.2:80", 3)),
			wantErr: "weighted endpoints"},
		{name: "named endpoint", load: assignment(testCluster, &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_EndpointName{EndpointName: "a"}}), wantErr: "named endpoints"},
		{name: "hostname address", load: assignment(testCluster, socket(&corev3.SocketAddress{
			Address: "reviews.shop", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 80}})), wantErr: "not an IP"},
		{name: "named port", load: assignment(testCluster, socket(&corev3.SocketAddress{
			Address: "10.0.0.1", PortSpecifier: &corev3.SocketAddress_NamedPort{NamedPort: "http"}})), wantErr: "named_port"},
		{name: "port 0", load: assignment(testCluster, socket(&corev3.SocketAddress{
			Address: "10.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 0}})),
			wantErr: "port_value 0"},
		{name: "UDP", load: assignment(testCluster, socket(&corev3.SocketAddress{Protocol: corev3.SocketAddress_UDP,
			Address: "10.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 53}})), wantErr: "only TCP"},
		{name: "pipe address", load: func() *endpointv3.ClusterLoadAssignment {
			lbe := endpointAt("10.0.0.1:80")
			lbe.GetEndpoint().Address = &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: "/tmp/s"}}}
			return assignment(testCluster, lbe)
		}(), wantErr: "socket_address"},
		{name: "metadata tunnel", load: assignment(testCluster, endpointWith("10.0.0.1:80", corev3.HealthStatus_HEALTHY,
			map[string]any{"tunnel": "hbone"})), wantErr: "endpoints[0].lb_endpoints[0]: metadata"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			cluster := tt.cluster
			if cluster == nil {
				cluster = edsCluster(testCluster)
			}
			clusters := map[string]*clusterv3.Cluster{testCluster: cluster}
			loads := map[string]*endpointv3.ClusterLoadAssignment{}
			if tt.load != nil {
				loads[testCluster] = tt.load
			}
			if !tt.invalidProto {
				requireValid(t, clusters, loads)
			}
			err := f.set.Update(clusters, loads)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
			}
			if len(f.set.Dump()) != 0 {
				t.Error("a rejected update applied something")
			}
		})
	}
}

func TestDuplicateAddressFirstWins(t *testing.T) {
	f := newFixture(t)
	c := f.push(edsCluster(testCluster), assignment(testCluster,
		endpointAt("10.0.0.1:80"),
		endpointWith("10.0.0.1:80", corev3.HealthStatus_HEALTHY, map[string]any{"tunnel": "none"})))
	if cs := clusterStatus(t, f.set, testCluster); len(cs.Hosts) != 1 || cs.Hosts[0].Tunnel != "hbone" {
		t.Errorf("hosts = %+v, want the first listing only", cs.Hosts)
	}
	if c.ConnectTimeout() != 2*time.Second {
		t.Errorf("ConnectTimeout = %s, want the cluster's 2s", c.ConnectTimeout())
	}
}

func TestDumpJSON(t *testing.T) {
	f := newFixture(t)
	c := f.push(edsCluster(testCluster, withOutlier(&clusterv3.OutlierDetection{Consecutive_5Xx: u32(1), MaxEjectionPercent: u32(100)})),
		assignment(testCluster, endpointAt("10.0.0.10:80"), endpointAt("10.0.0.9:80")))
	done, _ := c.StartRequest()
	defer done()
	serve(host(t, c, "10.0.0.9:80"), 1, err500)
	b, err := json.Marshal(f.set.Dump())
	if err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	cluster := got[0]
	for key, want := range map[string]any{"name": testCluster, "lb_policy": "ROUND_ROBIN", "rq_active": 1.0, "rq_total": 1.0,
		"rq_overflow": 0.0, "cx_active": 0.0, "retries": 0.0, "retry_overflow": 0.0, "ejections_active": 1.0} {
		if cluster[key] != want {
			t.Errorf("%s = %v, want %v", key, cluster[key], want)
		}
	}
	hosts := cluster["hosts"].([]any)
	first, second := hosts[0].(map[string]any), hosts[1].(map[string]any)
	if first["address"] != "10.0.0.9:80" || second["address"] != "10.0.0.10:80" {
		t.Errorf("hosts not sorted by address: %v, %v", first["address"], second["address"])
	}
	wantUntil := f.clock.Now().Add(30 * time.Second).Format(time.RFC3339Nano)
	if first["ejected_until"] != wantUntil || first["failures"] != 1.0 || first["ejections"] != 1.0 || first["health"] != "HEALTHY" {
		t.Errorf("ejected host = %v, want ejected until %s after 1 failure", first, wantUntil)
	}
	if _, ok := second["ejected_until"]; ok {
		t.Errorf("healthy host shows ejected_until: %v", second)
	}
}

// TestConcurrentUse runs the proxy core's calls and updates at once (run
// with -race).
func TestConcurrentUse(t *testing.T) {
	set := NewSet(Options{})
	od := withOutlier(&clusterv3.OutlierDetection{Consecutive_5Xx: u32(2), MaxEjectionPercent: u32(50), BaseEjectionTime: durationpb.New(time.Millisecond)})
	push := func(addrs ...string) {
		var eps []*endpointv3.LbEndpoint
		for _, a := range addrs {
			eps = append(eps, endpointAt(a))
		}
		if err := set.Update(map[string]*clusterv3.Cluster{testCluster: edsCluster(testCluster, od, withLbPolicy(clusterv3.Cluster_LEAST_REQUEST))},
			map[string]*endpointv3.ClusterLoadAssignment{testCluster: assignment(testCluster, eps...)}); err != nil {
			t.Error(err)
		}
	}
	push("10.0.0.1:80", "10.0.0.2:80")
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 500 {
				c := set.Cluster(testCluster)
				done, err := c.StartRequest()
				if err != nil {
					continue
				}
				if h, err := c.Pick(); err == nil {
					h.Begin()
					h.End(Outcome{Status: 200 + 300*((i+w)%2)})
				}
				done()
			}
		})
	}
	wg.Go(func() {
		for i := range 50 {
			if i%2 == 0 {
				push("10.0.0.1:80", "10.0.0.3:80")
			} else {
				push("10.0.0.1:80", "10.0.0.2:80")
			}
			set.Dump()
		}
	})
	wg.Wait()
	if cs := set.Dump()[0]; cs.RqActive != 0 {
		t.Errorf("rq_active = %d after all requests ended", cs.RqActive)
	}
}

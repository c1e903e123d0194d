package xdsclient_test

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/dataplane/xdsclient"
	"github.com/ambientmesh/ambient-operator/dataplane/ztunnel/state"
	"github.com/ambientmesh/ambient-operator/internal/testwait"
	"github.com/ambientmesh/ambient-operator/internal/xdstest"
)

func workload(uid, ip string) *pb.Workload {
	return &pb.Workload{Uid: uid, Name: uid, Namespace: "shop", ServiceAccount: "sa", Addresses: []string{ip}}
}

func startClient(t *testing.T, addr string, store *state.Store) *xdsclient.Client {
	c := xdsclient.New(addr, store, xdsclient.Options{
		TypeURLs:       pb.TypeURLs,
		Node:           &corev3.Node{Id: "ztunnel~node-a"},
		DialOptions:    []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())},
		InitialBackoff: 20 * time.Millisecond,
		MaxBackoff:     200 * time.Millisecond,
		Log:            testr.New(t),
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return c
}

func has(store *state.Store, ip string) bool {
	return store.WorkloadByAddr(netip.MustParseAddr(ip)) != nil
}

func TestSyncUpdateDeleteAndNack(t *testing.T) {
	srv := xdstest.Start(t)
	srv.Set(t, pb.WorkloadTypeURL, map[string]proto.Message{"a": workload("a", "10.0.0.1")})
	store := state.New()
	c := startClient(t, srv.Addr, store)

	select {
	case <-c.Synced():
	case <-time.After(10 * time.Second):
		t.Fatal("client never synced all types (empty types must sync too)")
	}
	if !has(store, "10.0.0.1") {
		t.Fatal("initial workload missing")
	}
	srv.Set(t, pb.WorkloadTypeURL, map[string]proto.Message{"b": workload("b", "10.0.0.2")})
	testwait.For(t, "workload b", 10*time.Second, func() bool { return has(store, "10.0.0.2") })
	srv.Delete(t, pb.WorkloadTypeURL, "a")
	testwait.For(t, "workload a removed", 10*time.Second, func() bool { return !has(store, "10.0.0.1") })

	// An invalid resource is NACKed with the field named, and the last good config stays.
	srv.Set(t, pb.WorkloadTypeURL, map[string]proto.Message{"b": workload("b", "999.0.0.2")})
	testwait.For(t, "a NACK", 10*time.Second, func() bool { return len(srv.Nacks()) > 0 })
	if n := srv.Nacks()[0]; !strings.Contains(n, `b: addresses[0]: "999.0.0.2" is not an IP address`) {
		t.Fatalf("NACK detail %q does not name the field", n)
	}
	if !has(store, "10.0.0.2") {
		t.Fatal("last good workload b lost after a NACK")
	}
	if st := c.Stats(); st.Nacks == 0 || !strings.Contains(st.Behind[pb.WorkloadTypeURL], "999.0.0.2") {
		t.Fatalf("stats %+v, want the NACK counted and Workloads behind", st)
	}
	// A fix is accepted again.
	srv.Set(t, pb.WorkloadTypeURL, map[string]proto.Message{"b": workload("b", "10.0.0.3")})
	testwait.For(t, "fixed workload", 10*time.Second, func() bool { return has(store, "10.0.0.3") })
	testwait.For(t, "level again", 10*time.Second, func() bool { return len(c.Behind()) == 0 })
}

func TestReconnectResumesWithKnownVersions(t *testing.T) {
	srv := xdstest.Start(t)
	srv.Set(t, pb.WorkloadTypeURL, map[string]proto.Message{"a": workload("a", "10.0.0.1"), "b": workload("b", "10.0.0.2")})
	store := state.New()
	var mu sync.Mutex
	var seen []string
	c := xdsclient.New(srv.Addr, store, xdsclient.Options{
		TypeURLs:       pb.TypeURLs,
		DialOptions:    []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())},
		InitialBackoff: 20 * time.Millisecond,
		MaxBackoff:     200 * time.Millisecond,
		Log:            testr.New(t),
		Observe: func(r *discoveryv3.DeltaDiscoveryResponse) {
			if r.GetTypeUrl() != pb.WorkloadTypeURL {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for _, res := range r.GetResources() {
				seen = append(seen, "+"+res.GetName())
			}
			for _, n := range r.GetRemovedResources() {
				seen = append(seen, "-"+n)
			}
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-c.Synced()

	// The server goes away and comes back on the same address with a unchanged, b deleted
	// and c new. The client keeps its config meanwhile, then receives only the difference.
	srv.Stop()
	testwait.For(t, "disconnect", 10*time.Second, func() bool { return !c.Stats().Connected })
	if !has(store, "10.0.0.1") || !has(store, "10.0.0.2") {
		t.Fatal("config dropped while disconnected")
	}
	mu.Lock()
	seen = nil
	mu.Unlock()
	srv2 := xdstest.New()
	srv2.Set(t, pb.WorkloadTypeURL, map[string]proto.Message{"a": workload("a", "10.0.0.1"), "c": workload("c", "10.0.0.3")})
	srv2.Serve(t, srv.Addr)
	testwait.For(t, "converged after reconnect", 10*time.Second, func() bool {
		return has(store, "10.0.0.1") && !has(store, "10.0.0.2") && has(store, "10.0.0.3")
	})
	mu.Lock()
	got := strings.Join(seen, " ")
	mu.Unlock()
	if strings.Contains(got, "+a") {
		t.Fatalf("after reconnect the unchanged workload a was sent again (%s): known versions not resumed", got)
	}
	if st := c.Stats(); st.Connects < 2 {
		t.Fatalf("connects = %d, want a reconnect", st.Connects)
	}
}

// TestNackResyncsTheRejectedBatch: the server counts a NACKed response as delivered, so
// the valid resources it carried would never come again; the client asks again on a new
// stream and catches up once the bad resource is fixed, and says it is behind meanwhile.
func TestNackResyncsTheRejectedBatch(t *testing.T) {
	srv := xdstest.Start(t)
	srv.Set(t, pb.WorkloadTypeURL, map[string]proto.Message{"a": workload("a", "10.0.0.1")})
	store := state.New()
	c := startClient(t, srv.Addr, store)
	testwait.For(t, "sync", 10*time.Second, func() bool { return has(store, "10.0.0.1") })
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	if got := metric(t, reg, "ambientmesh_xds_config_behind", "Workload"); got != 0 {
		t.Fatalf("behind = %v before any NACK", got)
	}

	// One response carries a valid workload c and an invalid d: the whole response is NACKed.
	srv.Set(t, pb.WorkloadTypeURL, map[string]proto.Message{"c": workload("c", "10.0.0.3"), "d": workload("d", "not-an-ip")})
	testwait.For(t, "the NACK", 10*time.Second, func() bool { return len(srv.Nacks()) > 0 })
	if behind := c.Behind(); !strings.Contains(behind[pb.WorkloadTypeURL], "not-an-ip") || len(behind) != 1 {
		t.Fatalf("Behind() = %v, want Workloads with the reason", behind)
	}
	if got := metric(t, reg, "ambientmesh_xds_config_behind", "Workload"); got != 1 {
		t.Fatalf("ambientmesh_xds_config_behind{type=Workload} = %v, want 1", got)
	}
	if got := metric(t, reg, "ambientmesh_xds_client_nacks_total", "Workload"); got < 1 {
		t.Fatalf("ambientmesh_xds_client_nacks_total{type=Workload} = %v, want the NACK counted", got)
	}

	// Only d changes on the server; c comes again because the client asked again.
	srv.Set(t, pb.WorkloadTypeURL, map[string]proto.Message{"d": workload("d", "10.0.0.4")})
	testwait.For(t, "the rejected batch's valid workload c, and the fixed d", 10*time.Second, func() bool {
		return has(store, "10.0.0.3") && has(store, "10.0.0.4")
	})
	testwait.For(t, "level again", 10*time.Second, func() bool { return len(c.Behind()) == 0 })
	if got := metric(t, reg, "ambientmesh_xds_config_behind", "Workload"); got != 0 {
		t.Fatalf("behind = %v after catching up", got)
	}
	if st := c.Stats(); st.Connects < 2 {
		t.Fatalf("connects = %d, want a new stream for the resync", st.Connects)
	}
}

// metric returns the value of a metric with the given type label.
func metric(t *testing.T, reg *prometheus.Registry, name, typ string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if m.GetLabel()[0].GetValue() == typ {
				return m.GetGauge().GetValue() + m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no %s{type=%q}", name, typ)
	return 0
}

// TestLargeSnapshotFits: a ztunnel's first response carries every workload of the mesh.
// 50,000 workloads shaped like the control plane's exceed gRPC's default 4 MiB limit.
func TestLargeSnapshotFits(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 50,000-workload snapshot: skipped in -short mode")
	}
	const n = 50000
	workloads := make(map[string]proto.Message, n)
	for i := range n {
		uid := fmt.Sprintf("3f1c9a2e-8b4d-4f6a-9c1e-%012d", i)
		workloads[uid] = &pb.Workload{
			Uid: uid, Name: fmt.Sprintf("checkout-7d9f8c6b5-%05d", i), Namespace: "shop-frontend", ServiceAccount: "checkout",
			Node: fmt.Sprintf("worker-%03d", i%500), Addresses: []string{fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)},
			Services:       map[string]*pb.PortList{"shop-frontend/checkout.shop-frontend.svc.cluster.local": {Ports: []*pb.Port{{ServicePort: 80, TargetPort: 8080}}}},
			TunnelProtocol: pb.TunnelProtocol_TUNNEL_PROTOCOL_HBONE, Status: pb.WorkloadStatus_WORKLOAD_STATUS_HEALTHY,
			TrustDomain: "cluster.local", WorkloadName: "checkout",
		}
	}
	srv := xdstest.Start(t)
	srv.Set(t, pb.WorkloadTypeURL, workloads)
	var size int
	c := xdsclient.New(srv.Addr, xdsclient.HandlerFunc(func(string, map[string]*anypb.Any, []string) error { return nil }), xdsclient.Options{
		TypeURLs:    []string{pb.WorkloadTypeURL},
		DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())},
		Log:         testr.New(t),
		Observe: func(r *discoveryv3.DeltaDiscoveryResponse) {
			if len(r.GetResources()) == n {
				size = proto.Size(r)
			}
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	select {
	case <-c.Synced():
	case <-time.After(60 * time.Second):
		t.Fatalf("not synced: %+v", c.Stats())
	}
	if size <= 4<<20 || size > xdsclient.MaxResponseSize {
		t.Fatalf("the snapshot took %d bytes: want more than gRPC's default 4 MiB (what this test is about) and at most MaxResponseSize", size)
	}
	t.Logf("50,000 workloads: %d bytes in one response", size)
}

package xdsclient_test

import (
	"context"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/go-logr/logr/testr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/dataplane/xdsclient"
	"github.com/ambientmesh/ambient-operator/dataplane/ztunnel/state"
	"github.com/ambientmesh/ambient-operator/internal/testwait"
	"github.com/ambientmesh/ambient-operator/internal/xdstest"
)

func workload(uid, ip string) *pb.Workload {
	return &pb.Workload{Uid: uid, Name: uid, Namespace: "shop", ServiceAccount: "sa", Addresses: []string{ip}}
}

// eventually polls cond until it holds or 10s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testwait.For(t, what, 10*time.Second, cond)
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
	eventually(t, "workload b", func() bool { return has(store, "10.0.0.2") })
	srv.Delete(t, pb.WorkloadTypeURL, "a")
	eventually(t, "workload a removed", func() bool { return !has(store, "10.0.0.1") })

	// An invalid resource is NACKed with the field named, and the last good config stays.
	srv.Set(t, pb.WorkloadTypeURL, map[string]proto.Message{"b": workload("b", "999.0.0.2")})
	eventually(t, "a NACK", func() bool { return len(srv.Nacks()) > 0 })
	if n := srv.Nacks()[0]; !strings.Contains(n, `b: addresses[0]: "999.0.0.2" is not an IP address`) {
		t.Fatalf("NACK detail %q does not name the field", n)
	}
	if !has(store, "10.0.0.2") {
		t.Fatal("last good workload b lost after a NACK")
	}
	if st := c.Stats(); st.Nacks != 1 || !st.Connected {
		t.Fatalf("stats %+v", st)
	}
	// A fix is accepted again.
	srv.Set(t, pb.WorkloadTypeURL, map[string]proto.Message{"b": workload("b", "10.0.0.3")})
	eventually(t, "fixed workload", func() bool { return has(store, "10.0.0.3") })
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
	eventually(t, "disconnect", func() bool { return !c.Stats().Connected })
	if !has(store, "10.0.0.1") || !has(store, "10.0.0.2") {
		t.Fatal("config dropped while disconnected")
	}
	mu.Lock()
	seen = nil
	mu.Unlock()
	srv2 := xdstest.New()
	srv2.Set(t, pb.WorkloadTypeURL, map[string]proto.Message{"a": workload("a", "10.0.0.1"), "c": workload("c", "10.0.0.3")})
	srv2.Serve(t, srv.Addr)
	eventually(t, "converged after reconnect", func() bool {
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

package server

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	xdsstream "github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"

	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
)

// ztunnelStream opens node's ztunnel stream of Workloads, announcing held (a reconnect).
func ztunnelStream(t *testing.T, addr, node string, held map[string]string) discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient {
	t.Helper()
	s := deltaStream(t, addr, "ambient-system/ztunnel@"+node)
	if err := s.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: pb.WorkloadTypeURL, ResourceNamesSubscribe: []string{"*"},
		InitialResourceVersions: held, Node: &corev3.Node{Id: ZTunnelNodeID(node), Cluster: "ztunnel"}}); err != nil {
		t.Fatal(err)
	}
	return s
}

// heldBy applies a response to what a client holds, as a ztunnel does, and returns the
// names it carried.
func heldBy(held map[string]string, resp *discoveryv3.DeltaDiscoveryResponse) []string {
	var names []string
	for _, r := range resp.GetResources() {
		held[r.GetName()] = r.GetVersion()
		names = append(names, r.GetName())
	}
	for _, name := range resp.GetRemovedResources() {
		delete(held, name)
		names = append(names, name)
	}
	return names
}

// TestDeltaCacheKeepsZTunnelsInStep publishes random changes to the Workloads and checks
// that two ztunnels, one connected throughout and one that reconnects announcing a stale
// state, end up holding exactly what is published, and are never sent a resource they
// hold in that version or the removal of one they do not hold.
func TestDeltaCacheKeepsZTunnelsInStep(t *testing.T) {
	s, addr := startServer(t)
	rng := rand.New(rand.NewPCG(1, 2))
	want := map[string]string{} // name → version, as published
	publish := func(steps int) {
		for range steps {
			name := fmt.Sprintf("uid-%d", rng.IntN(40))
			if rng.IntN(3) == 0 {
				s.Publisher().Set(pb.WorkloadTypeURL, name, nil)
				delete(want, name)
				continue
			}
			w := &pb.Workload{Uid: name, Name: name, Namespace: "shop", Node: fmt.Sprintf("node-%d", rng.IntN(3))}
			s.Publisher().Set(pb.WorkloadTypeURL, name, w)
			want[name] = ResourceVersion(w)
		}
	}
	// follow reads responses, checking each against what the client holds, until it holds
	// want; a new stream's first response comes in any case.
	follow := func(stream discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient, held map[string]string, first bool) {
		t.Helper()
		for ; first || !maps.Equal(held, want); first = false {
			resp := recv(t, stream)
			for _, r := range resp.GetResources() {
				if held[r.GetName()] == r.GetVersion() {
					t.Fatalf("sent %s in the version the client holds", r.GetName())
				}
			}
			for _, name := range resp.GetRemovedResources() {
				if _, ok := held[name]; !ok {
					t.Fatalf("sent the removal of %s, which the client does not hold", name)
				}
			}
			heldBy(held, resp)
			ack(t, stream, resp)
		}
	}

	publish(30)
	a := ztunnelStream(t, addr, "node-a", nil)
	heldA := map[string]string{}
	follow(a, heldA, true)
	for round := range 40 {
		publish(1 + rng.IntN(5))
		follow(a, heldA, false)
		if round == 20 { // node-b reconnects holding node-a's state from then
			b := ztunnelStream(t, addr, "node-b", maps.Clone(heldA))
			publish(5)
			heldB := maps.Clone(heldA)
			follow(b, heldB, true)
			follow(a, heldA, false)
		}
	}
}

// TestDeltaCacheAnswersFromTheLog drives the cache as go-control-plane's delta server
// does (its Subscription, the response channel) with 1,000 Workloads: once in step, a
// change of one Workload is answered with that Workload alone, the stream's version map
// is updated in place instead of copied, and a stream further behind than the log reaches
// is still brought up to date.
func TestDeltaCacheAnswersFromTheLog(t *testing.T) {
	c := newDeltaCache(pb.WorkloadTypeURL)
	all := map[string]*pb.Workload{}
	for i := range 1000 {
		uid := fmt.Sprintf("uid-%04d", i)
		all[uid] = &pb.Workload{Uid: uid, Namespace: "shop", Node: "node-a"}
	}
	applyWorkloads(t, c, all)
	sub := xdsstream.NewDeltaSubscription(nil, nil, nil, true)
	out := make(chan cache.DeltaResponse, 1)
	// request plays the server's part: a request (first or ACK), then the response it gets
	// now or after flush, whose returned map the server stores in the subscription.
	request := func(nonce string, flush func()) *discoveryv3.DeltaDiscoveryResponse {
		t.Helper()
		cancel, err := c.CreateDeltaWatch(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: pb.WorkloadTypeURL, ResponseNonce: nonce}, sub, out)
		if err != nil {
			t.Fatal(err)
		}
		defer cancel()
		if flush != nil {
			if len(out) > 0 {
				t.Fatal("answered before anything changed")
			}
			flush()
		}
		select {
		case resp := <-out:
			msg, err := resp.GetDeltaDiscoveryResponse()
			if err != nil {
				t.Fatal(err)
			}
			sub.SetReturnedResources(resp.GetReturnedResources())
			return msg
		case <-time.After(5 * time.Second):
			t.Fatal("no response")
			return nil
		}
	}
	update := func(uids ...string) func() {
		return func() {
			changed := map[string]*pb.Workload{}
			for _, uid := range uids {
				changed[uid] = &pb.Workload{Uid: uid, Namespace: "shop", Node: "node-b"}
			}
			applyWorkloads(t, c, changed)
		}
	}

	if got := len(request("", nil).GetResources()); got != 1000 {
		t.Fatalf("first response carried %d Workloads, want 1000", got)
	}
	mapBefore := reflect.ValueOf(sub.ReturnedResources()).UnsafePointer()
	got := request("1", update("uid-0007"))
	if names := heldBy(map[string]string{}, got); !slices.Equal(names, []string{"uid-0007"}) {
		t.Fatalf("a change of one Workload sent %v", names)
	}
	if reflect.ValueOf(sub.ReturnedResources()).UnsafePointer() != mapBefore {
		t.Fatal("the stream's version map was copied, not updated")
	}
	if v := sub.ReturnedResources()["uid-0007"]; v != got.GetResources()[0].GetVersion() {
		t.Fatalf("the stream's map holds version %q of uid-0007, the response sent %q", v, got.GetResources()[0].GetVersion())
	}
	applyWorkloads(t, c, map[string]*pb.Workload{"uid-0008": nil}) // while no watch is open
	if got := request("2", nil).GetRemovedResources(); !slices.Equal(got, []string{"uid-0008"}) {
		t.Fatalf("a removal made between watches was answered with %v", got)
	}

	// More flushes than the log keeps while the stream is away: the full comparison.
	for i := range maxLoggedFlushes + 1 {
		update(fmt.Sprintf("uid-%04d", 100+i))()
	}
	if got := len(request("3", nil).GetResources()); got != maxLoggedFlushes+1 {
		t.Fatalf("a stream behind the log was sent %d Workloads, want %d", got, maxLoggedFlushes+1)
	}
	if _, ok := sub.ReturnedResources()[syncedKey]; !ok {
		t.Fatal("the version map does not record its flush")
	}
	if len(sub.ReturnedResources()) != 999+1 {
		t.Fatalf("the version map has %d entries, want 999 Workloads and the flush", len(sub.ReturnedResources()))
	}
}

func TestDeltaCacheServesDeltaOnly(t *testing.T) {
	c := newDeltaCache(pb.WorkloadTypeURL)
	if _, err := c.CreateWatch(&discoveryv3.DiscoveryRequest{TypeUrl: pb.WorkloadTypeURL}, xdsstream.NewSotwSubscription(nil, true), nil); err == nil {
		t.Fatal("a state-of-the-world watch was accepted")
	}
	if _, err := c.CreateDeltaWatch(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: pb.ServiceTypeURL}, xdsstream.NewDeltaSubscription(nil, nil, nil, true), nil); err == nil {
		t.Fatal("a watch of another type was accepted")
	}
}

// applyWorkloads flushes Workloads into c as the publisher does (nil removes).
func applyWorkloads(t testing.TB, c *deltaCache, ws map[string]*pb.Workload) {
	t.Helper()
	changes := map[string]deltaResource{}
	for uid, w := range ws {
		if w == nil {
			changes[uid] = deltaResource{}
			continue
		}
		r, err := encodeResource(w)
		if err != nil {
			t.Fatal(err)
		}
		changes[uid] = r
	}
	c.apply(changes)
}

// BenchmarkDeltaCachePush is one push of one changed Workload to one in-step wildcard
// stream, with the ACK's new watch, among n Workloads: the cost should not grow with n.
// The linear-cache sub-benchmarks do the same with go-control-plane's LinearCache, which
// the workload API used before deltaCache.
func BenchmarkDeltaCachePush(b *testing.B) {
	for _, n := range []int{1000, 50000} {
		b.Run(fmt.Sprintf("delta-%d", n), func(b *testing.B) {
			c := newDeltaCache(pb.WorkloadTypeURL)
			benchPush(b, n, c, func(ws map[string]*pb.Workload) { applyWorkloads(b, c, ws) })
		})
		b.Run(fmt.Sprintf("linear-%d", n), func(b *testing.B) {
			c := cache.NewLinearCache(pb.WorkloadTypeURL)
			benchPush(b, n, c, func(ws map[string]*pb.Workload) {
				if err := c.UpdateResources(maps.Collect(func(yield func(string, types.Resource) bool) {
					for k, w := range ws {
						if !yield(k, w) {
							return
						}
					}
				}), nil); err != nil {
					b.Fatal(err)
				}
			})
		})
	}
}

func benchPush(b *testing.B, n int, c cache.ConfigWatcher, set func(map[string]*pb.Workload)) {
	all := map[string]*pb.Workload{}
	for i := range n {
		uid := fmt.Sprintf("uid-%06d", i)
		all[uid] = &pb.Workload{Uid: uid, Namespace: "shop", Node: "node-a"}
	}
	set(all)
	sub := xdsstream.NewDeltaSubscription(nil, nil, nil, true)
	out := make(chan cache.DeltaResponse, 1)
	watch := func(nonce string) func() {
		cancel, err := c.CreateDeltaWatch(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: pb.WorkloadTypeURL, ResponseNonce: nonce}, sub, out)
		if err != nil {
			b.Fatal(err)
		}
		return cancel
	}
	take := func() int {
		resp := <-out
		msg, err := resp.GetDeltaDiscoveryResponse()
		if err != nil {
			b.Fatal(err)
		}
		sub.SetReturnedResources(resp.GetReturnedResources())
		return len(msg.GetResources())
	}
	watch("")
	take()
	i := 0
	for b.Loop() {
		cancel := watch("ack") // in step: waits
		i++
		uid := fmt.Sprintf("uid-%06d", i%n)
		set(map[string]*pb.Workload{uid: {Uid: uid, Namespace: "shop", Node: fmt.Sprint(i)}})
		if got := take(); got != 1 {
			b.Fatalf("pushed %d Workloads, want 1", got)
		}
		if cancel != nil {
			cancel()
		}
	}
}

package routing

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/dataplane/ztunnel/state"
)

const td = "cluster.local"

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func apply(t *testing.T, s *state.Store, typeURL string, msgs map[string]proto.Message) {
	t.Helper()
	up := map[string]*anypb.Any{}
	for n, m := range msgs {
		up[n] = mustAny(t, m)
	}
	if err := s.Apply(typeURL, up, nil); err != nil {
		t.Fatal(err)
	}
}

const (
	cartSvc = "shop/cart.shop.svc.cluster.local"
	wpSvc   = "shop/waypoint.shop.svc.cluster.local"
)

// mesh builds a small mesh: service cart (VIP 10.96.0.10, port 80 → 8080, and port 90 →
// a named port) with two meshed endpoints and one unhealthy; a plain (non-mesh) pod; a
// service with a waypoint; a workload with a waypoint.
func mesh(t *testing.T) *state.Store {
	s := state.New()
	hbone := pb.TunnelProtocol_TUNNEL_PROTOCOL_HBONE
	wp := &pb.GatewayAddress{Address: "10.96.0.99", Identity: "spiffe://cluster.local/ns/shop/sa/waypoint"}
	apply(t, s, pb.WorkloadTypeURL, map[string]proto.Message{
		"cart-1": &pb.Workload{Uid: "cart-1", Name: "cart-1", Namespace: "shop", ServiceAccount: "cart", TunnelProtocol: hbone, Addresses: []string{"10.0.1.1"},
			Services: map[string]*pb.PortList{cartSvc: {Ports: []*pb.Port{{ServicePort: 80, TargetPort: 8080}, {ServicePort: 90, TargetPort: 9001}}}}},
		"cart-2": &pb.Workload{Uid: "cart-2", Name: "cart-2", Namespace: "shop", ServiceAccount: "cart", TunnelProtocol: hbone, Addresses: []string{"10.0.2.1"},
			Services: map[string]*pb.PortList{cartSvc: {Ports: []*pb.Port{{ServicePort: 80, TargetPort: 8080}, {ServicePort: 90, TargetPort: 9002}}}}},
		"cart-3": &pb.Workload{Uid: "cart-3", Name: "cart-3", Namespace: "shop", ServiceAccount: "cart", TunnelProtocol: hbone, Addresses: []string{"10.0.3.1"},
			Status: pb.WorkloadStatus_WORKLOAD_STATUS_UNHEALTHY, Services: map[string]*pb.PortList{cartSvc: {Ports: []*pb.Port{{ServicePort: 80, TargetPort: 8080}}}}},
		"legacy": &pb.Workload{Uid: "legacy", Name: "legacy", Namespace: "old", Addresses: []string{"10.0.4.1"}},
		"waypoint-1": &pb.Workload{Uid: "waypoint-1", Name: "waypoint-1", Namespace: "shop", ServiceAccount: "waypoint", TunnelProtocol: hbone, Addresses: []string{"10.0.9.1"},
			Services: map[string]*pb.PortList{wpSvc: {Ports: []*pb.Port{{ServicePort: 15008, TargetPort: 15008}}}}},
		"guarded": &pb.Workload{Uid: "guarded", Name: "guarded", Namespace: "shop", ServiceAccount: "db", TunnelProtocol: hbone, Addresses: []string{"10.0.5.1"}, Waypoint: wp},
	})
	apply(t, s, pb.ServiceTypeURL, map[string]proto.Message{
		cartSvc: &pb.Service{Name: "cart", Namespace: "shop", Hostname: "cart.shop.svc.cluster.local", Vips: []string{"10.96.0.10"},
			Ports: []*pb.Port{{ServicePort: 80, TargetPort: 8080}, {ServicePort: 90}}},
		wpSvc: &pb.Service{Name: "waypoint", Namespace: "shop", Hostname: "waypoint.shop.svc.cluster.local", Vips: []string{"10.96.0.99"},
			Ports: []*pb.Port{{ServicePort: 15008, TargetPort: 15008}}},
		"shop/orders.shop.svc.cluster.local": &pb.Service{Name: "orders", Namespace: "shop", Hostname: "orders.shop.svc.cluster.local", Vips: []string{"10.96.0.20"},
			Ports: []*pb.Port{{ServicePort: 80, TargetPort: 8080}}, Waypoint: wp},
	})
	return s
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func TestOutbound(t *testing.T) {
	s := mesh(t)
	client := &pb.Workload{Namespace: "shop", ServiceAccount: "frontend"}
	waypoint := s.Workload("waypoint-1")
	cases := []struct {
		name     string
		src      *pb.Workload
		dst      string
		pick     int
		kind     Kind
		dial     string
		target   string
		peer     string
		waypoint bool
		err      string
	}{
		{name: "pod ip in mesh", dst: "10.0.1.1:8080", kind: HBONE, dial: "10.0.1.1:15008", target: "10.0.1.1:8080", peer: "spiffe://cluster.local/ns/shop/sa/cart"},
		{name: "vip first endpoint", dst: "10.96.0.10:80", pick: 0, kind: HBONE, dial: "10.0.1.1:15008", target: "10.0.1.1:8080", peer: "spiffe://cluster.local/ns/shop/sa/cart"},
		{name: "vip second endpoint", dst: "10.96.0.10:80", pick: 1, kind: HBONE, dial: "10.0.2.1:15008", target: "10.0.2.1:8080", peer: "spiffe://cluster.local/ns/shop/sa/cart"},
		{name: "named port resolved per endpoint", dst: "10.96.0.10:90", pick: 1, kind: HBONE, dial: "10.0.2.1:15008", target: "10.0.2.1:9002"},
		{name: "vip unknown port", dst: "10.96.0.10:81", err: "service shop/cart.shop.svc.cluster.local has no port 81"},
		{name: "non-mesh workload", dst: "10.0.4.1:5432", kind: Passthrough, dial: "10.0.4.1:5432", target: "10.0.4.1:5432"},
		{name: "outside the mesh", dst: "192.168.7.7:443", kind: Passthrough, dial: "192.168.7.7:443", target: "192.168.7.7:443"},
		{name: "v4-mapped destination", dst: "[::ffff:10.0.1.1]:8080", kind: HBONE, dial: "10.0.1.1:15008", target: "10.0.1.1:8080"},
		{name: "service waypoint", dst: "10.96.0.20:80", kind: HBONE, dial: "10.0.9.1:15008", target: "10.96.0.20:80", peer: "spiffe://cluster.local/ns/shop/sa/waypoint", waypoint: true},
		{name: "workload waypoint", dst: "10.0.5.1:5432", kind: HBONE, dial: "10.0.9.1:15008", target: "10.0.5.1:5432", peer: "spiffe://cluster.local/ns/shop/sa/waypoint", waypoint: true},
		{name: "waypoint's own traffic skips itself", src: waypoint, dst: "10.0.5.1:5432", kind: HBONE, dial: "10.0.5.1:15008", target: "10.0.5.1:5432", peer: "spiffe://cluster.local/ns/shop/sa/db"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := &Router{Lookup: s, TrustDomain: td, Pick: func(n int) int {
				if want := wantChoices(tc.waypoint); n != want {
					t.Errorf("pick among %d endpoints, want %d", n, want)
				}
				return tc.pick
			}}
			src := tc.src
			if src == nil {
				src = client
			}
			d, err := r.Outbound(src, ap(tc.dst))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d.Kind != tc.kind || d.Dial.String() != tc.dial || d.Target.String() != tc.target || d.ViaWaypoint != tc.waypoint {
				t.Fatalf("got %v dial %s target %s waypoint %v, want %v %s %s %v", d.Kind, d.Dial, d.Target, d.ViaWaypoint, tc.kind, tc.dial, tc.target, tc.waypoint)
			}
			if tc.peer != "" && d.Peer.String() != tc.peer {
				t.Fatalf("peer %s, want %s", d.Peer, tc.peer)
			}
		})
	}
}

func TestOutboundNoEndpoints(t *testing.T) {
	s := mesh(t)
	if err := s.Apply(pb.WorkloadTypeURL, nil, []string{"cart-1", "cart-2"}); err != nil {
		t.Fatal(err)
	}
	r := &Router{Lookup: s, TrustDomain: td, Pick: func(int) int { return 0 }}
	_, err := r.Outbound(nil, ap("10.96.0.10:80"))
	if !errors.Is(err, ErrNoEndpoints) {
		t.Fatalf("got %v, want ErrNoEndpoints", err)
	}
}

func TestCheckInboundTarget(t *testing.T) {
	w := &pb.Workload{Namespace: "shop", Name: "cart-1", Addresses: []string{"10.0.1.1"}}
	if err := CheckInboundTarget(w, ap("10.0.1.1:8080")); err != nil {
		t.Fatal(err)
	}
	if err := CheckInboundTarget(w, ap("10.0.2.1:8080")); err == nil || !strings.Contains(err.Error(), "not an address of workload shop/cart-1") {
		t.Fatalf("got %v", err)
	}
	if err := CheckInboundTarget(w, ap("10.0.1.1:0")); err == nil {
		t.Fatal("port 0 accepted")
	}
}

// wantChoices: cart has two healthy endpoints (cart-3 is unhealthy); the waypoint service one.
func wantChoices(viaWaypoint bool) int {
	if viaWaypoint {
		return 1
	}
	return 2
}

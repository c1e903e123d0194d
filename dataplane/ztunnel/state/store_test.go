package state

import (
	"net/netip"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/anypb"

	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
)

func TestInvalidUpdateKeepsLastGood(t *testing.T) {
	s := New()
	good, _ := anypb.New(&pb.Workload{Uid: "a", Namespace: "shop", Addresses: []string{"10.0.0.1"}})
	if err := s.Apply(pb.WorkloadTypeURL, map[string]*anypb.Any{"a": good}, nil); err != nil {
		t.Fatal(err)
	}
	changed := s.Changed()
	bad, _ := anypb.New(&pb.Workload{Uid: "b", Namespace: "shop", Addresses: []string{"not-an-ip"}})
	replaced, _ := anypb.New(&pb.Workload{Uid: "a", Namespace: "shop", Addresses: []string{"10.0.0.2"}})
	err := s.Apply(pb.WorkloadTypeURL, map[string]*anypb.Any{"a": replaced, "b": bad}, []string{})
	if err == nil || !strings.Contains(err.Error(), `b: addresses[0]: "not-an-ip" is not an IP address`) {
		t.Fatalf("got %v", err)
	}
	if s.WorkloadByAddr(netip.MustParseAddr("10.0.0.1")) == nil || s.WorkloadByAddr(netip.MustParseAddr("10.0.0.2")) != nil {
		t.Fatal("a rejected update was partly applied")
	}
	select {
	case <-changed:
		t.Fatal("waiters woken by a rejected update")
	default:
	}
	wrongType, _ := anypb.New(&pb.Service{})
	if err := s.Apply(pb.WorkloadTypeURL, map[string]*anypb.Any{"c": wrongType}, nil); err == nil || !strings.Contains(err.Error(), "type_url") {
		t.Fatalf("got %v", err)
	}
}

func TestWorkloadReplaceAndRemoveReindex(t *testing.T) {
	s := New()
	w1, _ := anypb.New(&pb.Workload{Uid: "a", Namespace: "shop", Addresses: []string{"10.0.0.1"},
		Services: map[string]*pb.PortList{"shop/x": {Ports: []*pb.Port{{ServicePort: 80, TargetPort: 80}}}}})
	if err := s.Apply(pb.WorkloadTypeURL, map[string]*anypb.Any{"a": w1}, nil); err != nil {
		t.Fatal(err)
	}
	if len(s.Endpoints("shop/x")) != 1 {
		t.Fatal("endpoint missing")
	}
	// The pod moves to a new IP and leaves the service.
	w2, _ := anypb.New(&pb.Workload{Uid: "a", Namespace: "shop", Addresses: []string{"10.0.0.9"}})
	if err := s.Apply(pb.WorkloadTypeURL, map[string]*anypb.Any{"a": w2}, nil); err != nil {
		t.Fatal(err)
	}
	if s.WorkloadByAddr(netip.MustParseAddr("10.0.0.1")) != nil || s.WorkloadByAddr(netip.MustParseAddr("10.0.0.9")) == nil {
		t.Fatal("address index stale")
	}
	if len(s.Endpoints("shop/x")) != 0 {
		t.Fatal("service membership stale")
	}
	if err := s.Apply(pb.WorkloadTypeURL, nil, []string{"a"}); err != nil {
		t.Fatal(err)
	}
	if s.Workload("a") != nil || s.WorkloadByAddr(netip.MustParseAddr("10.0.0.9")) != nil {
		t.Fatal("removed workload still present")
	}
	if !s.Synced(pb.WorkloadTypeURL) || s.Synced(pb.ServiceTypeURL) {
		t.Fatal("synced flags wrong")
	}
}

func TestTrustBundleRequiresCertificates(t *testing.T) {
	s := New()
	b, _ := anypb.New(&pb.TrustBundle{TrustDomain: "cluster.local", Roots: []string{"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}})
	if err := s.Apply(pb.TrustBundleTypeURL, map[string]*anypb.Any{"cluster.local": b}, nil); err == nil || !strings.Contains(err.Error(), "roots[0]") {
		t.Fatalf("got %v", err)
	}
	if s.Roots() != nil {
		t.Fatal("roots set from a bad bundle")
	}
}

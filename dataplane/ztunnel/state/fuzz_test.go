package state

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
)

// FuzzApply: any resource bytes of any type are either applied or rejected with an error;
// the store never panics and stays consistent (every indexed address resolves to a stored
// workload).
func FuzzApply(f *testing.F) {
	seed := func(typeIdx uint8, name string, m proto.Message) {
		b, _ := proto.Marshal(m)
		f.Add(typeIdx, name, b)
	}
	seed(0, "u1", &pb.Workload{Uid: "u1", Namespace: "shop", ServiceAccount: "sa", Addresses: []string{"10.0.0.1"},
		Services: map[string]*pb.PortList{"shop/a": {Ports: []*pb.Port{{ServicePort: 80, TargetPort: 8080}}}}})
	seed(1, "shop/a", &pb.Service{Namespace: "shop", Hostname: "a", Vips: []string{"10.96.0.1"}, Ports: []*pb.Port{{ServicePort: 80}}})
	seed(2, "shop/p", &pb.Authorization{Name: "p", Namespace: "shop", Scope: 2, Action: 2, Rules: []*pb.Rule{{IpBlocks: []string{"10.0.0.0/8"}}}})
	seed(3, "cluster.local", &pb.TrustBundle{TrustDomain: "cluster.local", Roots: []string{"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"}})
	f.Fuzz(func(t *testing.T, typeIdx uint8, name string, value []byte) {
		typeURL := pb.TypeURLs[int(typeIdx)%len(pb.TypeURLs)]
		s := New()
		_ = s.Apply(typeURL, map[string]*anypb.Any{name: {TypeUrl: typeURL, Value: value}}, nil)
		_ = s.Apply(typeURL, nil, []string{name})
		s.mu.RLock()
		defer s.mu.RUnlock()
		if len(s.byAddr) != 0 || len(s.byVIP) != 0 || len(s.members) != 0 || len(s.workloads) != 0 {
			t.Fatalf("removing the only resource left index entries: %d addrs %d vips %d members", len(s.byAddr), len(s.byVIP), len(s.members))
		}
	})
}

package authz_test

import (
	"net/netip"
	"testing"

	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/dataplane/ztunnel/authz"
	"github.com/ambientmesh/ambient-operator/internal/spiffe"
)

// Any policy the control plane could send, and any connection: compiling either fails
// with an error or gives a policy whose evaluation never panics, and the decision is
// consistent: a matching DENY wins and names itself; a refusal without a DENY means ALLOW
// policies exist and none matched.
func FuzzEvaluate(f *testing.F) {
	f.Add(int32(2), "spiffe://cluster.local/ns/shop/sa/client", "shop", "10.0.0.0/8", uint32(8080), "10.1.2.3", "spiffe://cluster.local/ns/shop/sa/client", uint16(8080))
	f.Add(int32(1), "", "", "::/0", uint32(0), "fd00::1", "", uint16(1))
	f.Add(int32(3), "*", "x", "bad", uint32(70000), "", "not-spiffe", uint16(0))
	f.Fuzz(func(t *testing.T, action int32, principal, namespace, block string, port uint32, srcIP, peer string, dstPort uint16) {
		a := &pb.Authorization{
			Name: "p", Namespace: "shop", Scope: pb.AuthorizationScope_AUTHORIZATION_SCOPE_NAMESPACE,
			Action: pb.AuthorizationAction(action),
			Rules: []*pb.Rule{{
				Principals: []string{principal}, Namespaces: []string{namespace},
				IpBlocks: []string{block}, Ports: []uint32{port},
			}},
		}
		policy, err := authz.Compile(a)
		if err != nil {
			return
		}
		var c authz.Conn
		c.SrcIP, _ = netip.ParseAddr(srcIP)
		c.Principal, _ = spiffe.Parse(peer)
		c.DstPort = dstPort
		d := authz.Evaluate([]*authz.Policy{policy}, c)
		switch {
		case !d.Allowed && d.Policy != "" && policy.Action != pb.AuthorizationAction_AUTHORIZATION_ACTION_DENY:
			t.Fatalf("refused by %q, which is not a DENY policy (%v): %+v", d.Policy, policy.Action, d)
		case !d.Allowed && d.Policy == "" && policy.Action != pb.AuthorizationAction_AUTHORIZATION_ACTION_ALLOW:
			t.Fatalf("refused without a deciding policy, though no ALLOW policy applies: %+v", d)
		case d.Allowed && d.Policy != "" && policy.Action != pb.AuthorizationAction_AUTHORIZATION_ACTION_ALLOW:
			t.Fatalf("allowed by %q, which is not an ALLOW policy: %+v", d.Policy, d)
		}
	})
}

package authz

import (
	"net/netip"
	"strings"
	"testing"

	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/internal/spiffe"
)

const (
	allow = pb.AuthorizationAction_AUTHORIZATION_ACTION_ALLOW
	deny  = pb.AuthorizationAction_AUTHORIZATION_ACTION_DENY
	audit = pb.AuthorizationAction_AUTHORIZATION_ACTION_AUDIT
	nsSc  = pb.AuthorizationScope_AUTHORIZATION_SCOPE_NAMESPACE
)

func policy(t *testing.T, name string, action pb.AuthorizationAction, rules ...*pb.Rule) *Policy {
	t.Helper()
	p, err := Compile(&pb.Authorization{Name: name, Namespace: "shop", Scope: nsSc, Action: action, Rules: rules})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var (
	frontend = spiffe.MustNew("cluster.local", "shop", "frontend")
	billing  = spiffe.MustNew("cluster.local", "billing", "api")
)

func conn(id spiffe.ID, ip string, port uint16) Conn {
	return Conn{Principal: id, SrcIP: netip.MustParseAddr(ip), DstPort: port}
}

func TestEvaluate(t *testing.T) {
	fromFrontend := &pb.Rule{Principals: []string{frontend.String()}}
	cases := []struct {
		name       string
		policies   func(t *testing.T) []*Policy
		conn       Conn
		allowed    bool
		decidedBy  string
		reasonPart string
	}{
		{"no policy allows", func(t *testing.T) []*Policy { return nil }, conn(frontend, "10.0.0.1", 80), true, "", "no ALLOW policy"},
		{"matching allow", func(t *testing.T) []*Policy { return []*Policy{policy(t, "a", allow, fromFrontend)} },
			conn(frontend, "10.0.0.1", 80), true, "shop/a", "allowed by ALLOW policy shop/a"},
		{"allow exists but no match denies", func(t *testing.T) []*Policy { return []*Policy{policy(t, "a", allow, fromFrontend)} },
			conn(billing, "10.0.0.1", 80), false, "", "none of the 1 ALLOW policies matched"},
		{"deny before allow", func(t *testing.T) []*Policy {
			return []*Policy{policy(t, "a", allow, fromFrontend), policy(t, "d", deny, &pb.Rule{Ports: []uint32{80}})}
		}, conn(frontend, "10.0.0.1", 80), false, "shop/d", "denied by DENY policy shop/d"},
		{"deny not matching leaves allow", func(t *testing.T) []*Policy {
			return []*Policy{policy(t, "d", deny, &pb.Rule{Ports: []uint32{81}}), policy(t, "a", allow, fromFrontend)}
		}, conn(frontend, "10.0.0.1", 80), true, "shop/a", ""},
		{"deny only, no match allows", func(t *testing.T) []*Policy { return []*Policy{policy(t, "d", deny, fromFrontend)} },
			conn(billing, "10.0.0.1", 80), true, "", "no ALLOW policy"},
		{"policy without rules matches nothing: allow-nothing", func(t *testing.T) []*Policy { return []*Policy{policy(t, "a", allow)} },
			conn(frontend, "10.0.0.1", 80), false, "", "none of the 1"},
		{"empty rule matches everything", func(t *testing.T) []*Policy { return []*Policy{policy(t, "d", deny, &pb.Rule{})} },
			conn(Conn{}.Principal, "10.0.0.1", 80), false, "shop/d", ""},
		{"namespace rule", func(t *testing.T) []*Policy {
			return []*Policy{policy(t, "a", allow, &pb.Rule{Namespaces: []string{"billing"}})}
		},
			conn(billing, "10.0.0.1", 80), true, "shop/a", ""},
		{"plaintext has no namespace", func(t *testing.T) []*Policy {
			return []*Policy{policy(t, "a", allow, &pb.Rule{Namespaces: []string{"billing"}})}
		},
			conn(spiffe.ID{}, "10.0.0.1", 80), false, "", ""},
		{"not_namespaces", func(t *testing.T) []*Policy {
			return []*Policy{policy(t, "d", deny, &pb.Rule{NotNamespaces: []string{"shop"}})}
		},
			conn(billing, "10.0.0.1", 80), false, "shop/d", ""},
		{"not_namespaces spares own namespace", func(t *testing.T) []*Policy {
			return []*Policy{policy(t, "d", deny, &pb.Rule{NotNamespaces: []string{"shop"}})}
		},
			conn(frontend, "10.0.0.1", 80), true, "", ""},
		{"ip block", func(t *testing.T) []*Policy {
			return []*Policy{policy(t, "a", allow, &pb.Rule{IpBlocks: []string{"10.1.0.0/16"}})}
		},
			conn(spiffe.ID{}, "10.1.2.3", 80), true, "shop/a", ""},
		{"ip block miss", func(t *testing.T) []*Policy {
			return []*Policy{policy(t, "a", allow, &pb.Rule{IpBlocks: []string{"10.1.0.0/16"}})}
		},
			conn(spiffe.ID{}, "10.2.2.3", 80), false, "", ""},
		{"v4-mapped source matches v4 block", func(t *testing.T) []*Policy {
			return []*Policy{policy(t, "a", allow, &pb.Rule{IpBlocks: []string{"10.1.2.3"}})}
		},
			conn(spiffe.ID{}, "::ffff:10.1.2.3", 80), true, "shop/a", ""},
		{"not ports", func(t *testing.T) []*Policy {
			return []*Policy{policy(t, "a", allow, &pb.Rule{NotPorts: []uint32{22}})}
		},
			conn(frontend, "10.0.0.1", 22), false, "", ""},
		{"fields AND within a rule", func(t *testing.T) []*Policy {
			return []*Policy{policy(t, "a", allow, &pb.Rule{Principals: []string{frontend.String()}, Ports: []uint32{443}})}
		}, conn(frontend, "10.0.0.1", 80), false, "", ""},
		{"rules OR within a policy", func(t *testing.T) []*Policy {
			return []*Policy{policy(t, "a", allow, &pb.Rule{Ports: []uint32{443}}, &pb.Rule{Principals: []string{frontend.String()}})}
		}, conn(frontend, "10.0.0.1", 80), true, "shop/a", ""},
		{"wildcard any authenticated", func(t *testing.T) []*Policy {
			return []*Policy{policy(t, "a", allow, &pb.Rule{Principals: []string{"*"}})}
		},
			conn(spiffe.ID{}, "10.0.0.1", 80), false, "", ""},
		{"prefix wildcard", func(t *testing.T) []*Policy {
			return []*Policy{policy(t, "a", allow, &pb.Rule{Principals: []string{"spiffe://cluster.local/ns/billing/*"}})}
		}, conn(billing, "10.0.0.1", 80), true, "shop/a", ""},
		{"suffix wildcard", func(t *testing.T) []*Policy {
			return []*Policy{policy(t, "a", allow, &pb.Rule{Principals: []string{"*/sa/frontend"}})}
		},
			conn(frontend, "10.0.0.1", 80), true, "shop/a", ""},
		{"audit does not decide", func(t *testing.T) []*Policy { return []*Policy{policy(t, "au", audit, &pb.Rule{})} },
			conn(frontend, "10.0.0.1", 80), true, "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := Evaluate(tc.policies(t), tc.conn)
			if d.Allowed != tc.allowed || d.Policy != tc.decidedBy {
				t.Fatalf("got allowed=%v by %q (%s), want allowed=%v by %q", d.Allowed, d.Policy, d.Reason, tc.allowed, tc.decidedBy)
			}
			if !strings.Contains(d.Reason, tc.reasonPart) {
				t.Fatalf("reason %q, want it to contain %q", d.Reason, tc.reasonPart)
			}
		})
	}
}

func TestAuditIsReported(t *testing.T) {
	d := Evaluate([]*Policy{policy(t, "au", audit, &pb.Rule{Ports: []uint32{80}})}, conn(frontend, "10.0.0.1", 80))
	if len(d.Audited) != 1 || d.Audited[0] != "shop/au" {
		t.Fatalf("audited = %v", d.Audited)
	}
}

func TestAppliesTo(t *testing.T) {
	mk := func(ns string, scope pb.AuthorizationScope) *Policy {
		p, err := Compile(&pb.Authorization{Name: "p", Namespace: ns, Scope: scope, Action: allow})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	listed := &pb.Workload{Namespace: "shop", AuthorizationPolicies: []string{"shop/p"}}
	unlisted := &pb.Workload{Namespace: "shop"}
	other := &pb.Workload{Namespace: "billing", AuthorizationPolicies: []string{"shop/p"}}
	cases := []struct {
		p    *Policy
		w    *pb.Workload
		want bool
	}{
		{mk("shop", pb.AuthorizationScope_AUTHORIZATION_SCOPE_WORKLOAD_SELECTOR), listed, true},
		{mk("shop", pb.AuthorizationScope_AUTHORIZATION_SCOPE_WORKLOAD_SELECTOR), unlisted, false},
		{mk("shop", pb.AuthorizationScope_AUTHORIZATION_SCOPE_WORKLOAD_SELECTOR), other, false},
		{mk("shop", nsSc), unlisted, true},
		{mk("shop", nsSc), other, false},
		{mk("istio-system", pb.AuthorizationScope_AUTHORIZATION_SCOPE_GLOBAL), other, true},
	}
	for i, tc := range cases {
		if got := tc.p.AppliesTo(tc.w); got != tc.want {
			t.Errorf("case %d: AppliesTo = %v, want %v", i, got, tc.want)
		}
	}
}

func TestCompileRejectsInvalid(t *testing.T) {
	_, err := Compile(&pb.Authorization{Name: "p", Namespace: "shop", Scope: nsSc, Action: allow, Rules: []*pb.Rule{{IpBlocks: []string{"nope"}}}})
	if err == nil || !strings.Contains(err.Error(), "authorization shop/p: rules[0].ip_blocks[0]") {
		t.Fatalf("got %v", err)
	}
}

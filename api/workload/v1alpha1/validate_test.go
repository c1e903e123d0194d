package workloadv1alpha1

import (
	"strings"
	"testing"
)

func TestValidateNamesTheField(t *testing.T) {
	wp := &GatewayAddress{Address: "10.0.0.9", Identity: "spiffe://cluster.local/ns/shop/sa/waypoint"}
	cases := []struct {
		name    string
		err     error
		wantErr string
	}{
		{"good workload", ValidateWorkload("u1", &Workload{Uid: "u1", Namespace: "shop", ServiceAccount: "sa", TunnelProtocol: TunnelProtocol_TUNNEL_PROTOCOL_HBONE, Addresses: []string{"10.0.0.1"}, Waypoint: wp,
			Services: map[string]*PortList{"shop/a.shop.svc.cluster.local": {Ports: []*Port{{ServicePort: 80, TargetPort: 8080}}}}}), ""},
		{"uid mismatch", ValidateWorkload("u2", &Workload{Uid: "u1", Namespace: "shop"}), `uid: "u1" differs from the resource name "u2"`},
		{"bad address", ValidateWorkload("u1", &Workload{Uid: "u1", Namespace: "shop", Addresses: []string{"10.0.0.300"}}), `addresses[0]: "10.0.0.300" is not an IP address`},
		{"hbone needs sa", ValidateWorkload("u1", &Workload{Uid: "u1", Namespace: "shop", TunnelProtocol: TunnelProtocol_TUNNEL_PROTOCOL_HBONE}), "service_account: required"},
		{"zero target port on workload", ValidateWorkload("u1", &Workload{Uid: "u1", Namespace: "shop", Services: map[string]*PortList{"shop/a": {Ports: []*Port{{ServicePort: 80}}}}}), `services["shop/a"].ports[0].target_port: 0 is not a port`},
		{"bad waypoint identity", ValidateWorkload("u1", &Workload{Uid: "u1", Namespace: "shop", Waypoint: &GatewayAddress{Address: "10.0.0.9", Identity: "waypoint"}}), "waypoint.identity"},
		{"good service", ValidateService("shop/a.shop", &Service{Namespace: "shop", Hostname: "a.shop", Vips: []string{"10.96.0.1"}, Ports: []*Port{{ServicePort: 80}}}), ""},
		{"service name", ValidateService("a.shop", &Service{Namespace: "shop", Hostname: "a.shop"}), `hostname: resource name "a.shop" should be "shop/a.shop"`},
		{"service vip", ValidateService("shop/a", &Service{Namespace: "shop", Hostname: "a", Vips: []string{"x"}}), "vips[0]"},
		{"good policy", ValidateAuthorization("shop/p", &Authorization{Name: "p", Namespace: "shop", Scope: AuthorizationScope_AUTHORIZATION_SCOPE_NAMESPACE, Action: AuthorizationAction_AUTHORIZATION_ACTION_DENY,
			Rules: []*Rule{{IpBlocks: []string{"10.0.0.0/8", "192.168.1.1"}, Ports: []uint32{80}}}}), ""},
		{"policy action", ValidateAuthorization("shop/p", &Authorization{Name: "p", Namespace: "shop", Scope: AuthorizationScope_AUTHORIZATION_SCOPE_NAMESPACE}), "action: must be ALLOW, DENY or AUDIT"},
		{"policy scope", ValidateAuthorization("shop/p", &Authorization{Name: "p", Namespace: "shop", Action: AuthorizationAction_AUTHORIZATION_ACTION_ALLOW}), "scope: must be"},
		{"policy cidr", ValidateAuthorization("shop/p", &Authorization{Name: "p", Namespace: "shop", Scope: 1, Action: 1, Rules: []*Rule{{}, {NotIpBlocks: []string{"10.0.0.0/33"}}}}), `rules[1].not_ip_blocks[0]: "10.0.0.0/33" is not a CIDR block`},
		{"policy port", ValidateAuthorization("shop/p", &Authorization{Name: "p", Namespace: "shop", Scope: 1, Action: 1, Rules: []*Rule{{Ports: []uint32{70000}}}}), "rules[0].ports[0]: 70000 is not a port"},
		{"bundle", ValidateTrustBundle("cluster.local", &TrustBundle{TrustDomain: "cluster.local"}), "roots: at least one"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.wantErr == "" {
				if tc.err != nil {
					t.Fatalf("unexpected error: %v", tc.err)
				}
				return
			}
			if tc.err == nil || !strings.Contains(tc.err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want it to contain %q", tc.err, tc.wantErr)
			}
		})
	}
}

func TestIdentity(t *testing.T) {
	w := &Workload{Namespace: "shop", ServiceAccount: "cart"}
	if got := w.Identity("cluster.local"); got != "spiffe://cluster.local/ns/shop/sa/cart" {
		t.Fatal(got)
	}
	w.TrustDomain = "example.org"
	if got := w.Identity("cluster.local"); got != "spiffe://example.org/ns/shop/sa/cart" {
		t.Fatal(got)
	}
	if _, _, _, ok := ParseSpiffeID("spiffe://td/ns/a/sa/b/extra"); ok {
		t.Fatal("extra path segment accepted")
	}
}

package identity

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/url"
	"testing"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

func TestXDSPeer(t *testing.T) {
	withCert := func(uris ...string) context.Context {
		leaf := &x509.Certificate{}
		for _, u := range uris {
			parsed, err := url.Parse(u)
			if err != nil {
				t.Fatal(err)
			}
			leaf.URIs = append(leaf.URIs, parsed)
		}
		state := tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{leaf}}}
		return peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{State: state}})
	}
	for _, tc := range []struct {
		name         string
		ctx          context.Context
		wantNS, want string
		wantOK       bool
	}{
		{"mesh certificate", withCert("spiffe://cluster.local/ns/shop/sa/wp"), "shop", "wp", true},
		{"certificate of another trust domain", withCert("spiffe://other.example/ns/shop/sa/wp"), "", "", false},
		{"certificate without a SPIFFE id", withCert(), "", "", false},
		{"certificate with two ids", withCert("spiffe://cluster.local/ns/shop/sa/wp", "spiffe://cluster.local/ns/shop/sa/x"), "", "", false},
		{"token", context.WithValue(context.Background(), callerKey{}, caller{namespace: "shop", name: "wp"}), "shop", "wp", true},
		{"nothing", context.Background(), "", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns, sa, ok := XDSPeer(tc.ctx, "cluster.local")
			if ns != tc.wantNS || sa != tc.want || ok != tc.wantOK {
				t.Fatalf("XDSPeer = %q, %q, %v; want %q, %q, %v", ns, sa, ok, tc.wantNS, tc.want, tc.wantOK)
			}
		})
	}
}

package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ambientmesh/ambient-operator/internal/spiffe"
)

var testID = spiffe.MustNew("cluster.local", "shop", "web")

func makeCSR(t testing.TB, key crypto.Signer, tmpl x509.CertificateRequest) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func p256(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestValidateCSR(t *testing.T) {
	uri := func(s string) *url.URL { u, _ := url.Parse(s); return u }
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	good := makeCSR(t, p256(t), x509.CertificateRequest{URIs: []*url.URL{testID.URI()}})
	tampered := func() []byte {
		block, _ := pem.Decode(good)
		der := append([]byte(nil), block.Bytes...)
		der[len(der)-5] ^= 0xff // inside the signature
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	}()
	cases := []struct {
		name    string
		csr     []byte
		wantErr string
	}{
		{"P-256 with the requested SPIFFE id", good, ""},
		{"not PEM", []byte("hello"), "not PEM encoded"},
		{"wrong PEM type", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}), `want "CERTIFICATE REQUEST"`},
		{"garbage DER", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{1, 2, 3}}), "csr:"},
		{"trailing data", append(append([]byte{}, good...), []byte("junk")...), "trailing data"},
		{"bad signature", tampered, "signature does not verify"},
		{"P-384 key", makeCSR(t, p384, x509.CertificateRequest{URIs: []*url.URL{testID.URI()}}), "ECDSA P-256, got ECDSA P-384"},
		{"Ed25519 key", makeCSR(t, edKey, x509.CertificateRequest{URIs: []*url.URL{testID.URI()}}), "ECDSA P-256, got Ed25519"},
		{"other identity", makeCSR(t, p256(t), x509.CertificateRequest{URIs: []*url.URL{uri("spiffe://cluster.local/ns/shop/sa/admin")}}), "differs from the requested identity"},
		{"two URIs", makeCSR(t, p256(t), x509.CertificateRequest{URIs: []*url.URL{testID.URI(), uri("spiffe://cluster.local/ns/x/sa/y")}}), "exactly one URI SAN"},
		{"no SAN", makeCSR(t, p256(t), x509.CertificateRequest{}), "exactly one URI SAN"},
		{"extra DNS SAN", makeCSR(t, p256(t), x509.CertificateRequest{URIs: []*url.URL{testID.URI()}, DNSNames: []string{"web.shop"}}), "only a URI SAN"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ValidateCSR(tc.csr, testID)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

func TestClampTTL(t *testing.T) {
	const def, lo, hi = 24 * time.Hour, time.Hour, 720 * time.Hour
	for _, tc := range []struct{ in, want time.Duration }{
		{0, def}, {-time.Second, def}, {2 * time.Hour, 2 * time.Hour}, {time.Minute, lo}, {10000 * time.Hour, hi},
	} {
		if got := ClampTTL(tc.in, def, lo, hi); got != tc.want {
			t.Errorf("ClampTTL(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestServiceAccountOf(t *testing.T) {
	for _, tc := range []struct {
		user     string
		ns, name string
		ok       bool
	}{
		{"system:serviceaccount:ambient-system:ztunnel", "ambient-system", "ztunnel", true},
		{"system:serviceaccount:shop", "", "", false},
		{"system:serviceaccount::x", "", "", false},
		{"alice", "", "", false},
	} {
		ns, name, ok := serviceAccountOf(tc.user)
		if ns != tc.ns || name != tc.name || ok != tc.ok {
			t.Errorf("serviceAccountOf(%q) = %q %q %v", tc.user, ns, name, ok)
		}
	}
}

// FuzzValidateCSR: the CSR is wire input from any authenticated caller; validation must
// return an error, never panic, and accept only a CSR for the requested identity.
func FuzzValidateCSR(f *testing.F) {
	f.Add(makeCSR(f, p256(f), x509.CertificateRequest{URIs: []*url.URL{testID.URI()}}))
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		csr, err := ValidateCSR(data, testID)
		if err == nil && (len(csr.URIs) != 1 || csr.URIs[0].String() != testID.String()) {
			t.Fatalf("accepted a CSR for %v", csr.URIs)
		}
	})
}

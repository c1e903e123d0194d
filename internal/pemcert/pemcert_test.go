package pemcert

import (
	"testing"

	"github.com/ambientmesh/ambient-operator/internal/testca"
)

// A bundle's certificates come back in order; other blocks are skipped, a broken
// certificate is an error and text without any yields none.
func TestParse(t *testing.T) {
	a, b := testca.New(t), testca.New(t)
	key := "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"
	certs, err := Parse([]byte(a.PEM + key + b.PEM))
	if err != nil || len(certs) != 2 || !certs[0].Equal(a.Cert) || !certs[1].Equal(b.Cert) {
		t.Fatalf("Parse(a, key, b) = %d certificates, %v; want a and b", len(certs), err)
	}
	if certs, err := Parse([]byte("not PEM")); err != nil || len(certs) != 0 {
		t.Fatalf("Parse(not PEM) = %v, %v; want none, no error", certs, err)
	}
	broken := "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
	if _, err := Parse([]byte(broken)); err == nil {
		t.Fatal("Parse(broken certificate): want an error")
	}
}

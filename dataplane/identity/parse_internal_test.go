package identity

import (
	"strings"
	"testing"

	"github.com/ambientmesh/ambient-operator/internal/testca"
)

// The certificate service's bundles come back in order, each bundle's certificates in
// order, and a broken one is named by its index in the list.
func TestParsePEMs(t *testing.T) {
	a, b, c := testca.New(t), testca.New(t), testca.New(t)
	certs, err := parsePEMs([]string{a.PEM + b.PEM, c.PEM})
	if err != nil || len(certs) != 3 || !certs[0].Equal(a.Cert) || !certs[1].Equal(b.Cert) || !certs[2].Equal(c.Cert) {
		t.Fatalf("parsePEMs(a+b, c) = %d certificates, %v; want a, b, c", len(certs), err)
	}
	broken := "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
	if _, err := parsePEMs([]string{a.PEM, broken}); err == nil || !strings.HasPrefix(err.Error(), "[1]: ") {
		t.Fatalf("parsePEMs(a, broken) error = %v; want one starting with [1]: ", err)
	}
}

package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/ambientmesh/ambient-operator/internal/pemcert"
	"github.com/ambientmesh/ambient-operator/internal/spiffe"
)

// ValidateCSR checks a workload CSR before anything is sent to the issuer: a single PEM
// "CERTIFICATE REQUEST" block, a valid self-signature, an ECDSA P-256 key, and exactly one
// SAN, the URI of the requested identity.
func ValidateCSR(csrPEM []byte, want spiffe.ID) (*x509.CertificateRequest, error) {
	block, rest := pem.Decode(csrPEM)
	if block == nil {
		return nil, errors.New("csr: not PEM encoded")
	}
	if block.Type != "CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("csr: PEM block is %q, want \"CERTIFICATE REQUEST\"", block.Type)
	}
	if len(bytesTrimSpace(rest)) > 0 {
		return nil, errors.New("csr: trailing data after the PEM block")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("csr: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("csr: signature does not verify: %v", err)
	}
	key, ok := csr.PublicKey.(*ecdsa.PublicKey)
	if !ok || key.Curve != elliptic.P256() {
		return nil, fmt.Errorf("csr: key must be ECDSA P-256, got %s", keyDescription(csr))
	}
	if n := len(csr.DNSNames) + len(csr.IPAddresses) + len(csr.EmailAddresses); n > 0 {
		return nil, errors.New("csr: only a URI SAN (the SPIFFE id) is allowed; found DNS, IP or email SANs")
	}
	if len(csr.URIs) != 1 {
		return nil, fmt.Errorf("csr: want exactly one URI SAN (%s), found %d", want, len(csr.URIs))
	}
	if got := csr.URIs[0].String(); got != want.String() {
		return nil, fmt.Errorf("csr: URI SAN %q differs from the requested identity %q", got, want)
	}
	return csr, nil
}

func keyDescription(csr *x509.CertificateRequest) string {
	if key, ok := csr.PublicKey.(*ecdsa.PublicKey); ok {
		return "ECDSA " + key.Curve.Params().Name
	}
	return csr.PublicKeyAlgorithm.String()
}

func bytesTrimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\n' || b[0] == '\r' || b[0] == '\t') {
		b = b[1:]
	}
	return b
}

// ClampTTL turns a requested lifetime into the one asked of the issuer: 0 means def,
// anything above max is cut to max, anything below min raised to min (cert-manager refuses
// very short certificates).
func ClampTTL(requested, def, minTTL, maxTTL time.Duration) time.Duration {
	ttl := requested
	if ttl <= 0 {
		ttl = def
	}
	return min(max(ttl, minTTL), maxTTL)
}

// SplitPEMCertificates parses every CERTIFICATE block of a PEM bundle, in order, and
// returns each certificate also as a PEM block of its own.
func SplitPEMCertificates(data []byte) ([]*x509.Certificate, []string, error) {
	certs, err := pemcert.Parse(data)
	if err != nil {
		return nil, nil, err
	}
	pems := make([]string, len(certs))
	for i, c := range certs {
		pems[i] = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
	}
	return certs, pems, nil
}

// isSelfSigned reports whether a certificate is a root (subject = issuer, self-verifying).
func isSelfSigned(c *x509.Certificate) bool {
	return c.CheckSignatureFrom(c) == nil
}

package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"github.com/ambientmesh/ambient-operator/internal/spiffe"
)

// ServingCert is the control plane's own certificate for the xDS (and CA) port, from the
// same issuer as every workload certificate: a key made in memory, a CertificateRequest
// through the Signer, renewed at half its life. The roots the issuer reports are its roots
// (Roots, OnRoots), which the trust bundle always holds (see TrustRoots).
type ServingCert struct {
	Signer   *Signer
	Identity spiffe.ID
	// DNSNames the control plane is dialed by (its Service's names).
	DNSNames []string
	TTL      time.Duration
	// OnRoots is called with the trust anchors after every issuance.
	OnRoots func(roots []string)
	// ClientCAs, when set, returns the roots client certificates are verified against
	// (the trust bundle); otherwise they are verified against the issuer's roots.
	ClientCAs func() *x509.CertPool
	Log       logr.Logger

	mu    sync.RWMutex
	cert  *tls.Certificate
	roots *x509.CertPool
	pems  []string
}

// Issue obtains a certificate now.
func (s *ServingCert) Issue(ctx context.Context) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:  pkix.Name{Organization: []string{"ambientmesh"}},
		URIs:     []*url.URL{s.Identity.URI()},
		DNSNames: s.DNSNames,
	}, key)
	if err != nil {
		return err
	}
	csrPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER})
	signed, err := s.Signer.Sign(ctx, csrPEM, s.TTL, s.Identity.String())
	if err != nil {
		return fmt.Errorf("control-plane certificate: %w", err)
	}
	certs, _, err := SplitPEMCertificates(signed.CertificatePEM)
	if err != nil || len(certs) == 0 {
		return fmt.Errorf("control-plane certificate: unreadable issuer answer: %v", err)
	}
	roots := RootsFrom(signed)
	if len(roots) == 0 {
		return errors.New("control-plane certificate: the issuer reported no CA")
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AppendCertsFromPEM([]byte(r))
	}
	tc := &tls.Certificate{PrivateKey: key, Leaf: certs[0]}
	for _, c := range certs {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	s.mu.Lock()
	s.cert, s.roots, s.pems = tc, pool, roots
	s.mu.Unlock()
	if s.OnRoots != nil {
		s.OnRoots(roots)
	}
	s.Log.Info("control-plane certificate issued", "identity", s.Identity.String(), "serial", certs[0].SerialNumber.String(), "notAfter", certs[0].NotAfter)
	return nil
}

// Run renews the certificate at half its life (retrying every 10s on failure) until ctx ends.
func (s *ServingCert) Run(ctx context.Context) {
	const retry = 10 * time.Second
	failed := false
	for {
		wait := retry
		if leaf := s.leaf(); leaf != nil && !failed {
			half := leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
			wait = max(time.Until(half), 0)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		err := s.Issue(ctx)
		failed = err != nil // past half life already: retry every 10s, not in a tight loop
		if err != nil && ctx.Err() == nil {
			s.Log.Error(err, "renewing the control-plane certificate; keeping the current one")
		}
	}
}

func (s *ServingCert) leaf() *x509.Certificate {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.cert == nil {
		return nil
	}
	return s.cert.Leaf
}

// Roots returns the roots of the control plane's certificate as PEM.
func (s *ServingCert) Roots() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.pems
}

// ServerTLS implements CertSource: the current certificate, TLS 1.3, client certificates
// verified against the mesh roots (required when requireClientCert is set).
func (s *ServingCert) ServerTLS(requireClientCert bool) *tls.Config {
	return serverTLS(requireClientCert, func() (*tls.Certificate, *x509.CertPool, error) {
		s.mu.RLock()
		defer s.mu.RUnlock()
		if s.cert == nil {
			return nil, nil, errors.New("control-plane certificate not issued yet")
		}
		if s.ClientCAs != nil {
			return s.cert, s.ClientCAs(), nil
		}
		return s.cert, s.roots, nil
	})
}

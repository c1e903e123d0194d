package hbone

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ambientmesh/ambient-operator/internal/spiffe"
)

// NextProtoH2 is the only ALPN protocol HBONE speaks.
const NextProtoH2 = "h2"

// CertSource provides the current certificate of a local identity.
//
// It is asked at every TLS handshake, so a rotated certificate is used by the
// next connection while connections already open keep the one they were
// established with (rotation never drops a connection). Certificate may block
// until ctx is done when the identity has no certificate yet (lazy start).
type CertSource interface {
	Certificate(ctx context.Context, id spiffe.ID) (*tls.Certificate, error)
}

// CertSourceFunc adapts a function to CertSource.
type CertSourceFunc func(ctx context.Context, id spiffe.ID) (*tls.Certificate, error)

// Certificate calls f.
func (f CertSourceFunc) Certificate(ctx context.Context, id spiffe.ID) (*tls.Certificate, error) {
	return f(ctx, id)
}

// RootsSource provides the current trust bundle. It is asked at every
// handshake, so a changed bundle applies to the next connection.
type RootsSource interface {
	Roots() *x509.CertPool
}

// RootsFunc adapts a function to RootsSource.
type RootsFunc func() *x509.CertPool

// Roots calls f.
func (f RootsFunc) Roots() *x509.CertPool { return f() }

// Bundle is a RootsSource whose pool can be replaced at any time.
type Bundle struct{ pool atomic.Pointer[x509.CertPool] }

// NewBundle returns a Bundle holding pool.
func NewBundle(pool *x509.CertPool) *Bundle {
	b := &Bundle{}
	b.Set(pool)
	return b
}

// Set replaces the trust bundle.
func (b *Bundle) Set(pool *x509.CertPool) { b.pool.Store(pool) }

// Roots returns the current trust bundle (nil when none is set: every peer is then rejected).
func (b *Bundle) Roots() *x509.CertPool { return b.pool.Load() }

// CertStore is an in-memory CertSource: Put installs or rotates the
// certificate of an identity; Certificate waits for one to be put.
type CertStore struct {
	mu      sync.Mutex
	certs   map[spiffe.ID]*tls.Certificate
	waiters map[spiffe.ID]chan struct{}
}

// NewCertStore returns an empty CertStore.
func NewCertStore() *CertStore {
	return &CertStore{certs: map[spiffe.ID]*tls.Certificate{}, waiters: map[spiffe.ID]chan struct{}{}}
}

// Put sets the current certificate of id (chain leaf first, with its key).
func (s *CertStore) Put(id spiffe.ID, cert *tls.Certificate) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.certs[id] = cert
	if ch, ok := s.waiters[id]; ok {
		close(ch)
		delete(s.waiters, id)
	}
}

// Delete forgets the certificate of id.
func (s *CertStore) Delete(id spiffe.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.certs, id)
}

// Certificate returns the current certificate of id, waiting until one is put
// or ctx is done.
func (s *CertStore) Certificate(ctx context.Context, id spiffe.ID) (*tls.Certificate, error) {
	for {
		s.mu.Lock()
		if c, ok := s.certs[id]; ok {
			s.mu.Unlock()
			return c, nil
		}
		ch, ok := s.waiters[id]
		if !ok {
			ch = make(chan struct{})
			s.waiters[id] = ch
		}
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("hbone: no certificate for %s: %w", id, context.Cause(ctx))
		}
	}
}

// ServerTLSConfig returns the TLS config of an HBONE server answering as
// local: TLS 1.3 only, ALPN h2, a client certificate is required and must
// chain to roots and carry a SPIFFE URI SAN (any identity: authorization is
// the handler's job; PeerIdentity reads it back).
func ServerTLSConfig(local spiffe.ID, certs CertSource, roots RootsSource) *tls.Config {
	base := &tls.Config{
		MinVersion: tls.VersionTLS13,
		MaxVersion: tls.VersionTLS13,
		NextProtos: []string{NextProtoH2},
		ClientAuth: tls.RequireAndVerifyClientCert,
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			return certs.Certificate(hello.Context(), local)
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if cs.NegotiatedProtocol != NextProtoH2 {
				return fmt.Errorf("hbone: client did not negotiate ALPN %q", NextProtoH2)
			}
			_, err := PeerIdentity(&cs)
			return err
		},
		// Full-size records from the first byte: HBONE connections are long
		// lived and carry bulk data, so the small-record warm-up only costs.
		DynamicRecordSizingDisabled: true,
	}
	// The trust bundle can change, and tls.Config.ClientCAs cannot once in
	// use: each handshake gets a copy holding the bundle of the moment. Using
	// crypto/tls's own chain verification also gives the client precise
	// alerts (expired certificate, unknown CA).
	cfg := base.Clone()
	cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		pool := roots.Roots()
		if pool == nil {
			return nil, errors.New("hbone: no trust bundle configured")
		}
		c := base.Clone()
		c.ClientCAs = pool
		return c, nil
	}
	return cfg
}

// ClientTLSConfig returns the TLS config of an HBONE client with identity
// local that must reach a server whose certificate chains to roots and whose
// SPIFFE URI SAN equals peer.
func ClientTLSConfig(local, peer spiffe.ID, certs CertSource, roots RootsSource) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		MaxVersion: tls.VersionTLS13,
		NextProtos: []string{NextProtoH2},
		// The server is identified by its SPIFFE ID, not a DNS name, so the
		// standard name check cannot apply; VerifyConnection does the full
		// chain and identity check instead.
		InsecureSkipVerify: true,
		GetClientCertificate: func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return certs.Certificate(cri.Context(), local)
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if cs.NegotiatedProtocol != NextProtoH2 {
				return fmt.Errorf("hbone: server did not negotiate ALPN %q", NextProtoH2)
			}
			got, err := VerifyPeer(cs.PeerCertificates, roots.Roots(), x509.ExtKeyUsageServerAuth, time.Now())
			if err != nil {
				return err
			}
			if got != peer {
				return &IdentityMismatchError{Want: peer, Got: got}
			}
			return nil
		},
		DynamicRecordSizingDisabled: true,
	}
}

// IdentityMismatchError reports a peer certificate for another identity.
type IdentityMismatchError struct{ Want, Got spiffe.ID }

func (e *IdentityMismatchError) Error() string {
	return fmt.Sprintf("hbone: peer identity mismatch: certificate is for %s, want %s", e.Got, e.Want)
}

// VerifyPeer verifies a peer's certificate chain (leaf first) against roots
// at time now for usage, and returns the leaf's SPIFFE identity. The leaf must
// carry exactly one URI SAN, a valid SPIFFE ID.
func VerifyPeer(chain []*x509.Certificate, roots *x509.CertPool, usage x509.ExtKeyUsage, now time.Time) (spiffe.ID, error) {
	if len(chain) == 0 {
		return spiffe.ID{}, errors.New("hbone: peer sent no certificate")
	}
	if roots == nil {
		return spiffe.ID{}, errors.New("hbone: no trust bundle configured")
	}
	leaf := chain[0]
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	opts := x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{usage}}
	if _, err := leaf.Verify(opts); err != nil {
		return spiffe.ID{}, fmt.Errorf("hbone: peer certificate (serial %s) rejected: %w", leaf.SerialNumber, err)
	}
	return identityOf(leaf)
}

// PeerIdentity returns the SPIFFE identity of a verified TLS peer.
func PeerIdentity(cs *tls.ConnectionState) (spiffe.ID, error) {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return spiffe.ID{}, errors.New("hbone: connection has no peer certificate")
	}
	return identityOf(cs.PeerCertificates[0])
}

func identityOf(leaf *x509.Certificate) (spiffe.ID, error) {
	if len(leaf.URIs) != 1 {
		return spiffe.ID{}, fmt.Errorf("hbone: peer certificate has %d URI SANs, want exactly one SPIFFE ID", len(leaf.URIs))
	}
	id, err := spiffe.FromURI(leaf.URIs[0])
	if err != nil {
		return spiffe.ID{}, fmt.Errorf("hbone: peer certificate URI SAN: %w", err)
	}
	return id, nil
}

// Package catest is a test certificate authority: an ECDSA root that signs workload
// certificates, served as the workload API's CertificateService over gRPC on loopback.
package catest

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
	"math/big"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/internal/spiffe"
)

// CA is a root certificate and key.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	PEM  string
}

// New creates a root CA valid for a day.
func New(t testing.TB) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test mesh root"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &CA{Cert: cert, Key: key, PEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))}
}

// Pool returns a pool holding the root.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Sign issues a leaf for pub with id as its only URI SAN, valid from notBefore for validity.
func (ca *CA) Sign(pub any, id spiffe.ID, notBefore time.Time, validity time.Duration) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		NotBefore:    notBefore,
		NotAfter:     notBefore.Add(validity),
		URIs:         []*url.URL{id.URI()},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// Issue returns a ready tls.Certificate for id (tests that need one without the service).
func (ca *CA) Issue(t testing.TB, id spiffe.ID, notBefore time.Time, validity time.Duration) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Sign(&key.PublicKey, id, notBefore, validity)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
}

// Service is a CertificateService backed by a CA. It requires a bearer token equal to Token,
// a CSR whose only URI SAN equals the requested identity, and, if Allow is set, Allow(id).
type Service struct {
	pb.UnimplementedCertificateServiceServer
	CA    *CA
	Token string
	Allow func(id spiffe.ID) error
	// MaxValidity caps the lifetime (default 24h).
	MaxValidity time.Duration

	mu       sync.Mutex
	requests int
	failNext int
	Addr     string
}

// Serve starts the service on 127.0.0.1 until the test ends.
func (s *Service) Serve(t testing.TB, opts ...grpc.ServerOption) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(opts...)
	pb.RegisterCertificateServiceServer(srv, s)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	s.Addr = lis.Addr().String()
}

// Requests counts CreateCertificate calls.
func (s *Service) Requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

// FailNext makes the next n calls fail with Unavailable.
func (s *Service) FailNext(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNext = n
}

// CreateCertificate implements the service.
func (s *Service) CreateCertificate(ctx context.Context, req *pb.CreateCertificateRequest) (*pb.CreateCertificateResponse, error) {
	s.mu.Lock()
	s.requests++
	fail := s.failNext > 0
	if fail {
		s.failNext--
	}
	s.mu.Unlock()
	if fail {
		return nil, status.Error(codes.Unavailable, "test CA told to fail")
	}
	md, _ := metadata.FromIncomingContext(ctx)
	auth := md.Get(pb.AuthorizationMetadataKey)
	if len(auth) != 1 || auth[0] != pb.BearerPrefix+s.Token {
		return nil, status.Error(codes.Unauthenticated, "missing or wrong bearer token")
	}
	id, err := spiffe.Parse(req.GetImpersonatedIdentity())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "impersonated_identity: %v", err)
	}
	if s.Allow != nil {
		if err := s.Allow(id); err != nil {
			return nil, status.Errorf(codes.PermissionDenied, "%v", err)
		}
	}
	csr, err := parseCSR(req.GetCsr(), id)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "csr: %v", err)
	}
	validity := time.Duration(req.GetValiditySeconds()) * time.Second
	maxV := s.MaxValidity
	if maxV == 0 {
		maxV = 24 * time.Hour
	}
	if validity <= 0 || validity > maxV {
		validity = maxV
	}
	leaf, err := s.CA.Sign(csr.PublicKey, id, time.Now().Add(-time.Second), validity)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "signing: %v", err)
	}
	return &pb.CreateCertificateResponse{
		CertChain: []string{string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw}))},
		Roots:     []string{s.CA.PEM},
	}, nil
}

func parseCSR(p string, id spiffe.ID) (*x509.CertificateRequest, error) {
	block, _ := pem.Decode([]byte(p))
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("not a PEM certificate request")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, err
	}
	if len(csr.URIs) != 1 || !strings.EqualFold(csr.URIs[0].String(), id.String()) {
		return nil, fmt.Errorf("URI SANs %v, want exactly %s", csr.URIs, id)
	}
	return csr, nil
}

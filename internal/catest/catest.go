// Package catest serves a test certificate authority (internal/testca) as the
// workload API's CertificateService over gRPC on loopback, checking requests
// the way the control plane's CA does.
package catest

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
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
	"github.com/ambientmesh/ambient-operator/internal/testca"
)

// Service is a CertificateService backed by a CA. It requires a bearer token equal to Token,
// a CSR whose only URI SAN equals the requested identity, and, if Allow is set, Allow(id).
type Service struct {
	pb.UnimplementedCertificateServiceServer
	CA    *testca.CA
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
	s.ServeListener(t, lis, opts...)
	s.Addr = lis.Addr().String()
}

// ServeListener serves the same service on another listener until the test ends: one
// the caller opened, for example inside a network namespace (netnstest.NS.Listen), for
// clients that cannot reach loopback. Addr keeps naming the Serve listener.
func (s *Service) ServeListener(t testing.TB, lis net.Listener, opts ...grpc.ServerOption) {
	t.Helper()
	srv := grpc.NewServer(opts...)
	pb.RegisterCertificateServiceServer(srv, s)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
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
	leaf, err := s.CA.Sign(csr.PublicKey, id, testca.Validity(time.Now().Add(-time.Second), validity))
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

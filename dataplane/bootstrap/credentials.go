package bootstrap

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// DefaultTokenFile is where the operator mounts a proxy's projected service-account token
// (audience meshconfig.CAAudience).
const DefaultTokenFile = "/var/run/secrets/ambientmesh/tokens/ambientmesh-ca-token"

// TokenFile returns a function that reads the token at path anew for every request: the
// kubelet rotates projected tokens in place.
func TokenFile(path string) func() (string, error) {
	return func() (string, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", err
		}
		return strings.TrimSpace(string(b)), nil
	}
}

// LoadRoots reads the PEM roots that sign the control plane's serving certificate.
func LoadRoots(path string) (*x509.CertPool, error) {
	if path == "" {
		return nil, errors.New("--ca-root-file is required (or --insecure-control-plane for tests)")
	}
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--ca-root-file %s: no PEM certificate", path)
	}
	return pool, nil
}

// Transport returns the control-plane credentials: TLS 1.3 verified against roots, with a
// client certificate when clientCert is set; plaintext when insecurePlain (tests only).
func Transport(insecurePlain bool, roots *x509.CertPool, clientCert func(*tls.CertificateRequestInfo) (*tls.Certificate, error)) grpc.DialOption {
	if insecurePlain {
		return grpc.WithTransportCredentials(insecure.NewCredentials())
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		MinVersion:           tls.VersionTLS13,
		RootCAs:              roots,
		GetClientCertificate: clientCert,
	}))
}

// BearerToken sends the proxy's projected token on a gRPC stream: the control plane
// authenticates a proxy that has no mesh certificate of its own yet by it, as Istio's
// proxies do.
type BearerToken struct {
	Read   func() (string, error)
	Secure bool
}

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (b BearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	tok, err := b.Read()
	if err != nil {
		return nil, fmt.Errorf("reading the service-account token: %w", err)
	}
	return map[string]string{"authorization": "Bearer " + tok}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials.
func (b BearerToken) RequireTransportSecurity() bool { return b.Secure }

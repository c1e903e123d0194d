package bootstrap

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"

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

// RootsFile is the --ca-root-file: the PEM roots that sign the control plane's serving
// certificate. When the mesh root rotates, the control plane's certificate is renewed
// under the new root and the file changes (it is a mounted Secret or ConfigMap, which the
// kubelet updates by a symlink swap). So before every new connection to the control plane
// verifies its certificate, the file is looked at again (stat), and read again when it is
// another file or its size or modification time changed. A file that cannot be read, or
// holds no PEM certificate, leaves the last good roots in use, and each next connection
// tries again.
type RootsFile struct {
	path string

	mu   sync.Mutex
	read os.FileInfo // the file the roots were read from
	pool *x509.CertPool
	err  error // why the file could not be read again, until it can
}

// LoadRootsFile reads the roots at path; the file must be readable and hold a certificate.
func LoadRootsFile(path string) (*RootsFile, error) {
	if path == "" {
		return nil, errors.New("--ca-root-file is required (or --insecure-control-plane for tests)")
	}
	pool, info, err := readRoots(path)
	if err != nil {
		return nil, err
	}
	return &RootsFile{path: path, read: info, pool: pool}, nil
}

// Roots returns the roots to verify a new connection with, having read the file again
// if it changed. The error says why a changed file could not be read (the roots are then
// the last good ones); it is nil when the roots are the file's current content.
func (r *RootsFile) Roots() (*x509.CertPool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now, statErr := os.Stat(r.path)
	switch {
	case statErr != nil:
		r.err = statErr
	case sameVersion(now, r.read):
		r.err = nil
	default:
		if pool, info, err := readRoots(r.path); err != nil {
			r.err = err
		} else {
			r.pool, r.read, r.err = pool, info, nil
		}
	}
	return r.pool, r.err
}

// sameVersion: the same file (inode), neither resized nor modified.
func sameVersion(a, b os.FileInfo) bool {
	return os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}

// readRoots reads the roots at path and describes the file they came from.
func readRoots(path string) (*x509.CertPool, os.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	pem, err := io.ReadAll(f)
	if err != nil {
		return nil, nil, fmt.Errorf("--ca-root-file %s: %w", path, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, nil, fmt.Errorf("--ca-root-file %s: no PEM certificate", path)
	}
	return pool, info, nil
}

// Transport returns the control-plane credentials: TLS 1.3 verified against roots, with a
// client certificate when clientCert is set; plaintext when insecurePlain (tests only).
func Transport(insecurePlain bool, roots *x509.CertPool, clientCert func(*tls.CertificateRequestInfo) (*tls.Certificate, error)) grpc.DialOption {
	if insecurePlain {
		return grpc.WithTransportCredentials(insecure.NewCredentials())
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(tlsConfig(roots, clientCert)))
}

// Credentials are the control-plane credentials of Transport, verified against the roots
// of the file as they are at each handshake (see RootsFile).
func (r *RootsFile) Credentials(clientCert func(*tls.CertificateRequestInfo) (*tls.Certificate, error)) credentials.TransportCredentials {
	return &rereadingTLS{roots: r, clientCert: clientCert}
}

func tlsConfig(roots *x509.CertPool, clientCert func(*tls.CertificateRequestInfo) (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		RootCAs:              roots,
		GetClientCertificate: clientCert,
	}
}

// rereadingTLS is gRPC's TLS credentials, built anew for each handshake from the roots
// the file holds then (gRPC dials every new connection through ClientHandshake).
type rereadingTLS struct {
	roots      *RootsFile
	clientCert func(*tls.CertificateRequestInfo) (*tls.Certificate, error)
}

func (c *rereadingTLS) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	pool, rereadErr := c.roots.Roots()
	conn, info, err := credentials.NewTLS(tlsConfig(pool, c.clientCert)).ClientHandshake(ctx, authority, raw)
	if err != nil && rereadErr != nil {
		err = fmt.Errorf("%w (verified against the roots last read from %s; reading it again failed: %v)", err, c.roots.path, rereadErr)
	}
	return conn, info, err
}

func (c *rereadingTLS) ServerHandshake(net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("bootstrap: the control-plane credentials are a client's")
}

func (c *rereadingTLS) Info() credentials.ProtocolInfo {
	return credentials.NewTLS(tlsConfig(nil, nil)).Info()
}

func (c *rereadingTLS) Clone() credentials.TransportCredentials {
	return &rereadingTLS{roots: c.roots, clientCert: c.clientCert}
}

// OverrideServerName is gRPC's deprecated way to set the name the server's certificate
// must carry; use grpc.WithAuthority.
func (c *rereadingTLS) OverrideServerName(string) error {
	return errors.New("bootstrap: set the control plane's name with grpc.WithAuthority")
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

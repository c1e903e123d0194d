package identity

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// CertSource is where the control plane's serving certificate and the mesh roots come from.
type CertSource interface {
	// ServerTLS returns the TLS configuration of a port; see ServingCert.ServerTLS.
	ServerTLS(requireClientCert bool) *tls.Config
	// Roots returns the roots of the control plane's certificate as PEM.
	Roots() []string
}

var (
	_ CertSource = (*ServingCert)(nil)
	_ CertSource = (*FileCert)(nil)
)

// FileCert serves the certificate cert-manager writes into a mounted Secret (tls.crt,
// tls.key, ca.crt) — the operator's Certificate for the control plane. The files are
// re-read when they change (cert-manager renews them in place), checked at most every
// ReloadEvery on a handshake.
type FileCert struct {
	Dir         string
	ReloadEvery time.Duration
	// OnRoots is called with the roots (ca.crt) after every load.
	OnRoots func([]string)
	// ClientCAs, when set, returns the roots client certificates are verified against
	// (the trust bundle); otherwise they are verified against ca.crt.
	ClientCAs func() *x509.CertPool

	mu        sync.Mutex
	checked   time.Time
	modTime   time.Time
	cert      *tls.Certificate
	roots     *x509.CertPool
	rootsPEM  []string
	lastError error
}

// Load reads the files now.
func (f *FileCert) Load() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.loadLocked()
}

func (f *FileCert) loadLocked() error {
	certFile, keyFile, caFile := filepath.Join(f.Dir, "tls.crt"), filepath.Join(f.Dir, "tls.key"), filepath.Join(f.Dir, "ca.crt")
	info, err := os.Stat(certFile)
	if err != nil {
		return err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return fmt.Errorf("control-plane certificate in %s: %w", f.Dir, err)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return fmt.Errorf("mesh roots: %w", err)
	}
	_, pems, err := SplitPEMCertificates(caPEM)
	if err != nil || len(pems) == 0 {
		return fmt.Errorf("mesh roots in %s: no certificate (%v)", caFile, err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	f.cert, f.roots, f.rootsPEM, f.modTime = &cert, pool, pems, info.ModTime()
	if f.OnRoots != nil {
		f.OnRoots(pems)
	}
	return nil
}

func (f *FileCert) current() (*tls.Certificate, *x509.CertPool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	every := f.ReloadEvery
	if every <= 0 {
		every = 10 * time.Second
	}
	if time.Since(f.checked) >= every {
		f.checked = time.Now()
		if info, err := os.Stat(filepath.Join(f.Dir, "tls.crt")); err == nil && !info.ModTime().Equal(f.modTime) {
			f.lastError = f.loadLocked() // on error keep serving the previous certificate
		}
	}
	if f.cert == nil {
		return nil, nil, errors.Join(errors.New("control-plane certificate not loaded"), f.lastError)
	}
	if f.ClientCAs != nil {
		return f.cert, f.ClientCAs(), nil
	}
	return f.cert, f.roots, nil
}

// ServerTLS implements CertSource.
func (f *FileCert) ServerTLS(requireClientCert bool) *tls.Config {
	return serverTLS(requireClientCert, f.current)
}

// Roots implements CertSource.
func (f *FileCert) Roots() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rootsPEM
}

// serverTLS builds a TLS 1.3 server configuration that picks up the current certificate
// and the roots client certificates are verified against on every handshake. Without requireClientCert, client certificates are
// verified when given (the xDS port then also accepts a bearer token instead).
func serverTLS(requireClientCert bool, current func() (*tls.Certificate, *x509.CertPool, error)) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{"h2"},
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cert, roots, err := current()
			if err != nil {
				return nil, err
			}
			cfg := &tls.Config{
				MinVersion:   tls.VersionTLS13,
				NextProtos:   []string{"h2"},
				Certificates: []tls.Certificate{*cert},
				ClientCAs:    roots,
				ClientAuth:   tls.VerifyClientCertIfGiven,
			}
			if requireClientCert {
				cfg.ClientAuth = tls.RequireAndVerifyClientCert
			}
			return cfg, nil
		},
	}
}

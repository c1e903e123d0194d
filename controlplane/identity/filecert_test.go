package identity

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ambientmesh/ambient-operator/internal/testca"
)

// writeLeaf writes a serving certificate for cp.test signed by ca, as
// cert-manager writes a Certificate's Secret (tls.crt, tls.key, ca.crt).
func writeLeaf(t *testing.T, ca *testca.CA, dir string, serial int64) {
	key := p256(t)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), DNSNames: []string{"cp.test"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	for name, data := range map[string][]byte{
		"tls.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		"tls.key": pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
		"ca.crt":  []byte(ca.PEM),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// Distinct modification times even on coarse-grained file systems.
	later := time.Now().Add(time.Duration(serial) * time.Second)
	_ = os.Chtimes(filepath.Join(dir, "tls.crt"), later, later)
}

// TestFileCertServesAndReloads serves TLS from the mounted files over loopback and picks
// up a renewed certificate without a restart.
func TestFileCertServesAndReloads(t *testing.T) {
	dir := t.TempDir()
	ca := testca.New(t)
	writeLeaf(t, ca, dir, 100)
	var published []string
	fc := &FileCert{Dir: dir, ReloadEvery: time.Nanosecond, OnRoots: func(r []string) { published = r }}
	if err := fc.Load(); err != nil {
		t.Fatal(err)
	}
	if len(published) != 1 || published[0] != ca.PEM {
		t.Fatalf("roots published = %v, want the CA", published)
	}
	lis, err := tls.Listen("tcp", "127.0.0.1:0", fc.ServerTLS(false))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = lis.Close() }()
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			_ = c.(*tls.Conn).Handshake()
			_ = c.Close()
		}
	}()
	serial := func() int64 {
		pool := x509.NewCertPool()
		pool.AddCert(ca.Cert)
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", lis.Addr().String(),
			&tls.Config{RootCAs: pool, ServerName: "cp.test", MinVersion: tls.VersionTLS13})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = conn.Close() }()
		if v := conn.ConnectionState().Version; v != tls.VersionTLS13 {
			t.Fatalf("TLS version %x, want 1.3", v)
		}
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
	if got := serial(); got != 100 {
		t.Fatalf("served serial %d, want 100", got)
	}
	writeLeaf(t, ca, dir, 200) // cert-manager renewed the Secret
	if got := serial(); got != 200 {
		t.Fatalf("after renewal served serial %d, want 200", got)
	}
}

func TestFileCertMissingFiles(t *testing.T) {
	fc := &FileCert{Dir: t.TempDir()}
	if err := fc.Load(); err == nil {
		t.Fatal("Load succeeded without files")
	}
	if _, _, err := fc.current(); err == nil {
		t.Fatal("serving without a certificate")
	}
}

package bootstrap

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/ambientmesh/ambient-operator/internal/spiffe"
	"github.com/ambientmesh/ambient-operator/internal/testca"
	"github.com/ambientmesh/ambient-operator/internal/testwait"
)

// replaceFile puts content at path as a ConfigMap volume does: written beside it, then
// renamed over it.
func replaceFile(t *testing.T, path, content string) {
	t.Helper()
	next := path + ".next"
	if err := os.WriteFile(next, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(next, path); err != nil {
		t.Fatal(err)
	}
}

func poolOf(cas ...*testca.CA) *x509.CertPool {
	p := x509.NewCertPool()
	for _, ca := range cas {
		p.AddCert(ca.Cert)
	}
	return p
}

func TestRootsFileFollowsTheFileAndKeepsTheLastGoodRoots(t *testing.T) {
	a, b := testca.New(t), testca.New(t)
	path := filepath.Join(t.TempDir(), "root-cert.pem")
	replaceFile(t, path, a.PEM)
	roots, err := LoadRootsFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		name    string
		change  func()
		want    *x509.CertPool
		wantErr string // "" when the file read well
	}{
		{"unchanged", func() {}, poolOf(a), ""},
		{"replaced by text that holds no certificate", func() { replaceFile(t, path, "not a certificate\n") }, poolOf(a), "no PEM certificate"},
		{"removed", func() { os.Remove(path) }, poolOf(a), "no such file"},
		{"replaced by the new root", func() { replaceFile(t, path, b.PEM) }, poolOf(b), ""},
		{"written in place with both roots", func() {
			if err := os.WriteFile(path, []byte(b.PEM+a.PEM), 0o600); err != nil {
				t.Fatal(err)
			}
		}, poolOf(a, b), ""},
	} {
		step.change()
		pool, err := roots.Roots()
		if step.wantErr == "" && err != nil || step.wantErr != "" && (err == nil || !strings.Contains(err.Error(), step.wantErr)) {
			t.Fatalf("%s: error %v, want %q", step.name, err, step.wantErr)
		}
		if !pool.Equal(step.want) {
			t.Fatalf("%s: the roots in use are not the expected ones", step.name)
		}
	}
}

func TestLoadRootsFileRefusesAMissingOrEmptyFile(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.pem")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"", filepath.Join(dir, "missing.pem"), empty} {
		if _, err := LoadRootsFile(path); err == nil {
			t.Errorf("LoadRootsFile(%q) accepted it", path)
		}
	}
}

// controlPlaneAt serves the gRPC health service on addr with a serving certificate for
// 127.0.0.1 from ca, until stop.
func controlPlaneAt(t *testing.T, addr string, ca *testca.CA) (stop func(), boundAddr string) {
	t.Helper()
	cert := ca.Issue(t, spiffe.ID{TrustDomain: "cluster.local", Namespace: "ambient-system", ServiceAccount: "controlplane"},
		func(c *x509.Certificate) { c.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)} })
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS13})))
	healthpb.RegisterHealthServer(g, health.NewServer())
	go func() { _ = g.Serve(l) }() // returns when Stop closes the listener
	t.Cleanup(g.Stop)
	return g.Stop, l.Addr().String()
}

// The control plane's serving certificate is renewed under a new root, and the operator
// updates --ca-root-file: the proxy's existing connections to the certificate service and
// to xDS reconnect to it, verified against the new root, without a restart.
func TestConnectFollowsTheControlPlaneToANewRoot(t *testing.T) {
	a, b := testca.New(t), testca.New(t)
	dir := t.TempDir()
	rootFile, tokenFile := filepath.Join(dir, "root-cert.pem"), filepath.Join(dir, "token")
	replaceFile(t, rootFile, a.PEM)
	replaceFile(t, tokenFile, "a-token")
	stop, addr := controlPlaneAt(t, "127.0.0.1:0", a)

	f := &Flags{CARootFile: rootFile, CAAddress: addr, TokenFile: tokenFile}
	cp, err := f.Connect(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cp.CA.Close() })
	xds, err := grpc.NewClient(addr, cp.XDSDialOptions...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { xds.Close() })
	conns := map[string]*grpc.ClientConn{"certificate service": cp.CA, "xDS": xds}
	check := func(conn *grpc.ClientConn) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	for name, conn := range conns {
		if err := check(conn); err != nil {
			t.Fatalf("%s under root A: %v", name, err)
		}
	}

	// A failing connection reports its last attempt's error (the first after the restart
	// may be the old connection's end): poll until an attempt made since reports refusal.
	refused := func(step, name string, conn *grpc.ClientConn, because string) {
		t.Helper()
		conn.ResetConnectBackoff()
		testwait.For(t, step+": "+name+" refusing the control plane because "+because, 10*time.Second, func() bool {
			err := check(conn)
			if err == nil {
				t.Fatalf("%s: %s accepted the control plane's certificate from root B", step, name)
			}
			return strings.Contains(err.Error(), because)
		})
	}
	stop()
	controlPlaneAt(t, addr, b)
	for name, conn := range conns {
		refused("--ca-root-file holds root A", name, conn, "certificate signed by unknown authority")
	}
	replaceFile(t, rootFile, "being rewritten")
	for name, conn := range conns {
		refused("--ca-root-file unreadable", name, conn, "reading it again failed")
	}

	replaceFile(t, rootFile, b.PEM)
	for name, conn := range conns {
		conn.ResetConnectBackoff()
		testwait.For(t, name+" to reconnect under root B", 10*time.Second, func() bool { return check(conn) == nil })
	}
}

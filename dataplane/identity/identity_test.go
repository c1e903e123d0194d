package identity_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/dataplane/identity"
	"github.com/ambientmesh/ambient-operator/internal/catest"
	"github.com/ambientmesh/ambient-operator/internal/spiffe"
	"github.com/ambientmesh/ambient-operator/internal/testca"
	"github.com/ambientmesh/ambient-operator/internal/testwait"
)

var cart = spiffe.MustNew("cluster.local", "shop", "cart")

func setup(t *testing.T, ttl time.Duration) (*identity.Manager, *catest.Service) {
	t.Helper()
	svc := &catest.Service{CA: testca.New(t), Token: "node-a-token"}
	svc.Serve(t)
	conn, err := grpc.NewClient(svc.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	m := identity.NewManager(identity.Config{
		CA:       pb.NewCertificateServiceClient(conn),
		Token:    func() (string, error) { return "node-a-token", nil },
		TTL:      ttl,
		RetryMin: 50 * time.Millisecond,
		RetryMax: 200 * time.Millisecond,
		Log:      testr.New(t),
	})
	return m, svc
}

func TestIssuesP256CertificateWithTheIdentity(t *testing.T) {
	m, svc := setup(t, time.Hour)
	m.Acquire(cart)
	defer m.Release(cart)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cert, err := m.Certificate(ctx, cart)
	if err != nil {
		t.Fatal(err)
	}
	key, ok := cert.PrivateKey.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		t.Fatalf("key %T is not ECDSA P-256", cert.PrivateKey)
	}
	if got := cert.Leaf.URIs[0].String(); got != cart.String() {
		t.Fatalf("SAN %s", got)
	}
	if life := cert.Leaf.NotAfter.Sub(cert.Leaf.NotBefore); life < 59*time.Minute || life > 61*time.Minute {
		t.Fatalf("lifetime %v, want the requested hour", life)
	}
	if m.Roots() == nil || !m.Roots().Equal(svc.CA.Pool()) {
		t.Fatal("roots from the CA answer not kept")
	}
	d := m.Dump()
	if len(d) != 1 || d[0].State != "Available" || d[0].Serial != cert.Leaf.SerialNumber.Text(16) || !d[0].NotAfter.Equal(cert.Leaf.NotAfter) {
		t.Fatalf("dump %+v", d)
	}
}

func TestRenewsAtHalfLife(t *testing.T) {
	m, _ := setup(t, 4*time.Second)
	m.Acquire(cart)
	defer m.Release(cart)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	first, err := m.Certificate(ctx, cart)
	if err != nil {
		t.Fatal(err)
	}
	// Half of the 4s lifetime later a new certificate (new serial, new key) replaces it,
	// well before the first expires, and not much earlier.
	issued := time.Now()
	var cur *tls.Certificate
	testwait.For(t, "the certificate renewed by 3/4 of its life", 3*time.Second, func() bool {
		if cur, err = m.Certificate(ctx, cart); err != nil {
			t.Fatal(err)
		}
		return cur.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) != 0
	})
	if time.Now().After(first.Leaf.NotAfter) {
		t.Fatal("renewed only after expiry")
	}
	if since := time.Since(issued); since < time.Second { // x509 times have 1s precision
		t.Fatalf("renewed after %v, want about half of the 4s lifetime", since)
	}
	if cur.PrivateKey.(*ecdsa.PrivateKey).Equal(first.PrivateKey) {
		t.Fatal("renewal reused the key")
	}
}

func TestLazyWaitIsBoundedWithAClearError(t *testing.T) {
	m, svc := setup(t, time.Hour)
	svc.FailNext(1000)
	m.Acquire(cart)
	defer m.Release(cart)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := m.Certificate(ctx, cart)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "no certificate for spiffe://cluster.local/ns/shop/sa/cart yet") ||
		!strings.Contains(err.Error(), "test CA told to fail") {
		t.Fatalf("got %v", err)
	}
	// Once the CA recovers, the retry delivers the certificate.
	svc.FailNext(0)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if _, err := m.Certificate(ctx2, cart); err != nil {
		t.Fatal(err)
	}
}

func TestUnknownIdentityAndRelease(t *testing.T) {
	m, svc := setup(t, time.Hour)
	if _, err := m.Certificate(context.Background(), cart); !errors.Is(err, identity.ErrUnknownIdentity) {
		t.Fatalf("got %v", err)
	}
	m.Acquire(cart)
	m.Acquire(cart) // a second pod with the same service account shares the certificate
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := m.Certificate(ctx, cart); err != nil {
		t.Fatal(err)
	}
	if n := svc.Requests(); n != 1 {
		t.Fatalf("%d CA requests for one identity", n)
	}
	m.Release(cart)
	if _, err := m.Certificate(ctx, cart); err != nil {
		t.Fatal("certificate dropped while a pod still uses it")
	}
	m.Release(cart)
	if _, err := m.Certificate(ctx, cart); !errors.Is(err, identity.ErrUnknownIdentity) {
		t.Fatalf("after the last release: %v", err)
	}
}

func TestWrongTokenIsReported(t *testing.T) {
	svc := &catest.Service{CA: testca.New(t), Token: "right"}
	svc.Serve(t)
	conn, _ := grpc.NewClient(svc.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	defer conn.Close()
	m := identity.NewManager(identity.Config{CA: pb.NewCertificateServiceClient(conn), Token: func() (string, error) { return "wrong", nil }, Log: testr.New(t)})
	m.Acquire(cart)
	defer m.Release(cart)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second) // generous: CI runs packages in parallel on 2 cores
	defer cancel()
	if _, err := m.Certificate(ctx, cart); err == nil || !strings.Contains(err.Error(), "Unauthenticated") {
		t.Fatalf("got %v", err)
	}
}

package hbone

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"net/netip"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/ambientmesh/ambient-operator/internal/spiffe"
)

var (
	clientID = spiffe.MustNew("cluster.local", "shop", "frontend")
	serverID = spiffe.MustNew("cluster.local", "shop", "cart")
	otherID  = spiffe.MustNew("cluster.local", "shop", "payments")
)

// testCA is a real ECDSA P-256 CA issuing SPIFFE workload certificates.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{"test mesh"}, CommonName: "test root"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

var serial struct {
	sync.Mutex
	n int64
}

func nextSerial() *big.Int {
	serial.Lock()
	defer serial.Unlock()
	serial.n++
	return big.NewInt(1000 + serial.n)
}

type x509Cert = x509.Certificate

type certOpt func(*x509.Certificate)

func validity(from, to time.Time) certOpt {
	return func(c *x509.Certificate) { c.NotBefore, c.NotAfter = from, to }
}

// issue returns a workload certificate for id (chain: leaf, no intermediates).
func (ca *testCA) issue(t testing.TB, id spiffe.ID, opts ...certOpt) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(),
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{id.URI()},
	}
	for _, o := range opts {
		o(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// env is an HBONE server on loopback, a client pool and an echo upstream.
type env struct {
	ca       *testCA
	certs    *CertStore
	bundle   *Bundle
	srv      *Server
	via      netip.AddrPort
	pool     *Pool
	upstream netip.AddrPort // a TCP echo server
}

type envOpts struct {
	server  func(*ServerConfig)
	pool    func(*PoolConfig)
	handler Handler
}

func newEnv(t testing.TB, o envOpts) *env {
	t.Helper()
	e := &env{ca: newTestCA(t), certs: NewCertStore()}
	e.bundle = NewBundle(e.ca.pool)
	e.certs.Put(clientID, e.ca.issue(t, clientID))
	e.certs.Put(serverID, e.ca.issue(t, serverID))
	e.upstream = startEcho(t)
	h := o.handler
	if h == nil {
		h = forwardHandler(nil)
	}
	scfg := ServerConfig{Identity: serverID, Certs: e.certs, Roots: e.bundle, Handler: h}
	if o.server != nil {
		o.server(&scfg)
	}
	srv, err := NewServer(scfg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	e.srv = srv
	e.via = l.Addr().(*net.TCPAddr).AddrPort()
	pcfg := PoolConfig{Certs: e.certs, Roots: e.bundle}
	if o.pool != nil {
		o.pool(&pcfg)
	}
	pool, err := NewPool(pcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close() })
	e.pool = pool
	return e
}

func (e *env) dialReq() DialRequest {
	return DialRequest{Source: clientID, Peer: serverID, Target: e.upstream, Via: e.via}
}

func (e *env) dial(t testing.TB) *Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := e.pool.Dial(ctx, e.dialReq())
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	return c
}

// forwardHandler dials req.Target over TCP and joins; seen (optional)
// receives every request.
func forwardHandler(seen chan<- *Request) Handler {
	return HandlerFunc(func(ctx context.Context, req *Request) error {
		if seen != nil {
			seen <- req
		}
		var d net.Dialer
		up, err := d.DialContext(ctx, "tcp", req.Target.String())
		if err != nil {
			return Reject(503, "connect %s: %v", req.Target, err)
		}
		st, err := req.Accept()
		if err != nil {
			up.Close()
			return err
		}
		return Join(st, up, nil)
	})
}

// startEcho runs a TCP server that echoes until EOF, then closes its write side.
func startEcho(t testing.TB) netip.AddrPort {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	return l.Addr().(*net.TCPAddr).AddrPort()
}

package hbone

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/ambientmesh/ambient-operator/internal/testca"
)

// dialErr dials with a short timeout and returns the error (the test fails if
// the dial succeeds).
func (e *env) dialErr(t *testing.T, d DialRequest) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := e.pool.Dial(ctx, d)
	if err == nil {
		c.Close()
		t.Fatal("Dial succeeded, want an error")
	}
	return err
}

func TestClientRejectsWrongServerIdentity(t *testing.T) {
	e := newEnv(t, envOpts{})
	d := e.dialReq()
	d.Peer = otherID // the server presents serverID
	err := e.dialErr(t, d)
	var mismatch *IdentityMismatchError
	if !errors.As(err, &mismatch) {
		t.Fatalf("error = %v, want an IdentityMismatchError", err)
	}
	if mismatch.Got != serverID || mismatch.Want != otherID {
		t.Errorf("mismatch = got %s want %s", mismatch.Got, mismatch.Want)
	}
	if !strings.Contains(err.Error(), "peer identity mismatch") {
		t.Errorf("error text not clear: %v", err)
	}
}

func TestClientRejectsUntrustedServer(t *testing.T) {
	e := newEnv(t, envOpts{})
	rogue := testca.New(t)
	e.certs.Put(serverID, rogue.Issue(t, serverID)) // right SAN, wrong CA
	err := e.dialErr(t, e.dialReq())
	if !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Fatalf("error = %v, want unknown authority", err)
	}
}

func TestServerRejectsUntrustedClient(t *testing.T) {
	called := make(chan *Request, 1)
	e := newEnv(t, envOpts{handler: forwardHandler(called)})
	rogue := testca.New(t)
	e.certs.Put(clientID, rogue.Issue(t, clientID))
	err := e.dialErr(t, e.dialReq())
	if !strings.Contains(err.Error(), "bad certificate") && !strings.Contains(err.Error(), "unknown certificate authority") {
		t.Fatalf("error = %v, want the server's certificate alert", err)
	}
	select {
	case <-called:
		t.Fatal("handler ran for an untrusted client")
	default:
	}
}

func TestExpiredCertificatesRejected(t *testing.T) {
	past := testca.Validity(time.Now().Add(-2*time.Hour), time.Hour)
	t.Run("server", func(t *testing.T) {
		e := newEnv(t, envOpts{})
		e.certs.Put(serverID, e.ca.Issue(t, serverID, past))
		err := e.dialErr(t, e.dialReq())
		if !strings.Contains(err.Error(), "expired") {
			t.Fatalf("error = %v, want expired", err)
		}
	})
	t.Run("client", func(t *testing.T) {
		e := newEnv(t, envOpts{})
		e.certs.Put(clientID, e.ca.Issue(t, clientID, past))
		err := e.dialErr(t, e.dialReq())
		if !strings.Contains(err.Error(), "expired certificate") {
			t.Fatalf("error = %v, want the server's expired-certificate alert", err)
		}
	})
}

func TestCertificateWithoutSPIFFEIDRejected(t *testing.T) {
	e := newEnv(t, envOpts{})
	noURI := func(c *x509.Certificate) { c.URIs = nil }
	e.certs.Put(serverID, e.ca.Issue(t, serverID, noURI))
	err := e.dialErr(t, e.dialReq())
	if !strings.Contains(err.Error(), "0 URI SANs") {
		t.Fatalf("error = %v, want a missing-SPIFFE-ID error", err)
	}
}

// rawTLS dials the server with cfg, returning the handshake error.
func rawTLS(e *env, cfg *tls.Config) error {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", e.via.String(), cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	// TLS 1.3 client handshakes complete before the server has checked the
	// client certificate; the verdict arrives with the first read.
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = c.Read(make([]byte, 1))
	return err
}

func TestServerRejectsTLS12(t *testing.T) {
	e := newEnv(t, envOpts{})
	cfg := ClientTLSConfig(clientID, serverID, e.certs, e.bundle)
	cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	err := rawTLS(e, cfg)
	if err == nil || !strings.Contains(err.Error(), "protocol version") {
		t.Fatalf("TLS 1.2 handshake: %v, want a protocol version error", err)
	}
}

func TestServerRequiresClientCertificate(t *testing.T) {
	e := newEnv(t, envOpts{})
	cfg := ClientTLSConfig(clientID, serverID, e.certs, e.bundle)
	cfg.GetClientCertificate = nil
	err := rawTLS(e, cfg)
	if err == nil || !strings.Contains(err.Error(), "certificate required") {
		t.Fatalf("handshake without client cert: %v, want certificate required", err)
	}
}

func TestServerRequiresALPNh2(t *testing.T) {
	e := newEnv(t, envOpts{})
	cfg := ClientTLSConfig(clientID, serverID, e.certs, e.bundle)
	cfg.VerifyConnection = nil
	cfg.NextProtos = []string{"spdy/3"}
	if err := rawTLS(e, cfg); err == nil || !strings.Contains(err.Error(), "no application protocol") {
		t.Fatalf("ALPN spdy/3: %v, want no application protocol", err)
	}
	// crypto/tls lets http/1.1-only and ALPN-less clients finish the
	// handshake without a protocol; the server's VerifyConnection refuses them.
	for _, protos := range [][]string{{"http/1.1"}, nil} {
		cfg.NextProtos = protos
		if err := rawTLS(e, cfg); err == nil || !strings.Contains(err.Error(), "bad certificate") {
			t.Fatalf("ALPN %v: %v, want the handshake refused", protos, err)
		}
	}
}

func TestServerRejectsPlaintext(t *testing.T) {
	called := make(chan *Request, 1)
	e := newEnv(t, envOpts{handler: forwardHandler(called)})
	c, err := net.Dial("tcp", e.via.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A cleartext HTTP/2 (h2c prior knowledge) client's first bytes.
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	reply, err := io.ReadAll(c)
	if err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("reading reply: %v", err)
	}
	// Whatever comes back must not be HTTP/2: at most a TLS alert record.
	if len(reply) > 0 && reply[0] != 0x15 {
		t.Fatalf("server answered plaintext with %q", reply)
	}
	if bytes.Contains(reply, []byte("HTTP")) {
		t.Fatalf("server answered plaintext with %q", reply)
	}
	select {
	case <-called:
		t.Fatal("handler ran for a plaintext client")
	default:
	}
}

func TestBundleRotationAppliesToNewConnections(t *testing.T) {
	e := newEnv(t, envOpts{})
	c := e.dial(t)
	defer c.Close()
	// Replace the trust bundle by an unrelated CA: the open stream keeps
	// working, a new connection is refused.
	e.bundle.Set(testca.New(t).Pool())
	echoCheck(t, c, "still up")
	d := e.dialReq()
	d.Source = otherID // another pool key: forces a new connection
	e.certs.Put(otherID, e.ca.Issue(t, otherID))
	if err := e.dialErr(t, d); !strings.Contains(err.Error(), "unknown authority") {
		t.Fatalf("new connection after bundle change: %v", err)
	}
}

// echoCheck writes msg and expects it back.
func echoCheck(t testing.TB, c net.Conn, msg string) {
	t.Helper()
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	got := make([]byte, len(msg))
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read: %v", err)
	}
	if string(got) != msg {
		t.Fatalf("echo = %q, want %q", got, msg)
	}
}

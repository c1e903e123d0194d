package waypoint_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ambientmesh/ambient-operator/dataplane/hbone"
	wt "github.com/ambientmesh/ambient-operator/dataplane/waypoint/waypointtest"
	"github.com/ambientmesh/ambient-operator/internal/testca"
)

// A root rotation as the waypoint sees it: it starts with a certificate and roots from
// CA A (the mesh's CA, m.CA), the control plane's ROOTCA then brings A and the new root
// B, and finally B alone. Every check opens new connections, as a client's ztunnel does
// after renewing its certificate.
func TestTrustBundleFollowsARootRotation(t *testing.T) {
	m := wt.Start(t, wt.Options{})
	caB := testca.New(t)
	fromB := hbone.NewCertStore()
	fromB.Put(wt.ClientID, caB.Issue(t, wt.ClientID))

	// Each backend greets on its own VIP; "db-b" holds a certificate from B.
	vips := map[string]netip.AddrPort{}
	for i, name := range []string{"db-a", "db-b"} {
		b := m.TCPBackend(name, func(c net.Conn) {
			defer c.Close()
			_, _ = io.WriteString(c, "hello from "+name) // the test checks what arrives
		})
		if name == "db-b" {
			m.Certs.Put(b.ID, caB.Issue(t, b.ID))
		}
		vips[name] = netip.AddrPortFrom(netip.MustParseAddr("127.0.110.1"), uint16(5000+i))
		if nacks := m.Push(wt.Cluster(name), wt.Endpoints(name, b),
			wt.TCPListener(name+".shop.svc.cluster.local", vips[name], name)); len(nacks) > 0 {
			t.Fatalf("NACKed: %v", nacks)
		}
	}
	// No ROOTCA yet: the waypoint is ready on the roots it started with.
	m.WaitReady()

	// reach opens a new HBONE connection to the waypoint as wt.ClientID with a certificate
	// from certs, and returns what the backend behind vip said.
	reach := func(certs hbone.CertSource, backend string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := m.DialerWith(certs, wt.ClientID, netip.Addr{})(ctx, vips[backend])
		if err != nil {
			return "", err
		}
		defer c.Close()
		if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
			return "", err
		}
		got, err := io.ReadAll(c)
		if err != nil {
			return string(got), err
		}
		if want := "hello from " + backend; string(got) != want {
			return string(got), fmt.Errorf("read %q, want %q", got, want)
		}
		return string(got), nil
	}
	mustReach := func(step, who string, certs hbone.CertSource, backend string) {
		t.Helper()
		if got, err := reach(certs, backend); err != nil {
			t.Fatalf("%s: a client with a certificate from %s does not reach %s through the waypoint: %v (read %q)", step, who, backend, err, got)
		}
	}
	mustBeRefused := func(step, who string, certs hbone.CertSource) {
		t.Helper()
		got, err := reach(certs, "db-a")
		if err == nil {
			t.Fatalf("%s: a client with a certificate from %s reached the backend; want it refused", step, who)
		}
		if strings.Contains(got, "hello") {
			t.Fatalf("%s: a client with a certificate from %s was refused only after the backend answered %q", step, who, got)
		}
	}

	mustReach("roots from the certificate", "A", m.Certs, "db-a")
	mustBeRefused("roots from the certificate", "B", fromB)

	if nacks := m.Push(wt.RootCA(m.CA, caB)); len(nacks) > 0 {
		t.Fatalf("ROOTCA A+B NACKed: %v", nacks)
	}
	mustReach("ROOTCA A+B", "B", fromB, "db-a")
	mustReach("ROOTCA A+B", "A", m.Certs, "db-a")

	if nacks := m.Push(wt.RootCA(caB)); len(nacks) > 0 {
		t.Fatalf("ROOTCA B NACKed: %v", nacks)
	}
	mustBeRefused("ROOTCA B", "A", m.Certs)
	// The waypoint's own connections to endpoints trust the bundle too: it reaches the
	// endpoint whose certificate comes from B (it started trusting A only, and had never
	// connected there).
	mustReach("ROOTCA B", "B", fromB, "db-b")
	if err := m.Waypoint.Ready(context.Background()); err != nil {
		t.Fatalf("not ready after the rotation: %v", err)
	}
}

package e2e

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/internal/testwait"
	"github.com/ambientmesh/ambient-operator/test/e2e/localmesh"
)

// TestCertificateRotationUnderTraffic forces the renewal ztunnel would do at
// half life (hours away) on both ends of a cross-node connection that is in
// use, and checks what a user relies on: the open connection never notices,
// new connections work, and the new certificates are the ones presented.
func TestCertificateRotationUnderTraffic(t *testing.T) {
	requireMesh(t)
	mustReach(t, w.Client, w.ServerB.Addr())
	open, err := w.Client.Dial(w.ServerB.Addr(), 3*time.Second)
	if err != nil {
		t.Fatalf("opening a long-lived connection %s → %s: %v", w.Client, w.ServerB, err)
	}
	defer open.Close()
	loop := startEchoLoop(open)
	defer func() { _ = loop.stop() }() // on an early return; the checked stop is below
	loop.waitFor(t, 5, "before the renewal")

	ends := []struct {
		pod  *localmesh.AppPod
		node *localmesh.Node
	}{{w.Client, w.Client.Node}, {w.ServerB, w.ServerB.Node}}
	oldServed := servedSerial(t, w.ServerB)
	for _, end := range ends {
		id := localmesh.Principal(end.pod)
		before := certSerials(t, end.node.Name)[id]
		if before == "" {
			t.Fatalf("the ztunnel on %s has no certificate for %s before the renewal", end.node.Name, id)
		}
		renewed := renewCerts(t, end.node.Name)
		r := renewed[id]
		if r.Error != "" || r.Serial == "" || r.Serial == before {
			t.Fatalf("renewing certificates on %s did not give %s a new certificate (serial %s before, renewal said %+v)",
				end.node.Name, id, before, r)
		}
		if now := certSerials(t, end.node.Name)[id]; now != r.Serial {
			t.Errorf("after the renewal, ambientctl ztunnel certs on %s shows serial %s for %s, want the new %s", end.node.Name, now, id, r.Serial)
		}
	}
	if now, want := servedSerial(t, w.ServerB), certSerials(t, w.ServerB.Node.Name)[localmesh.Principal(w.ServerB)]; now == oldServed || now != want {
		t.Errorf("new HBONE connections to %s are still served with certificate %s (before the renewal %s), want the renewed %s", w.ServerB, now, oldServed, want)
	}

	// The open connection keeps carrying requests after both ends renewed.
	loop.waitFor(t, loop.done.Load()+10, "after the renewal")
	if err := loop.stop(); err != nil {
		t.Fatalf("the open connection %s → %s broke during certificate rotation (after %d successful requests): %v",
			w.Client, w.ServerB, loop.done.Load(), err)
	}
	t.Logf("%d requests over one connection, none failed, while both ztunnels renewed their certificates", loop.done.Load())

	// A new connection works, and the destination still sees the client's identity.
	opened := func() float64 {
		return metricSum(ztunnelMetric(t, w.ServerB.Node, "istio_tcp_connections_opened_total", `reporter="destination"`,
			`source_principal="`+localmesh.Principal(w.Client)+`"`, `connection_security_policy="mutual_tls"`))
	}
	before := opened()
	who, err := w.Client.Request(w.ServerB.Addr(), 3*time.Second)
	if err != nil || who != w.ServerB.String() {
		t.Fatalf("a new connection %s → %s after certificate rotation failed: answered by %q, %v", w.Client, w.ServerB, who, err)
	}
	eventually(t, 10*time.Second, fmt.Sprintf("the ztunnel on %s should count the new mutual-TLS connection from %s",
		w.ServerB.Node.Name, localmesh.Principal(w.Client)), func() error {
		if now := opened(); now <= before {
			return fmt.Errorf("istio_tcp_connections_opened_total stayed at %v", now)
		}
		return nil
	})
}

// echoLoop sends request after request over one connection until stopped or
// until one fails.
type echoLoop struct {
	done     atomic.Int64
	quit     chan struct{}
	quitOnce sync.Once
	finished chan struct{}
	err      error // why the loop ended early; read after finished is closed
}

func startEchoLoop(c *localmesh.Conn) *echoLoop {
	l := &echoLoop{quit: make(chan struct{}), finished: make(chan struct{})}
	go func() {
		defer close(l.finished)
		for i := 0; ; i++ {
			select {
			case <-l.quit:
				return
			default:
			}
			if err := c.Echo(fmt.Sprintf("request %d", i), 3*time.Second); err != nil {
				l.err = fmt.Errorf("request %d: %w", i, err)
				return
			}
			l.done.Add(1)
			time.Sleep(20 * time.Millisecond) // paces the requests: one open connection kept busy, not flooded
		}
	}()
	return l
}

// waitFor waits until n requests succeeded, failing early if the loop ended.
func (l *echoLoop) waitFor(t *testing.T, n int64, when string) {
	t.Helper()
	testwait.For(t, fmt.Sprintf("the open connection to answer %d requests %s", n, when), 20*time.Second, func() bool {
		if l.done.Load() >= n {
			return true
		}
		select {
		case <-l.finished:
			t.Fatalf("the open connection stopped answering %s (after %d successful requests): %v", when, l.done.Load(), l.err)
		default:
		}
		return false
	})
}

// stop ends the loop and returns the error that ended it early, if any.
func (l *echoLoop) stop() error {
	l.quitOnce.Do(func() { close(l.quit) })
	<-l.finished
	return l.err
}

// certSerials reads the serial of each identity's certificate on node, as
// ambientctl shows them.
func certSerials(t *testing.T, node string) map[string]string {
	t.Helper()
	out, err := ambientctl(t, "ztunnel", "certs", "--via", "netns", "--node", node, "-o", "json")
	if err != nil {
		t.Fatalf("ambientctl ztunnel certs --node %s: %v\n%s", node, err, out)
	}
	var certs []struct{ Identity, Serial string }
	if err := json.Unmarshal([]byte(out), &certs); err != nil {
		t.Fatalf("ambientctl ztunnel certs -o json is not a list of certificates: %v\n%s", err, out)
	}
	serials := map[string]string{}
	for _, c := range certs {
		serials[c.Identity] = c.Serial
	}
	return serials
}

type renewal struct{ Identity, PreviousSerial, Serial, Error string }

// renewCerts asks the ztunnel on node to renew every certificate now.
func renewCerts(t *testing.T, node string) map[string]renewal {
	t.Helper()
	out, err := ambientctl(t, "ztunnel", "renew-certs", "--via", "netns", "--node", node, "-o", "json")
	if err != nil {
		t.Fatalf("ambientctl ztunnel renew-certs --node %s: %v\n%s", node, err, out)
	}
	var list []renewal
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("ambientctl ztunnel renew-certs -o json is not a list of renewals: %v\n%s", err, out)
	}
	byID := map[string]renewal{}
	for _, r := range list {
		byID[r.Identity] = r
	}
	return byID
}

// servedSerial is the serial of the certificate a new HBONE connection to
// pod's port 15008 is served with. The TLS handshake is made from the pod's
// node; without a client certificate the server refuses the connection
// afterwards, but (TLS 1.3) only after it has presented its own.
func servedSerial(t *testing.T, pod *localmesh.AppPod) string {
	t.Helper()
	addr := net.JoinHostPort(pod.IP, strconv.Itoa(int(meshv1alpha1.PortHBONE)))
	var serial string
	eventually(t, 10*time.Second, fmt.Sprintf("a TLS handshake with %s's HBONE port (%s)", pod, addr), func() error {
		raw, err := localmesh.DialIn(pod.Node.NetnsPath(), addr, 3*time.Second)
		if err != nil {
			return err
		}
		defer raw.Close()
		_ = raw.SetDeadline(time.Now().Add(3 * time.Second))
		c := tls.Client(raw, &tls.Config{NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS13,
			InsecureSkipVerify: true}) // only the presented certificate is read; the mesh verifies peers
		if err := c.Handshake(); err != nil {
			return err
		}
		serial = c.ConnectionState().PeerCertificates[0].SerialNumber.Text(16)
		return nil
	})
	return serial
}

// metricSum adds up the values of Prometheus text lines.
func metricSum(lines []string) float64 {
	sum := 0.0
	for _, line := range lines {
		if v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64); err == nil {
			sum += v
		}
	}
	return sum
}

package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controllers/ambientmesh/manifests"
	"github.com/ambientmesh/ambient-operator/test/e2e/localmesh"
)

// TestTrustRootRotationUnderTraffic rotates the mesh root CA — cert-manager
// re-issues the operator's root Certificate with a new key, as `cmctl renew`
// does — while client → server-b traffic crosses nodes, then moves both ends
// to the new root with `ambientctl ztunnel renew-certs`. What a user checks:
// no request fails, both ztunnels trust the old and the new root during the
// overlap, and new connections use certificates from the new root. (Dropping
// the old root once its certificates expire takes a day; the control-plane
// envtest moves a clock for that.)
func TestTrustRootRotationUnderTraffic(t *testing.T) {
	requireMesh(t)
	ctx := context.Background()
	mustReach(t, w.Client, w.ServerB.Addr())
	oldRoot := meshRoot(t, ctx)
	ends := []*localmesh.AppPod{w.Client, w.ServerB}
	for _, end := range ends {
		if roots := ztunnelRoots(t, end.Node); !holds(roots, oldRoot) {
			t.Fatalf("before the rotation the ztunnel on %s does not trust the mesh root (it holds %d roots)", end.Node.Name, len(roots))
		}
	}

	open, err := w.Client.Dial(w.ServerB.Addr(), 3*time.Second)
	if err != nil {
		t.Fatalf("opening a long-lived connection %s → %s: %v", w.Client, w.ServerB, err)
	}
	defer open.Close()
	echoes := startEchoLoop(open)
	defer func() { _ = echoes.stop() }() // on an early return; the checked stop is below
	echoes.waitFor(t, 5, "before the rotation")
	requests := startRequestLoop(w.Client, w.ServerB.Addr())
	defer func() { _, _, _ = requests.stop() }() // likewise
	requests.waitFor(t, 3, "before the rotation")

	reissueMeshRoot(t, ctx)
	var newRoot *x509.Certificate
	eventually(t, time.Minute, "cert-manager should re-issue the mesh root with a new key", func() error {
		newRoot = meshRoot(t, ctx)
		if newRoot.Equal(oldRoot) {
			return errors.New("the root CA Secret still holds the old root")
		}
		return nil
	})

	// The client's node moves first: its certificates are the first the control
	// plane issues under the new root.
	renewUnder(t, w.Client, newRoot)
	for _, end := range ends {
		eventually(t, 10*time.Second, fmt.Sprintf("the ztunnel on %s should trust the old and the new root", end.Node.Name), func() error {
			if roots := ztunnelRoots(t, end.Node); len(roots) != 2 || !holds(roots, oldRoot) || !holds(roots, newRoot) {
				return fmt.Errorf("it holds %d roots (old: %v, new: %v)", len(roots), holds(roots, oldRoot), holds(roots, newRoot))
			}
			return nil
		})
	}
	renewUnder(t, w.ServerB, newRoot)
	for _, end := range ends {
		if roots := ztunnelRoots(t, end.Node); !holds(roots, oldRoot) || !holds(roots, newRoot) {
			t.Errorf("after both ends renewed, the ztunnel on %s no longer trusts both roots: pods on other nodes still hold certificates from the old one", end.Node.Name)
		}
	}

	echoes.waitFor(t, echoes.done.Load()+10, "after the rotation")
	if err := echoes.stop(); err != nil {
		t.Fatalf("the open connection %s → %s broke during the root rotation (after %d successful requests): %v", w.Client, w.ServerB, echoes.done.Load(), err)
	}
	requests.waitFor(t, requests.ok.Load()+10, "after the rotation")
	if ok, failed, err := requests.stop(); failed > 0 {
		t.Fatalf("%d of %d new connections %s → %s failed during the root rotation; the first: %v", failed, ok+failed, w.Client, w.ServerB, err)
	} else {
		t.Logf("%d requests over one connection and %d new connections, none failed, while the mesh root rotated", echoes.done.Load(), ok)
	}

	// A new connection, now between certificates from the new root, works and is
	// mutual TLS with the client's identity.
	opened := func() float64 {
		return metricSum(ztunnelMetric(t, w.ServerB.Node, "istio_tcp_connections_opened_total", `reporter="destination"`,
			`source_principal="`+localmesh.Principal(w.Client)+`"`, `connection_security_policy="mutual_tls"`))
	}
	before := opened()
	if who, err := w.Client.Request(w.ServerB.Addr(), 3*time.Second); err != nil || who != w.ServerB.String() {
		t.Fatalf("a new connection %s → %s after the root rotation failed: answered by %q, %v", w.Client, w.ServerB, who, err)
	}
	eventually(t, 10*time.Second, fmt.Sprintf("the ztunnel on %s should count the new mutual-TLS connection from %s",
		w.ServerB.Node.Name, localmesh.Principal(w.Client)), func() error {
		if now := opened(); now <= before {
			return fmt.Errorf("istio_tcp_connections_opened_total stayed at %v", now)
		}
		return nil
	})
}

// meshRoot is the mesh's root certificate: the Secret of the operator's root CA
// Certificate, which the CA Issuer signs with.
func meshRoot(t *testing.T, ctx context.Context) *x509.Certificate {
	t.Helper()
	s, err := mesh.Clientset.CoreV1().Secrets(mesh.Namespace).Get(ctx, manifests.RootCAName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("reading the mesh root CA Secret: %v", err)
	}
	block, _ := pem.Decode(s.Data["tls.crt"])
	if block == nil {
		t.Fatalf("the mesh root CA Secret holds no PEM certificate")
	}
	root, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("the mesh root CA Secret: %v", err)
	}
	return root
}

// reissueMeshRoot asks cert-manager to issue the root CA Certificate again now,
// as `cmctl renew` does: an Issuing condition on its status.
func reissueMeshRoot(t *testing.T, ctx context.Context) {
	t.Helper()
	crt := &unstructured.Unstructured{}
	crt.SetGroupVersionKind(schema.GroupVersionKind{Group: "cert-manager.io", Version: "v1", Kind: "Certificate"})
	eventually(t, 30*time.Second, "marking the root CA Certificate for re-issuance", func() error {
		if err := mesh.Client.Get(ctx, client.ObjectKey{Namespace: mesh.Namespace, Name: manifests.RootCAName}, crt); err != nil {
			return err
		}
		conditions, _, err := unstructured.NestedSlice(crt.Object, "status", "conditions")
		if err != nil {
			return err
		}
		conditions = append(conditions, map[string]any{
			"type": "Issuing", "status": "True", "reason": "ManuallyTriggered", "message": "root rotation e2e test",
			"lastTransitionTime": time.Now().UTC().Format(time.RFC3339), "observedGeneration": crt.GetGeneration(),
		})
		if err := unstructured.SetNestedSlice(crt.Object, conditions, "status", "conditions"); err != nil {
			return err
		}
		return mesh.Client.Status().Update(ctx, crt)
	})
}

// renewUnder renews the certificates of the ztunnel on pod's node until pod's
// HBONE port presents one from root (cert-manager's CA Issuer may sign with the
// old key for a moment after its Secret changed).
func renewUnder(t *testing.T, pod *localmesh.AppPod, root *x509.Certificate) {
	t.Helper()
	eventually(t, 30*time.Second, fmt.Sprintf("the ztunnel on %s should serve %s with a certificate from the new root after renew-certs", pod.Node.Name, pod), func() error {
		for id, r := range renewCerts(t, pod.Node.Name) {
			if r.Error != "" {
				return fmt.Errorf("renewing %s: %s", id, r.Error)
			}
		}
		served, err := servedCertificate(pod)
		if err != nil {
			return err
		}
		if err := served.CheckSignatureFrom(root); err != nil {
			return fmt.Errorf("served certificate %s is not signed by the new root: %w", served.SerialNumber.Text(16), err)
		}
		return nil
	})
}

// servedCertificate is the certificate a new HBONE connection to pod's port
// 15008 is served with (see servedSerial).
func servedCertificate(pod *localmesh.AppPod) (*x509.Certificate, error) {
	addr := net.JoinHostPort(pod.IP, strconv.Itoa(int(meshv1alpha1.PortHBONE)))
	raw, err := localmesh.DialIn(pod.Node.NetnsPath(), addr, 3*time.Second)
	if err != nil {
		return nil, err
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(3 * time.Second))
	c := tls.Client(raw, &tls.Config{NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS13,
		InsecureSkipVerify: true}) // only the presented certificate is read; the mesh verifies peers
	if err := c.Handshake(); err != nil {
		return nil, err
	}
	return c.ConnectionState().PeerCertificates[0], nil
}

// ztunnelRoots are the roots of the trust bundles the ztunnel on node holds
// (its admin endpoint's /trustbundles).
func ztunnelRoots(t *testing.T, node *localmesh.Node) []*x509.Certificate {
	t.Helper()
	body, err := localmesh.ZtunnelGet(node, meshv1alpha1.PortAdmin, "/trustbundles")
	if err != nil {
		t.Fatal(err)
	}
	var bundles []struct {
		TrustDomain string   `json:"trust_domain"`
		Roots       []string `json:"roots"`
	}
	if err := json.Unmarshal([]byte(body), &bundles); err != nil {
		t.Fatalf("the ztunnel on %s: /trustbundles is not a list of bundles: %v\n%s", node.Name, err, body)
	}
	var roots []*x509.Certificate
	for _, b := range bundles {
		for _, text := range b.Roots {
			block, _ := pem.Decode([]byte(text))
			if block == nil {
				t.Fatalf("the ztunnel on %s holds a root that is not PEM: %q", node.Name, text)
			}
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				t.Fatalf("the ztunnel on %s holds an unreadable root: %v", node.Name, err)
			}
			roots = append(roots, c)
		}
	}
	return roots
}

func holds(roots []*x509.Certificate, root *x509.Certificate) bool {
	for _, r := range roots {
		if r.Equal(root) {
			return true
		}
	}
	return false
}

// requestLoop opens a new connection after another until stopped, counting
// the ones that fail.
type requestLoop struct {
	ok, failed atomic.Int64
	quit       chan struct{}
	quitOnce   sync.Once
	finished   chan struct{}
	mu         sync.Mutex
	firstErr   error
}

func startRequestLoop(from *localmesh.AppPod, addr string) *requestLoop {
	l := &requestLoop{quit: make(chan struct{}), finished: make(chan struct{})}
	go func() {
		defer close(l.finished)
		for {
			select {
			case <-l.quit:
				return
			default:
			}
			if _, err := from.Request(addr, 3*time.Second); err != nil {
				l.failed.Add(1)
				l.mu.Lock()
				if l.firstErr == nil {
					l.firstErr = err
				}
				l.mu.Unlock()
			} else {
				l.ok.Add(1)
			}
			time.Sleep(100 * time.Millisecond) // a steady pace, not a flood
		}
	}()
	return l
}

// waitFor waits until n connections succeeded.
func (l *requestLoop) waitFor(t *testing.T, n int64, when string) {
	t.Helper()
	eventually(t, 30*time.Second, fmt.Sprintf("%d successful new connections %s", n, when), func() error {
		if got := l.ok.Load(); got < n {
			return fmt.Errorf("%d so far, %d failed", got, l.failed.Load())
		}
		return nil
	})
}

// stop ends the loop and reports how many connections worked and failed.
func (l *requestLoop) stop() (ok, failed int64, firstErr error) {
	l.quitOnce.Do(func() { close(l.quit) })
	<-l.finished
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ok.Load(), l.failed.Load(), l.firstErr
}

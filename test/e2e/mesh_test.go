package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/test/e2e/localmesh"
)

func TestMeshIsReadyAndStatusShowsIt(t *testing.T) {
	requireMesh(t)
	am, err := mesh.AmbientMesh(context.Background())
	if err != nil || !localmesh.MeshReady(am) {
		t.Fatalf("the AmbientMesh is not Ready: %v %+v", err, am.Status.Conditions)
	}
	out, err := ambientctl(t, "status")
	if err != nil {
		t.Fatalf("ambientctl status: %v\n%s", err, out)
	}
	contains(t, "ambientctl status", out, "AmbientMesh", "default", "ztunnel", "2/2", "Ready")
	out, err = ambientctl(t, "status", "-o", "json")
	if err != nil {
		t.Fatalf("ambientctl status -o json: %v\n%s", err, out)
	}
	contains(t, "ambientctl status -o json", out, `"phase"`, `"components"`)
}

func TestCrossNodeAndSameNodeMTLSWithIdentities(t *testing.T) {
	requireMesh(t)
	if who := mustReach(t, w.Client, w.ServerB.Addr()); who != w.ServerB.String() {
		t.Errorf("cross-node: answered by %s, want %s", who, w.ServerB)
	}
	if who := mustReach(t, w.Client, w.ServerA.Addr()); who != w.ServerA.String() {
		t.Errorf("same-node: answered by %s, want %s", who, w.ServerA)
	}
	for _, server := range []*localmesh.AppPod{w.ServerB, w.ServerA} {
		lines := ztunnelMetric(t, server.Node, "istio_tcp_connections_opened_total",
			`reporter="destination"`, `source_principal="`+localmesh.Principal(w.Client)+`"`,
			`destination_principal="`+localmesh.Principal(server)+`"`, `connection_security_policy="mutual_tls"`)
		if len(lines) == 0 {
			t.Errorf("the ztunnel on %s recorded no mutual-TLS connection from %s to %s (istio_tcp_connections_opened_total, reporter=destination)",
				server.Node.Name, localmesh.Principal(w.Client), localmesh.Principal(server))
		}
	}
}

func TestServiceVIPBalancesOverBothEndpoints(t *testing.T) {
	requireMesh(t)
	mustReach(t, w.Client, w.ServiceAddr)
	seen := map[string]int{}
	for range 20 {
		who, err := w.Client.Request(w.ServiceAddr, 3*time.Second)
		if err != nil {
			t.Fatalf("shop/client → Service echo (%s): %v", w.ServiceAddr, err)
		}
		seen[who]++
	}
	if seen[w.ServerA.String()] == 0 || seen[w.ServerB.String()] == 0 {
		t.Errorf("20 connections to the Service VIP %s should reach both server-a and server-b; got %v", w.ServiceAddr, seen)
	}
}

func TestUnderlayCarriesNoPlaintextBetweenMeshedPods(t *testing.T) {
	requireMesh(t)
	mustReach(t, w.Client, w.ServerB.Addr())
	secret := fmt.Sprintf("secret-%d", time.Now().UnixNano())
	text, err := mesh.CaptureEcho(w.Client, w.ServerB.Addr(), secret, 3*time.Second)
	if err != nil {
		t.Fatalf("request during the capture: %v", err)
	}
	if localmesh.PacketCount(text) == 0 {
		t.Fatalf("tcpdump on %s's underlay saw no packet: the capture does not work", w.Client.Node.Name)
	}
	if strings.Contains(text, secret) {
		t.Errorf("the underlay carried %q in plaintext between two meshed pods", secret)
	}
	if !strings.Contains(text, ".15008") {
		t.Errorf("no packet to port 15008 (HBONE) on the underlay:\n%.2000s", text)
	}
}

func TestPermissiveAllowsPlaintextAndStrictRefusesIt(t *testing.T) {
	requireMesh(t)
	if who := mustReach(t, w.Legacy, w.ServerA.Addr()); who != w.ServerA.String() {
		t.Errorf("PERMISSIVE: legacy/client reached %s, want %s", who, w.ServerA)
	}
	strict := &meshv1alpha1.MeshPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "strict", Namespace: "shop"},
		Spec:       meshv1alpha1.MeshPolicySpec{MTLS: &meshv1alpha1.MTLSSettings{Mode: "STRICT"}},
	}
	ctx := context.Background()
	if err := mesh.Client.Create(ctx, strict); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.IgnoreNotFound(mesh.Client.Delete(context.Background(), strict)) })
	mustBeRefused(t, w.Legacy, w.ServerA.Addr(), "STRICT mTLS in shop: plaintext from a pod outside the mesh")
	mustReach(t, w.Client, w.ServerA.Addr())
}

func TestDenyRefusesNewAndClosesOpenConnectionsAllowLets(t *testing.T) {
	requireMesh(t)
	ctx := context.Background()
	mustReach(t, w.Client, w.ServerB.Addr())
	open, err := w.Client.Dial(w.ServerB.Addr(), 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	deny := denyClientPolicy(t, "deny-client")
	mustBeRefused(t, w.Client, w.ServerB.Addr(), "DENY policy for shop/client")
	eventually(t, 20*time.Second, "the connection opened before the DENY policy should be closed", func() error {
		if open.Echo("still open?", time.Second) == nil {
			return fmt.Errorf("it still echoes")
		}
		return nil
	})
	out, err := ambientctl(t, "ztunnel", "policies", "--via", "netns", "--node", w.ServerB.Node.Name)
	if err != nil {
		t.Fatalf("ambientctl ztunnel policies: %v\n%s", err, out)
	}
	contains(t, "ambientctl ztunnel policies", out, "deny-client")
	if err := mesh.Client.Delete(ctx, deny); err != nil {
		t.Fatal(err)
	}
	mustReach(t, w.Client, w.ServerB.Addr())

	// ALLOW for another identity only: shop/client is no longer allowed.
	allow := &meshv1alpha1.MeshPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "allow-other", Namespace: "shop"},
		Spec: meshv1alpha1.MeshPolicySpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "echo"}},
			Action:   "ALLOW",
			Rules:    []meshv1alpha1.Rule{{From: []meshv1alpha1.Source{{ServiceAccounts: []meshv1alpha1.ServiceAccountRef{"shop/frontend"}}}}},
		},
	}
	if err := mesh.Client.Create(ctx, allow); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.IgnoreNotFound(mesh.Client.Delete(context.Background(), allow)) })
	mustBeRefused(t, w.Client, w.ServerB.Addr(), "an ALLOW policy that names only shop/frontend")
	eventually(t, 10*time.Second, "adding shop/client to the ALLOW policy", func() error {
		if err := mesh.Client.Get(ctx, client.ObjectKeyFromObject(allow), allow); err != nil {
			return err
		}
		allow.Spec.Rules[0].From[0].ServiceAccounts = []meshv1alpha1.ServiceAccountRef{"shop/frontend", "shop/client"}
		return mesh.Client.Update(ctx, allow)
	})
	mustReach(t, w.Client, w.ServerB.Addr())
	if err := mesh.Client.Delete(ctx, allow); err != nil {
		t.Fatal(err)
	}
}

func TestAmbientctlZtunnelViews(t *testing.T) {
	requireMesh(t)
	mustReach(t, w.Client, w.ServerB.Addr())
	open, err := w.Client.Dial(w.ServerB.Addr(), 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	n1 := w.Client.Node.Name
	cases := map[string][]string{
		"workloads":   {"client", "server-a", "server-b", "shop"},
		"services":    {"echo"},
		"certs":       {localmesh.Principal(w.Client)},
		"connections": {localmesh.Principal(w.ServerB)},
	}
	for view, wants := range cases {
		out, err := ambientctl(t, "ztunnel", view, "--via", "netns", "--node", n1)
		if err != nil {
			t.Errorf("ambientctl ztunnel %s --node %s: %v\n%s", view, n1, err, out)
			continue
		}
		contains(t, "ambientctl ztunnel "+view, out, wants...)
	}
	out, err := ambientctl(t, "ztunnel", "workloads", "--via", "netns", "--node", n1, "-o", "yaml")
	if err != nil {
		t.Fatalf("-o yaml: %v\n%s", err, out)
	}
	contains(t, "ambientctl ztunnel workloads -o yaml", out, "name: client")
}

func TestAmbientctlCheckOnANode(t *testing.T) {
	requireMesh(t)
	confDir := w.Client.Node.HostPath(meshv1alpha1.DefaultCNIConfDir)
	out, err := ambientctl(t, "check", "--cni-conf-dir", confDir)
	if err != nil {
		t.Fatalf("ambientctl check on a node's CNI conf dir should pass: %v\n%s", err, out)
	}
	contains(t, "ambientctl check", out, "network namespaces", "ok", "10-podnet.conflist", "no istio-cni")
}

// denyClientPolicy creates a DENY MeshPolicy in shop refusing the client service
// account on the echo servers, deleted when the test ends (if still there).
func denyClientPolicy(t *testing.T, name string) *meshv1alpha1.MeshPolicy {
	t.Helper()
	deny := &meshv1alpha1.MeshPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop"},
		Spec: meshv1alpha1.MeshPolicySpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "echo"}},
			Action:   "DENY",
			Rules:    []meshv1alpha1.Rule{{From: []meshv1alpha1.Source{{ServiceAccounts: []meshv1alpha1.ServiceAccountRef{"shop/client"}}}}},
		},
	}
	if err := mesh.Client.Create(context.Background(), deny); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.IgnoreNotFound(mesh.Client.Delete(context.Background(), deny)) })
	return deny
}

package main

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
)

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s: no PEM", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// Every certificate verifies against the CA for the use a component makes
// of it, under the names its peers dial.
func TestWritePKI(t *testing.T) {
	dir := t.TempDir()
	nodes := []Node{newNode(dir, 1), newNode(dir, 2)}
	p := pki{dir: filepath.Join(dir, "pki"), kubeconfigDir: filepath.Join(dir, "kubeconfig")}
	now := time.Now()
	if err := writePKI(p, nodes, now); err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(readCert(t, p.CACert()))
	frontProxyRoots := x509.NewCertPool()
	frontProxyRoots.AddCert(readCert(t, p.FrontProxyCACert()))

	servers := []struct {
		file, name string
	}{
		{"apiserver", controlPlaneIP},              // kubeconfigs, kubelets
		{"apiserver", apiServiceIP},                // pods, by the kubernetes Service
		{"apiserver", "kubernetes.default.svc"},    // pods, by name
		{"amc-node1-kubelet-serving", nodes[0].IP}, // apiserver -> kubelet (logs, exec)
		{"amc-node2-kubelet-serving", nodes[1].IP},
		{"controller-manager-serving", controlPlaneIP},
		{"scheduler-serving", controlPlaneIP},
	}
	for _, s := range servers {
		cert := readCert(t, p.Cert(s.file))
		_, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: s.name, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, CurrentTime: now})
		if err != nil {
			t.Errorf("%s as a server for %s: %v", s.file, s.name, err)
		}
	}

	clients := []struct {
		file, user string
		groups     []string
	}{
		{"admin", "kubernetes-admin", []string{"system:masters"}},
		{"apiserver-kubelet-client", "kube-apiserver-kubelet-client", []string{"system:masters"}},
		{"controller-manager", "system:kube-controller-manager", nil},
		{"scheduler", "system:kube-scheduler", nil},
		{"kube-proxy", "system:kube-proxy", nil},
		{"amc-node2-kubelet", "system:node:amc-node2", []string{"system:nodes"}},
	}
	for _, c := range clients {
		cert := readCert(t, p.Cert(c.file))
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, CurrentTime: now}); err != nil {
			t.Errorf("%s as a client: %v", c.file, err)
		}
		if cert.Subject.CommonName != c.user || !slices.Equal(cert.Subject.Organization, c.groups) {
			t.Errorf("%s: user %q groups %v, want %q %v", c.file, cert.Subject.CommonName, cert.Subject.Organization, c.user, c.groups)
		}
		// The kubeconfig carries the same identity to the apiserver.
		cfg, err := clientcmd.BuildConfigFromFlags("", p.Kubeconfig(c.file))
		if err != nil {
			t.Fatalf("kubeconfig %s: %v", c.file, err)
		}
		if cfg.Host != apiServerURL() {
			t.Errorf("kubeconfig %s: server %s, want %s", c.file, cfg.Host, apiServerURL())
		}
		block, _ := pem.Decode(cfg.CertData)
		if block == nil || string(block.Bytes) != string(cert.Raw) {
			t.Errorf("kubeconfig %s does not carry %s.crt", c.file, c.file)
		}
	}

	// Only the front-proxy CA vouches for the front-proxy client, and it
	// vouches for no one else: a user's certificate cannot assert headers.
	frontProxy := readCert(t, p.Cert("front-proxy-client"))
	if _, err := frontProxy.Verify(x509.VerifyOptions{Roots: frontProxyRoots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, CurrentTime: now}); err != nil {
		t.Errorf("front-proxy-client: %v", err)
	}
	if _, err := frontProxy.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, CurrentTime: now}); err == nil {
		t.Error("front-proxy-client verifies against the cluster CA")
	}
	if _, err := readCert(t, p.Cert("admin")).Verify(x509.VerifyOptions{Roots: frontProxyRoots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, CurrentTime: now}); err == nil {
		t.Error("the admin certificate verifies against the front-proxy CA")
	}

	// The apiserver verifies service-account tokens with the public half
	// of the key the controller-manager and apiserver sign them with.
	keyData, err := os.ReadFile(p.ServiceAccountKey())
	if err != nil {
		t.Fatal(err)
	}
	keyBlock, _ := pem.Decode(keyData)
	key, err := x509.ParsePKCS8PrivateKey(keyBlock.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pubData, err := os.ReadFile(p.ServiceAccountPub())
	if err != nil {
		t.Fatal(err)
	}
	pubBlock, _ := pem.Decode(pubData)
	pub, err := x509.ParsePKIXPublicKey(pubBlock.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !key.(*ecdsa.PrivateKey).PublicKey.Equal(pub) {
		t.Error("sa.pub is not the public key of sa.key")
	}
}

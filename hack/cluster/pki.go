package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// certValidity is long enough for any session on a throwaway cluster.
const certValidity = 365 * 24 * time.Hour

// authority is a CA. The cluster has two: its CA signs every serving and
// client certificate (and, in the controller-manager, CSRs); the
// front-proxy CA signs only the apiserver's client certificate towards
// aggregated API servers, which trust it to assert users in headers.
type authority struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// certSpec is one leaf certificate: a client (user CN, groups O) and/or a
// server (DNS names and IPs).
type certSpec struct {
	file   string // base name: <file>.crt and <file>.key
	cn     string
	groups []string
	dns    []string
	ips    []string
	server bool
	client bool
	// frontProxy: signed by the front-proxy CA, and no kubeconfig.
	frontProxy bool
}

// clusterCerts lists every certificate of the cluster: the components'
// client identities are the ones the apiserver's bootstrap RBAC policy
// binds (system:kube-controller-manager, system:kube-scheduler,
// system:kube-proxy, system:node:<name> in system:nodes).
func clusterCerts(nodes []Node) []certSpec {
	specs := []certSpec{
		{
			file: "apiserver", cn: "kube-apiserver", server: true,
			dns: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc." + clusterDomain},
			ips: []string{controlPlaneIP, apiServiceIP, "127.0.0.1"},
		},
		// The apiserver's identity towards kubelets (logs, exec, port-forward).
		{file: "apiserver-kubelet-client", cn: "kube-apiserver-kubelet-client", groups: []string{"system:masters"}, client: true},
		// The apiserver's identity towards aggregated API servers.
		{file: "front-proxy-client", cn: "front-proxy-client", client: true, frontProxy: true},
		{file: "admin", cn: "kubernetes-admin", groups: []string{"system:masters"}, client: true},
		{file: "controller-manager", cn: "system:kube-controller-manager", client: true},
		{file: "scheduler", cn: "system:kube-scheduler", client: true},
		{file: "kube-proxy", cn: "system:kube-proxy", client: true},
		// The controller-manager and scheduler serve their health and metrics on the bridge.
		{file: "controller-manager-serving", cn: "kube-controller-manager", ips: []string{controlPlaneIP}, server: true},
		{file: "scheduler-serving", cn: "kube-scheduler", ips: []string{controlPlaneIP}, server: true},
	}
	for _, n := range nodes {
		specs = append(specs,
			certSpec{file: n.Name + "-kubelet", cn: "system:node:" + n.Name, groups: []string{"system:nodes"}, client: true},
			certSpec{file: n.Name + "-kubelet-serving", cn: "system:node:" + n.Name, dns: []string{n.Name}, ips: []string{n.IP}, server: true},
		)
	}
	return specs
}

func newKey() (*ecdsa.PrivateKey, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }

func serialNumber() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func newAuthority(name string, now time.Time) (*authority, error) {
	key, err := newKey()
	if err != nil {
		return nil, err
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &authority{cert: cert, key: key}, nil
}

// issue signs a certificate for spec.
func (ca *authority) issue(spec certSpec, now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := newKey()
	if err != nil {
		return nil, nil, err
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: spec.cn, Organization: spec.groups},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(certValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		DNSNames:     spec.dns,
	}
	for _, ip := range spec.ips {
		parsed := net.ParseIP(ip)
		if parsed == nil {
			return nil, nil, fmt.Errorf("certificate %s: bad IP %q", spec.file, ip)
		}
		tmpl.IPAddresses = append(tmpl.IPAddresses, parsed)
	}
	if spec.server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if spec.client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

func certPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func keyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// pki is the written PKI: the files every component's flags name, and a
// kubeconfig for each client certificate.
type pki struct{ dir, kubeconfigDir string }

func (p pki) CACert() string            { return filepath.Join(p.dir, "ca.crt") }
func (p pki) CAKey() string             { return filepath.Join(p.dir, "ca.key") }
func (p pki) FrontProxyCACert() string  { return filepath.Join(p.dir, "front-proxy-ca.crt") }
func (p pki) Cert(file string) string   { return filepath.Join(p.dir, file+".crt") }
func (p pki) Key(file string) string    { return filepath.Join(p.dir, file+".key") }
func (p pki) ServiceAccountKey() string { return filepath.Join(p.dir, "sa.key") }
func (p pki) ServiceAccountPub() string { return filepath.Join(p.dir, "sa.pub") }
func (p pki) Kubeconfig(file string) string {
	return filepath.Join(p.kubeconfigDir, file+".kubeconfig")
}

// writePKI creates, in p, the CAs, every certificate of clusterCerts, the
// service-account signing key pair, and a kubeconfig for each client
// certificate (named after the certificate file).
func writePKI(p pki, nodes []Node, now time.Time) error {
	for _, dir := range []string{p.dir, p.kubeconfigDir} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
	}
	ca, err := newAuthority(clusterName+"-ca", now)
	if err != nil {
		return err
	}
	if err := writeCertAndKey(p.CACert(), p.CAKey(), ca.cert, ca.key); err != nil {
		return err
	}
	frontProxyCA, err := newAuthority(clusterName+"-front-proxy-ca", now)
	if err != nil {
		return err
	}
	// Its key signs nothing after this: it is not kept.
	if err := os.WriteFile(p.FrontProxyCACert(), certPEM(frontProxyCA.cert), 0o644); err != nil {
		return err
	}
	for _, spec := range clusterCerts(nodes) {
		signer := ca
		if spec.frontProxy {
			signer = frontProxyCA
		}
		cert, key, err := signer.issue(spec, now)
		if err != nil {
			return err
		}
		if err := writeCertAndKey(p.Cert(spec.file), p.Key(spec.file), cert, key); err != nil {
			return err
		}
		if spec.client && !spec.frontProxy {
			if err := writeKubeconfig(p.Kubeconfig(spec.file), spec.cn, ca.cert, cert, key); err != nil {
				return err
			}
		}
	}
	saKey, err := newKey()
	if err != nil {
		return err
	}
	saPriv, err := keyPEM(saKey)
	if err != nil {
		return err
	}
	saPubDER, err := x509.MarshalPKIXPublicKey(saKey.Public())
	if err != nil {
		return err
	}
	if err := os.WriteFile(p.ServiceAccountKey(), saPriv, 0o600); err != nil {
		return err
	}
	return os.WriteFile(p.ServiceAccountPub(), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPubDER}), 0o644)
}

func writeCertAndKey(certFile, keyFile string, cert *x509.Certificate, key crypto.Signer) error {
	k, err := keyPEM(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(certFile, certPEM(cert), 0o644); err != nil {
		return err
	}
	return os.WriteFile(keyFile, k, 0o600)
}

// writeKubeconfig writes a kubeconfig for the apiserver with the client
// certificate embedded, so it can be copied anywhere.
func writeKubeconfig(path, user string, ca, cert *x509.Certificate, key crypto.Signer) error {
	k, err := keyPEM(key)
	if err != nil {
		return err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[clusterName] = &clientcmdapi.Cluster{Server: apiServerURL(), CertificateAuthorityData: certPEM(ca)}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: certPEM(cert), ClientKeyData: k}
	cfg.Contexts[clusterName] = &clientcmdapi.Context{Cluster: clusterName, AuthInfo: user}
	cfg.CurrentContext = clusterName
	return clientcmd.WriteToFile(*cfg, path)
}

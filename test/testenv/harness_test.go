package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net/url"
	"os/exec"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	certmanagerv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

const (
	// issuance is how long cert-manager may take to act on a new object.
	issuance = 60 * time.Second
	poll     = 250 * time.Millisecond
)

var _ = Describe("the envtest harness", func() {
	It("runs the kube-apiserver built by make tools", func() {
		version, err := discoveryVersion()
		Expect(err).NotTo(HaveOccurred())
		Expect(version).To(Equal("v" + K8sVersion))
	})

	It("installs and establishes the cert-manager and Gateway API CRDs", func(ctx SpecContext) {
		for _, name := range []string{
			"certificates.cert-manager.io", "certificaterequests.cert-manager.io",
			"issuers.cert-manager.io", "clusterissuers.cert-manager.io",
			"gateways.gateway.networking.k8s.io", "httproutes.gateway.networking.k8s.io",
			"gatewayclasses.gateway.networking.k8s.io", "referencegrants.gateway.networking.k8s.io",
		} {
			Expect(crdEstablished(ctx, name)).To(BeTrue(), "CRD %s not established", name)
		}
	})

	It("installs every CRD it read, including ours once config/crd/bases exists", func(ctx SpecContext) {
		Expect(env.CRDs).NotTo(BeEmpty())
		for _, crd := range env.CRDs {
			Expect(crdEstablished(ctx, crd.Name)).To(BeTrue(), "CRD %s not established", crd.Name)
		}
	})

	It("lets the kubectl built by make tools talk to the API server", func() {
		kubectl, err := KubectlPath()
		Expect(err).NotTo(HaveOccurred())
		kubeconfig := filepath.Join(GinkgoT().TempDir(), "kubeconfig")
		Expect(WriteKubeconfig(cfg, kubeconfig)).To(Succeed())

		out, err := exec.Command(kubectl, "--kubeconfig", kubeconfig,
			"get", "crd", "certificates.cert-manager.io", "-o", "jsonpath={.spec.group}").CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(out))
		Expect(string(out)).To(Equal("cert-manager.io"))
	})
})

var _ = Describe("the real cert-manager controller", Ordered, func() {
	const (
		selfSignedIssuer = "selfsigned"
		rootCert         = "root-ca"
		rootSecret       = "root-ca"
		caIssuer         = "mesh-ca"
	)
	var namespace string

	BeforeAll(func(ctx SpecContext) {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "cert-manager-"}}
		Expect(k8sClient.Create(ctx, ns)).To(Succeed())
		namespace = ns.Name

		By("building a SelfSigned Issuer → root CA Certificate → CA Issuer chain")
		Expect(k8sClient.Create(ctx, &certmanagerv1.Issuer{
			ObjectMeta: metav1.ObjectMeta{Name: selfSignedIssuer, Namespace: namespace},
			Spec: certmanagerv1.IssuerSpec{IssuerConfig: certmanagerv1.IssuerConfig{
				SelfSigned: &certmanagerv1.SelfSignedIssuer{},
			}},
		})).To(Succeed())
		Expect(k8sClient.Create(ctx, &certmanagerv1.Certificate{
			ObjectMeta: metav1.ObjectMeta{Name: rootCert, Namespace: namespace},
			Spec: certmanagerv1.CertificateSpec{
				IsCA:       true,
				CommonName: "ambient test root CA",
				SecretName: rootSecret,
				PrivateKey: &certmanagerv1.CertificatePrivateKey{Algorithm: certmanagerv1.ECDSAKeyAlgorithm, Size: 256},
				IssuerRef:  cmmeta.IssuerReference{Name: selfSignedIssuer, Kind: "Issuer"},
			},
		})).To(Succeed())
		Expect(k8sClient.Create(ctx, &certmanagerv1.Issuer{
			ObjectMeta: metav1.ObjectMeta{Name: caIssuer, Namespace: namespace},
			Spec: certmanagerv1.IssuerSpec{IssuerConfig: certmanagerv1.IssuerConfig{
				CA: &certmanagerv1.CAIssuer{SecretName: rootSecret},
			}},
		})).To(Succeed())
	})

	It("makes the root CA Certificate and the CA Issuer Ready", func(ctx SpecContext) {
		Eventually(func(g Gomega) {
			crt := &certmanagerv1.Certificate{}
			g.Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: namespace, Name: rootCert}, crt)).To(Succeed())
			g.Expect(certificateReady(crt)).To(BeTrue(), "root Certificate conditions: %v", crt.Status.Conditions)
		}).WithContext(ctx).WithTimeout(issuance).WithPolling(poll).Should(Succeed())

		root := rootCertificate(ctx, namespace, rootSecret)
		Expect(root.IsCA).To(BeTrue())
		Expect(root.Subject.CommonName).To(Equal("ambient test root CA"))

		Eventually(func(g Gomega) {
			issuer := &certmanagerv1.Issuer{}
			g.Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: namespace, Name: caIssuer}, issuer)).To(Succeed())
			g.Expect(issuerReady(issuer)).To(BeTrue(), "CA Issuer conditions: %v", issuer.Status.Conditions)
		}).WithContext(ctx).WithTimeout(issuance).WithPolling(poll).Should(Succeed())
	})

	It("issues a workload Certificate signed by the CA", func(ctx SpecContext) {
		spiffeID := "spiffe://cluster.local/ns/shop/sa/cart"
		Expect(k8sClient.Create(ctx, &certmanagerv1.Certificate{
			ObjectMeta: metav1.ObjectMeta{Name: "cart", Namespace: namespace},
			Spec: certmanagerv1.CertificateSpec{
				SecretName: "cart-tls",
				URIs:       []string{spiffeID},
				Duration:   &metav1.Duration{Duration: 24 * time.Hour},
				PrivateKey: &certmanagerv1.CertificatePrivateKey{Algorithm: certmanagerv1.ECDSAKeyAlgorithm, Size: 256},
				IssuerRef:  cmmeta.IssuerReference{Name: caIssuer, Kind: "Issuer"},
			},
		})).To(Succeed())

		Eventually(func(g Gomega) {
			crt := &certmanagerv1.Certificate{}
			g.Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: namespace, Name: "cart"}, crt)).To(Succeed())
			g.Expect(certificateReady(crt)).To(BeTrue(), "workload Certificate conditions: %v", crt.Status.Conditions)
		}).WithContext(ctx).WithTimeout(issuance).WithPolling(poll).Should(Succeed())

		secret := &corev1.Secret{}
		Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: namespace, Name: "cart-tls"}, secret)).To(Succeed())
		leaf := parseCertificate(secret.Data[corev1.TLSCertKey])
		Expect(leaf.URIs).To(HaveLen(1))
		Expect(leaf.URIs[0].String()).To(Equal(spiffeID))
		verifyAgainst(leaf, rootCertificate(ctx, namespace, rootSecret))
		Expect(parseCertificate(secret.Data["ca.crt"]).Equal(rootCertificate(ctx, namespace, rootSecret))).To(BeTrue(),
			"the secret's ca.crt is the root CA")
	})

	It("approves and signs a CertificateRequest against the CA Issuer", func(ctx SpecContext) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		Expect(err).NotTo(HaveOccurred())
		spiffeID, err := url.Parse("spiffe://cluster.local/ns/shop/sa/checkout")
		Expect(err).NotTo(HaveOccurred())
		csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
			Subject: pkix.Name{}, URIs: []*url.URL{spiffeID},
		}, key)
		Expect(err).NotTo(HaveOccurred())

		cr := &certmanagerv1.CertificateRequest{
			ObjectMeta: metav1.ObjectMeta{Name: "checkout", Namespace: namespace},
			Spec: certmanagerv1.CertificateRequestSpec{
				Request:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}),
				Duration:  &metav1.Duration{Duration: time.Hour},
				Usages:    []certmanagerv1.KeyUsage{certmanagerv1.UsageDigitalSignature, certmanagerv1.UsageClientAuth, certmanagerv1.UsageServerAuth},
				IssuerRef: cmmeta.IssuerReference{Name: caIssuer, Kind: "Issuer", Group: "cert-manager.io"},
			},
		}
		Expect(k8sClient.Create(ctx, cr)).To(Succeed())

		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(cr), cr)).To(Succeed())
			g.Expect(requestCondition(cr, certmanagerv1.CertificateRequestConditionApproved)).To(BeTrue(),
				"CertificateRequest conditions: %v", cr.Status.Conditions)
			g.Expect(requestCondition(cr, certmanagerv1.CertificateRequestConditionReady)).To(BeTrue(),
				"CertificateRequest conditions: %v", cr.Status.Conditions)
		}).WithContext(ctx).WithTimeout(issuance).WithPolling(poll).Should(Succeed())

		signed := parseCertificate(cr.Status.Certificate)
		Expect(signed.URIs).To(HaveLen(1))
		Expect(signed.URIs[0].String()).To(Equal(spiffeID.String()))
		Expect(signed.PublicKey).To(Equal(&key.PublicKey), "the certificate is for the key that made the CSR")
		Expect(signed.NotAfter.Sub(signed.NotBefore)).To(BeNumerically("~", time.Hour, 5*time.Minute))
		verifyAgainst(signed, rootCertificate(ctx, namespace, rootSecret))
		Expect(parseCertificate(cr.Status.CA).Equal(rootCertificate(ctx, namespace, rootSecret))).To(BeTrue())
	})
})

func discoveryVersion() (string, error) {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return "", err
	}
	info, err := dc.ServerVersion()
	if err != nil {
		return "", err
	}
	return info.GitVersion, nil
}

func crdEstablished(ctx SpecContext, name string) bool {
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := k8sClient.Get(ctx, types.NamespacedName{Name: name}, crd); err != nil {
		return false
	}
	for _, c := range crd.Status.Conditions {
		if c.Type == apiextensionsv1.Established {
			return c.Status == apiextensionsv1.ConditionTrue
		}
	}
	return false
}

func certificateReady(crt *certmanagerv1.Certificate) bool {
	for _, c := range crt.Status.Conditions {
		if c.Type == certmanagerv1.CertificateConditionReady {
			return c.Status == cmmeta.ConditionTrue && c.ObservedGeneration == crt.Generation
		}
	}
	return false
}

func issuerReady(issuer *certmanagerv1.Issuer) bool {
	for _, c := range issuer.Status.Conditions {
		if c.Type == certmanagerv1.IssuerConditionReady {
			return c.Status == cmmeta.ConditionTrue
		}
	}
	return false
}

func requestCondition(cr *certmanagerv1.CertificateRequest, t certmanagerv1.CertificateRequestConditionType) bool {
	for _, c := range cr.Status.Conditions {
		if c.Type == t {
			return c.Status == cmmeta.ConditionTrue
		}
	}
	return false
}

func parseCertificate(pemData []byte) *x509.Certificate {
	GinkgoHelper()
	block, _ := pem.Decode(pemData)
	Expect(block).NotTo(BeNil(), "no PEM block in %q", pemData)
	cert, err := x509.ParseCertificate(block.Bytes)
	Expect(err).NotTo(HaveOccurred())
	return cert
}

func rootCertificate(ctx SpecContext, namespace, secretName string) *x509.Certificate {
	GinkgoHelper()
	secret := &corev1.Secret{}
	Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: namespace, Name: secretName}, secret)).To(Succeed())
	return parseCertificate(secret.Data[corev1.TLSCertKey])
}

// verifyAgainst checks cert chains to root with x509's own path validation.
func verifyAgainst(cert, root *x509.Certificate) {
	GinkgoHelper()
	roots := x509.NewCertPool()
	roots.AddCert(root)
	_, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	Expect(err).NotTo(HaveOccurred(), "certificate is not signed by the CA")
}

package testenv

import (
	"bytes"
	"encoding/pem"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	certmanagerv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The CA injector process (bin/cert-manager-cainjector) next to the
// controller the suite runs: a webhook configuration annotated with
// cert-manager.io/inject-ca-from gets the Certificate's CA as its caBundle.
// When the Certificate is re-issued, the new CA is added and the old one
// kept (upstream's default CAInjectorMerging feature), so clients that still
// hold a certificate from the old CA are trusted during the rollover.
var _ = Describe("the real cert-manager cainjector", Ordered, func() {
	const (
		issuerName = "selfsigned"
		certName   = "webhook-ca"
		secretName = "webhook-ca"
	)
	var (
		namespace string
		webhooks  *admissionregistrationv1.ValidatingWebhookConfiguration
	)

	BeforeAll(func(ctx SpecContext) {
		stop, err := StartCAInjector(suiteCtx, cfg, WithCertManagerLogs(GinkgoWriter))
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(stop)

		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "cainjector-"}}
		Expect(k8sClient.Create(ctx, ns)).To(Succeed())
		namespace = ns.Name

		Expect(k8sClient.Create(ctx, &certmanagerv1.Issuer{
			ObjectMeta: metav1.ObjectMeta{Name: issuerName, Namespace: namespace},
			Spec: certmanagerv1.IssuerSpec{IssuerConfig: certmanagerv1.IssuerConfig{
				SelfSigned: &certmanagerv1.SelfSignedIssuer{},
			}},
		})).To(Succeed())
		Expect(k8sClient.Create(ctx, &certmanagerv1.Certificate{
			ObjectMeta: metav1.ObjectMeta{Name: certName, Namespace: namespace},
			Spec: certmanagerv1.CertificateSpec{
				IsCA:       true,
				CommonName: "cainjector test CA",
				SecretName: secretName,
				PrivateKey: &certmanagerv1.CertificatePrivateKey{Algorithm: certmanagerv1.ECDSAKeyAlgorithm, Size: 256},
				IssuerRef:  cmmeta.IssuerReference{Name: issuerName, Kind: "Issuer"},
			},
		})).To(Succeed())

		webhooks = injectableWebhooks(namespace + "/" + certName)
		Expect(k8sClient.Create(ctx, webhooks)).To(Succeed())
		DeferCleanup(func(ctx SpecContext) { Expect(k8sClient.Delete(ctx, webhooks)).To(Succeed()) })
	})

	It("injects the Certificate's CA into the webhook configuration", func(ctx SpecContext) {
		Eventually(func(g Gomega) {
			ca := secretCA(ctx, g, namespace, secretName)
			g.Expect(caBundle(ctx, g, webhooks.Name)).To(Equal(ca))
		}).WithContext(ctx).WithTimeout(issuance).WithPolling(poll).Should(Succeed())
	})

	It("adds the new CA, keeping the old one, when the Certificate is re-issued", func(ctx SpecContext) {
		old := secretCA(ctx, Default, namespace, secretName)
		// A deleted Secret makes cert-manager issue again: a new key, so a new self-signed CA.
		Expect(k8sClient.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: secretName, Namespace: namespace}})).To(Succeed())
		Eventually(func(g Gomega) {
			ca := secretCA(ctx, g, namespace, secretName)
			g.Expect(ca).NotTo(Equal(old), "the Certificate has not been re-issued yet")
			g.Expect(bundleCertificates(g, caBundle(ctx, g, webhooks.Name))).To(ConsistOf(
				pemCertificate(g, ca), pemCertificate(g, old)))
		}).WithContext(ctx).WithTimeout(issuance).WithPolling(poll).Should(Succeed())
	})
})

// injectableWebhooks is a webhook configuration that asks for the CA of
// certificate (namespace/name). It has no rules, so the API server never
// calls it.
func injectableWebhooks(certificate string) *admissionregistrationv1.ValidatingWebhookConfiguration {
	return &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "cainjector-test-",
			Annotations:  map[string]string{"cert-manager.io/inject-ca-from": certificate},
		},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name:                    "test.cainjector.ambientmesh.io",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: ptr.To("https://127.0.0.1:1/validate")},
			AdmissionReviewVersions: []string{"v1"},
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			FailurePolicy:           ptr.To(admissionregistrationv1.Ignore),
		}},
	}
}

// secretCA is the ca.crt of a Certificate's Secret, once it has one.
func secretCA(ctx SpecContext, g Gomega, namespace, name string) []byte {
	secret := &corev1.Secret{}
	g.Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, secret)).To(Succeed())
	ca := secret.Data["ca.crt"]
	g.Expect(bytes.Contains(ca, []byte("BEGIN CERTIFICATE"))).To(BeTrue(), "no CA in secret %s/%s yet", namespace, name)
	return ca
}

// bundleCertificates are the DER certificates of a PEM bundle.
func bundleCertificates(g Gomega, bundle []byte) []string {
	var ders []string
	for block, rest := pem.Decode(bundle); block != nil; block, rest = pem.Decode(rest) {
		g.Expect(block.Type).To(Equal("CERTIFICATE"))
		ders = append(ders, string(block.Bytes))
	}
	return ders
}

func pemCertificate(g Gomega, data []byte) string {
	ders := bundleCertificates(g, data)
	g.Expect(ders).To(HaveLen(1))
	return ders[0]
}

func caBundle(ctx SpecContext, g Gomega, name string) []byte {
	vwc := &admissionregistrationv1.ValidatingWebhookConfiguration{}
	g.Expect(k8sClient.Get(ctx, client.ObjectKey{Name: name}, vwc)).To(Succeed())
	g.Expect(vwc.Webhooks).To(HaveLen(1))
	return vwc.Webhooks[0].ClientConfig.CABundle
}

package controlplane_test

import (
	"context"
	"crypto/x509"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controlplane/identity"
	"github.com/ambientmesh/ambient-operator/test/controlplane/meshenv"
)

var _ = Describe("the certificate service", Ordered, func() {
	const ns = "ca-shop"
	var (
		ca                    pb.CertificateServiceClient
		ztunnelA              *corev1.Pod
		ztunnelAToken         string
		webID, dbID, waypoint string
		wpPod                 *corev1.Pod
	)

	BeforeAll(func(ctx SpecContext) {
		ensureNamespace(ctx, ns, nil)
		ensureNode(ctx, "node-a")
		ensureNode(ctx, "node-b")
		ztunnelA = runPod(ctx, podSpec{namespace: meshenv.Namespace, name: "ztunnel-a", serviceAccount: "ztunnel", node: "node-a"})
		runPod(ctx, podSpec{namespace: ns, name: "web-1", serviceAccount: "web", node: "node-a"})
		runPod(ctx, podSpec{namespace: ns, name: "db-1", serviceAccount: "db", node: "node-b"})
		wpPod = runPod(ctx, podSpec{namespace: ns, name: "waypoint-1", serviceAccount: "waypoint", node: "node-b"})
		webID = pb.SpiffeID(trustDomain, ns, "web")
		dbID = pb.SpiffeID(trustDomain, ns, "db")
		waypoint = pb.SpiffeID(trustDomain, ns, "waypoint")
		ztunnelAToken = tokenFor(ctx, meshenv.Namespace, "ztunnel", ztunnelA, pb.CATokenAudience)
		ca = pb.NewCertificateServiceClient(dial(caAddr))
		// The CA reads pods from the control plane's cache: wait until it has them.
		Eventually(func(g Gomega) {
			var pods corev1.PodList
			g.Expect(cp.Cache().List(ctx, &pods, client.InNamespace(ns))).To(Succeed())
			g.Expect(pods.Items).To(HaveLen(3))
		}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
	})

	request := func(ctx context.Context, token, identityURI, csr string, ttl time.Duration) (*pb.CreateCertificateResponse, error) {
		ctx = metadata.AppendToOutgoingContext(ctx, pb.AuthorizationMetadataKey, pb.BearerPrefix+token)
		return ca.CreateCertificate(ctx, &pb.CreateCertificateRequest{Csr: csr, ImpersonatedIdentity: identityURI, ValiditySeconds: int64(ttl.Seconds())})
	}
	refused := func(result string) float64 {
		var m dto.Metric
		Expect(cp.CA.Requests().WithLabelValues(result).Write(&m)).To(Succeed())
		return m.GetCounter().GetValue()
	}

	It("signs, through the cert-manager CA Issuer, a CSR for a service account with a pod on the ztunnel's node", func(ctx SpecContext) {
		key, csr := newCSR(webID)
		resp, err := request(ctx, ztunnelAToken, webID, csr, 2*time.Hour)
		Expect(err).NotTo(HaveOccurred())

		Expect(resp.CertChain).NotTo(BeEmpty())
		leaf := parsePEM(resp.CertChain[0])
		Expect(leaf.URIs).To(HaveLen(1))
		Expect(leaf.URIs[0].String()).To(Equal(webID), "the SPIFFE URI SAN")
		Expect(leaf.PublicKey).To(Equal(&key.PublicKey), "issued for the CSR's key")
		Expect(leaf.NotAfter.Sub(leaf.NotBefore)).To(BeNumerically("~", 2*time.Hour, 5*time.Minute), "the requested TTL")
		Expect(leaf.ExtKeyUsage).To(ContainElements(x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth))

		By("chaining to the mesh root that signed it")
		rootPEM, err := menv.RootCAPEM(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.Roots).To(ContainElement(string(rootPEM)))
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(rootPEM)
		_, err = leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		Expect(err).NotTo(HaveOccurred())

		By("cleaning up its CertificateRequest")
		Eventually(func(g Gomega) {
			var crs cmapi.CertificateRequestList
			g.Expect(k8sClient.List(ctx, &crs, client.InNamespace(meshenv.Namespace), client.MatchingLabels{identity.LabelIdentityRequest: "true"})).To(Succeed())
			g.Expect(crs.Items).To(BeEmpty())
		}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
	})

	It("gives the default TTL (24h) when none is asked for", func(ctx SpecContext) {
		_, csr := newCSR(webID)
		resp, err := request(ctx, ztunnelAToken, webID, csr, 0)
		Expect(err).NotTo(HaveOccurred())
		leaf := parsePEM(resp.CertChain[0])
		Expect(leaf.NotAfter.Sub(leaf.NotBefore)).To(BeNumerically("~", 24*time.Hour, 5*time.Minute))
	})

	It("issues a new serial on rotation", func(ctx SpecContext) {
		_, csr1 := newCSR(webID)
		first, err := request(ctx, ztunnelAToken, webID, csr1, time.Hour)
		Expect(err).NotTo(HaveOccurred())
		_, csr2 := newCSR(webID)
		second, err := request(ctx, ztunnelAToken, webID, csr2, time.Hour)
		Expect(err).NotTo(HaveOccurred())
		Expect(parsePEM(second.CertChain[0]).SerialNumber).NotTo(Equal(parsePEM(first.CertChain[0]).SerialNumber))
	})

	It("refuses a service account without a pod on the ztunnel's node, and counts it", func(ctx SpecContext) {
		before := refused("forbidden")
		_, csr := newCSR(dbID)
		_, err := request(ctx, ztunnelAToken, dbID, csr, time.Hour)
		Expect(status.Code(err)).To(Equal(codes.PermissionDenied))
		Expect(status.Convert(err).Message()).To(ContainSubstring("no pod of service account ca-shop/db runs on node node-a"))
		Expect(refused("forbidden")).To(Equal(before + 1))
	})

	It("refuses a token for another audience", func(ctx SpecContext) {
		before := refused("unauthenticated")
		token := tokenFor(ctx, meshenv.Namespace, "ztunnel", ztunnelA, "some-other-service")
		_, csr := newCSR(webID)
		_, err := request(ctx, token, webID, csr, time.Hour)
		Expect(status.Code(err)).To(Equal(codes.Unauthenticated))
		Expect(status.Convert(err).Message()).To(ContainSubstring("token rejected by the API server"))
		Expect(refused("unauthenticated")).To(Equal(before + 1))
	})

	It("refuses a token that is no longer valid: bound to a pod that was deleted", func(ctx SpecContext) {
		// Projected tokens live at least 10 minutes, so "expired" is exercised the way a
		// real token dies first: its bound pod is gone and the API server invalidates it.
		gone := runPod(ctx, podSpec{namespace: meshenv.Namespace, name: "ztunnel-gone", serviceAccount: "ztunnel", node: "node-a"})
		token := tokenFor(ctx, meshenv.Namespace, "ztunnel", gone, pb.CATokenAudience)
		Expect(k8sClient.Delete(ctx, gone, client.GracePeriodSeconds(0))).To(Succeed())
		Eventually(func() error {
			return k8sClient.Get(ctx, client.ObjectKeyFromObject(gone), &corev1.Pod{})
		}).WithTimeout(timeout).Should(Satisfy(apierrors.IsNotFound))
		_, csr := newCSR(webID)
		_, err := request(ctx, token, webID, csr, time.Hour)
		Expect(status.Code(err)).To(Equal(codes.Unauthenticated))
	})

	It("refuses a forged token and a request without one", func(ctx SpecContext) {
		_, csr := newCSR(webID)
		_, err := request(ctx, ztunnelAToken[:len(ztunnelAToken)-4]+"AAAA", webID, csr, time.Hour)
		Expect(status.Code(err)).To(Equal(codes.Unauthenticated))

		_, err = ca.CreateCertificate(ctx, &pb.CreateCertificateRequest{Csr: csr, ImpersonatedIdentity: webID})
		Expect(status.Code(err)).To(Equal(codes.Unauthenticated))
		Expect(status.Convert(err).Message()).To(ContainSubstring("Bearer"))
	})

	It("refuses a malformed CSR", func(ctx SpecContext) {
		before := refused("invalid")
		_, err := request(ctx, ztunnelAToken, webID, "-----BEGIN CERTIFICATE REQUEST-----\nnot a csr\n-----END CERTIFICATE REQUEST-----\n", time.Hour)
		Expect(status.Code(err)).To(Equal(codes.InvalidArgument))
		Expect(refused("invalid")).To(Equal(before + 1))
	})

	It("refuses a CSR whose SAN is not the requested identity", func(ctx SpecContext) {
		_, csr := newCSR(pb.SpiffeID(trustDomain, ns, "admin"))
		_, err := request(ctx, ztunnelAToken, webID, csr, time.Hour)
		Expect(status.Code(err)).To(Equal(codes.InvalidArgument))
		Expect(status.Convert(err).Message()).To(ContainSubstring("differs from the requested identity"))
	})

	It("lets a waypoint obtain its own identity and nothing else", func(ctx SpecContext) {
		token := tokenFor(ctx, ns, "waypoint", wpPod, pb.CATokenAudience)
		_, csr := newCSR(waypoint)
		resp, err := request(ctx, token, waypoint, csr, time.Hour)
		Expect(err).NotTo(HaveOccurred())
		Expect(parsePEM(resp.CertChain[0]).URIs[0].String()).To(Equal(waypoint))

		_, csr = newCSR(dbID) // db has a pod on the waypoint's node, but a waypoint is no node agent
		_, err = request(ctx, token, dbID, csr, time.Hour)
		Expect(status.Code(err)).To(Equal(codes.PermissionDenied))
		Expect(status.Convert(err).Message()).To(ContainSubstring("may only request its own identity"))
	})
})

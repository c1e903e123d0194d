package controlplane_test

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"os"
	"path/filepath"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controllers/ambientmesh/manifests"
	"github.com/ambientmesh/ambient-operator/controlplane"
	"github.com/ambientmesh/ambient-operator/controlplane/identity"
	"github.com/ambientmesh/ambient-operator/dataplane/xdsclient"
	"github.com/ambientmesh/ambient-operator/internal/meshscheme"
)

// A root CA rotation on a control plane of its own — its own namespace, issuer chain and
// serving certificate read from files, as the operator mounts it — whose trust roots
// retire on a clock the test moves. The root is rotated as `cmctl renew` does: cert-manager
// re-issues the self-signed root Certificate with a new key.
var _ = Describe("root CA rotation", Ordered, func() {
	const (
		ns       = "rotation-system"
		shop     = "rotation-shop"
		node     = "node-r"
		rootCA   = "rotation-root-ca"
		caIssuer = "rotation-ca"
		cpTLS    = "rotation-controlplane-tls"
	)
	var (
		clock            *clocktesting.FakeClock
		rotated          *controlplane.ControlPlane
		tlsDir           string
		certs            pb.CertificateServiceClient
		xdsAddress       string
		ztunnelToken     string
		bundles          *recorder
		webID            string
		oldRoot, newRoot *x509.Certificate
		oldLeaf, newLeaf *x509.Certificate
	)

	// publishedCerts is the trust bundle the ztunnel on node-r holds; published its DER.
	publishedCerts := func() []*x509.Certificate {
		bundles.mu.Lock()
		defer bundles.mu.Unlock()
		var out []*x509.Certificate
		for _, r := range bundles.bundles[trustDomain].GetRoots() {
			out = append(out, parsePEM(r))
		}
		return out
	}
	// id names a certificate by its SHA-256 fingerprint, for readable comparisons.
	id := func(c *x509.Certificate) string {
		sum := sha256.Sum256(c.Raw)
		return hex.EncodeToString(sum[:])
	}
	ids := func(certs []*x509.Certificate) []string {
		var out []string
		for _, c := range certs {
			out = append(out, id(c))
		}
		return out
	}
	published := func() []string { return ids(publishedCerts()) }
	poolOf := func(roots ...*x509.Certificate) *x509.CertPool {
		pool := x509.NewCertPool()
		for _, r := range roots {
			pool.AddCert(r)
		}
		return pool
	}
	verifies := func(leaf *x509.Certificate, roots ...*x509.Certificate) error {
		_, err := leaf.Verify(x509.VerifyOptions{Roots: poolOf(roots...), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		return err
	}
	issue := func(ctx context.Context, ttl time.Duration) (*pb.CreateCertificateResponse, *x509.Certificate) {
		_, csr := newCSR(webID)
		callCtx := metadata.AppendToOutgoingContext(ctx, pb.AuthorizationMetadataKey, pb.BearerPrefix+ztunnelToken)
		resp, err := certs.CreateCertificate(callCtx, &pb.CreateCertificateRequest{Csr: csr, ImpersonatedIdentity: webID, ValiditySeconds: int64(ttl.Seconds())})
		Expect(err).NotTo(HaveOccurred())
		return resp, parsePEM(resp.CertChain[0])
	}
	secret := func(ctx context.Context, name string) *corev1.Secret {
		var s corev1.Secret
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &s)).To(Succeed())
		return &s
	}
	// writeTLSDir copies the control plane's certificate Secret into its --tls-dir, as the
	// kubelet updates a mounted Secret, with a later modification time each time.
	writes := 0
	writeTLSDir := func(s *corev1.Secret) {
		writes++
		later := time.Now().Add(time.Duration(writes) * time.Second)
		for _, name := range []string{"tls.crt", "tls.key", "ca.crt"} {
			path := filepath.Join(tlsDir, name)
			Expect(os.WriteFile(path, s.Data[name], 0o600)).To(Succeed())
			Expect(os.Chtimes(path, later, later)).To(Succeed())
		}
	}
	// reissue makes cert-manager issue a Certificate again now, as `cmctl renew` does, and
	// waits until its Secret holds a new certificate.
	reissue := func(ctx context.Context, name string) *corev1.Secret {
		before := secret(ctx, name).Data["tls.crt"]
		Eventually(func() error {
			var crt cmapi.Certificate
			if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &crt); err != nil {
				return err
			}
			crt.Status.Conditions = append(crt.Status.Conditions, cmapi.CertificateCondition{
				Type: cmapi.CertificateConditionIssuing, Status: cmmeta.ConditionTrue, Reason: "ManuallyTriggered",
				Message: "root rotation test", LastTransitionTime: ptr.To(metav1.Now()), ObservedGeneration: crt.Generation,
			})
			return k8sClient.Status().Update(ctx, &crt)
		}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
		var s *corev1.Secret
		Eventually(func() []byte {
			s = secret(ctx, name)
			return s.Data["tls.crt"]
		}).WithTimeout(2 * timeout).WithPolling(poll).ShouldNot(Equal(before))
		return s
	}

	BeforeAll(func(ctx SpecContext) {
		ensureNamespace(ctx, ns, nil)
		ensureNamespace(ctx, shop, nil)
		ensureNode(ctx, node)
		By("installing an issuer chain like the operator's: SelfSigned → root CA Certificate → CA Issuer")
		for _, o := range []client.Object{
			&cmapi.Issuer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "rotation-selfsigned"},
				Spec: cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{SelfSigned: &cmapi.SelfSignedIssuer{}}}},
			&cmapi.Certificate{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: rootCA},
				Spec: cmapi.CertificateSpec{IsCA: true, CommonName: "rotation test root", SecretName: rootCA,
					PrivateKey: &cmapi.CertificatePrivateKey{Algorithm: cmapi.ECDSAKeyAlgorithm, Size: 256, RotationPolicy: cmapi.RotationPolicyAlways},
					IssuerRef:  cmmeta.IssuerReference{Name: "rotation-selfsigned", Kind: "Issuer"}}},
			&cmapi.Issuer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: caIssuer},
				Spec: cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{CA: &cmapi.CAIssuer{SecretName: rootCA}}}},
			&cmapi.Certificate{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: cpTLS},
				Spec: cmapi.CertificateSpec{DNSNames: []string{serverName}, SecretName: cpTLS, Duration: &metav1.Duration{Duration: 24 * time.Hour},
					PrivateKey: &cmapi.CertificatePrivateKey{Algorithm: cmapi.ECDSAKeyAlgorithm, Size: 256, RotationPolicy: cmapi.RotationPolicyAlways},
					IssuerRef:  cmmeta.IssuerReference{Name: caIssuer, Kind: "Issuer"}}},
		} {
			ensure(ctx, o)
		}
		By("mounting the control plane's certificate in its --tls-dir")
		var cpSecret corev1.Secret
		Eventually(func() error {
			return k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: cpTLS}, &cpSecret)
		}).WithTimeout(2 * timeout).WithPolling(poll).Should(Succeed())
		tlsDir = GinkgoT().TempDir()
		writeTLSDir(&cpSecret)
		oldRoot = parsePEM(string(secret(ctx, rootCA).Data["tls.crt"]))

		By("starting a control plane of its own with a fake clock")
		clock = clocktesting.NewFakeClock(time.Now())
		opts := suiteOptions(prometheus.NewRegistry())
		opts.Namespace = ns
		opts.IssuerRef = cmmeta.IssuerReference{Name: caIssuer, Kind: "Issuer", Group: "cert-manager.io"}
		opts.TLSDir = tlsDir
		opts.NodeAgents = []string{ns + "/ztunnel"}
		opts.Clock = clock
		mgr, err := ctrl.NewManager(menv.Config, ctrl.Options{
			Scheme:     meshscheme.New(),
			Metrics:    metricsserver.Options{BindAddress: "0"},
			Controller: config.Controller{SkipNameValidation: ptr.To(true)}, // the suite's control plane has the same controllers
		})
		Expect(err).NotTo(HaveOccurred())
		rotated, err = controlplane.New(suiteCtx, mgr, menv.Config, opts)
		Expect(err).NotTo(HaveOccurred())
		runCtx, stop := context.WithCancel(suiteCtx)
		DeferCleanup(stop)
		// Its cache and itself, not its manager: the suite's status writers are the only ones.
		go func() { _ = mgr.GetCache().Start(runCtx) }()
		go func() { _ = rotated.Start(runCtx) }()
		var caAddress string
		xdsAddress, caAddress, err = rotated.WaitReady(ctx)
		Expect(err).NotTo(HaveOccurred())

		ztunnel := runPod(ctx, podSpec{namespace: ns, name: "ztunnel-r", serviceAccount: "ztunnel", node: node})
		runPod(ctx, podSpec{namespace: shop, name: "web-r", serviceAccount: "web", node: node})
		webID = pb.SpiffeID(trustDomain, shop, "web")
		ztunnelToken = tokenFor(ctx, ns, "ztunnel", ztunnel, pb.CATokenAudience)
		tlsConfig := &tls.Config{RootCAs: poolOf(oldRoot), ServerName: serverName, MinVersion: tls.VersionTLS13}
		conn, err := grpc.NewClient(caAddress, grpc.WithTransportCredentials(credentials.NewTLS(tlsConfig)))
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(conn.Close)
		certs = pb.NewCertificateServiceClient(conn)
		Eventually(func(g Gomega) {
			var pods corev1.PodList
			g.Expect(rotated.Cache().List(ctx, &pods, client.InNamespace(shop))).To(Succeed())
			g.Expect(pods.Items).To(HaveLen(1))
		}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())

		By("connecting node-r's ztunnel xDS client")
		bundles = newRecorder()
		ztunnelXDS := xdsclient.New(xdsAddress, bundles, xdsclient.Options{
			TypeURLs:       pb.TypeURLs,
			Node:           &corev3.Node{Id: "ztunnel~" + node},
			DialOptions:    []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(tlsConfig))},
			CallOptions:    []grpc.CallOption{grpc.PerRPCCredentials(bearer(ztunnelToken))},
			InitialBackoff: 50 * time.Millisecond,
			MaxBackoff:     200 * time.Millisecond,
		})
		go func() { _ = ztunnelXDS.Run(runCtx) }()
		Eventually(ztunnelXDS.Synced()).WithTimeout(timeout).Should(BeClosed())
	})

	It("publishes the issuer's root and issues under it", func(ctx SpecContext) {
		Eventually(published).WithTimeout(timeout).WithPolling(poll).Should(HaveExactElements(id(oldRoot)))
		_, oldLeaf = issue(ctx, time.Hour) // the shortest the CA grants
		Expect(verifies(oldLeaf, oldRoot)).To(Succeed())
	})

	It("publishes the old and the new root before it hands out the first certificate under the new root", func(ctx SpecContext) {
		newRoot = parsePEM(string(reissue(ctx, rootCA).Data["tls.crt"]))
		Expect(newRoot.Equal(oldRoot)).To(BeFalse())
		Expect(newRoot.PublicKey).NotTo(Equal(oldRoot.PublicKey), "the root was re-issued with a new key")

		var resp *pb.CreateCertificateResponse
		// cert-manager's CA issuer may sign with the old key for a moment after the Secret changed.
		Eventually(func() error {
			resp, newLeaf = issue(ctx, 24*time.Hour)
			return verifies(newLeaf, newRoot)
		}).WithTimeout(timeout).WithPolling(poll).Should(Succeed(), "new certificates chain to the new root")
		Expect(verifies(newLeaf, oldRoot)).NotTo(Succeed())
		Expect(published()).To(ConsistOf(id(oldRoot), id(newRoot)), "the ztunnel holds both roots when the certificate is answered, not later")
		var answered []*x509.Certificate
		for _, r := range resp.Roots {
			answered = append(answered, parsePEM(r))
		}
		Expect(ids(answered)).To(HaveExactElements(id(newRoot), id(oldRoot)), "the answer (what a waypoint trusts): the issuer's root, then the retiring one")

		By("verifying a certificate from before the rotation, and one from after, against the published bundle")
		Expect(verifies(oldLeaf, publishedCerts()...)).To(Succeed())
		Expect(verifies(newLeaf, publishedCerts()...)).To(Succeed())
	})

	It("records both roots in the ConfigMap, from which a restarted replica starts", func(ctx SpecContext) {
		live, err := client.NewWithWatch(menv.Config, client.Options{Scheme: meshscheme.New()})
		Expect(err).NotTo(HaveOccurred())
		restarted := identity.NewTrustRoots(identity.TrustRootsOptions{Client: live, Namespace: ns, Log: logf.Log.WithName("restarted")})
		Expect(restarted.Load(ctx)).To(Succeed())
		var roots []*x509.Certificate
		for _, r := range restarted.Roots() {
			roots = append(roots, parsePEM(r))
		}
		Expect(ids(roots)).To(ConsistOf(id(oldRoot), id(newRoot)))
	})

	It("drops the old root once every certificate issued under it has expired", func(ctx SpecContext) {
		By("renewing the control plane's own certificate under the new root, as cert-manager does at half life")
		writeTLSDir(reissue(ctx, cpTLS))
		Eventually(func() error {
			// The control plane re-reads its files on a handshake, at most every 10 s.
			conn, err := tls.Dial("tcp", xdsAddress, &tls.Config{RootCAs: poolOf(oldRoot, newRoot), ServerName: serverName,
				MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"}})
			if err != nil {
				return err
			}
			defer conn.Close()
			return verifies(conn.ConnectionState().PeerCertificates[0], newRoot)
		}).WithTimeout(timeout).WithPolling(time.Second).Should(Succeed())
		Expect(published()).To(ConsistOf(id(oldRoot), id(newRoot)), "the 1h certificate under the old root may still be valid")

		By("moving the clock past that certificate's expiry and the clock-skew margin")
		Eventually(clock.HasWaiters).WithTimeout(timeout).WithPolling(poll).Should(BeTrue(), "the retirement is scheduled")
		clock.Step(oldLeaf.NotAfter.Sub(clock.Now()) + 30*time.Minute + identity.RootRetirementSkew)
		Eventually(published).WithTimeout(timeout).WithPolling(poll).Should(HaveExactElements(id(newRoot)))
		Expect(rotated.Roots()).To(HaveLen(1))
		Expect(verifies(oldLeaf, publishedCerts()...)).NotTo(Succeed())
		Expect(verifies(newLeaf, publishedCerts()...)).To(Succeed())
	})
})

var _ = Describe("the trust-roots record", func() {
	It("is written with no more than the control plane's rendered Role", func(ctx SpecContext) {
		const ns = "rotation-rbac"
		Expect(manifests.TrustRootsConfigMap).To(Equal(identity.TrustRootsConfigMap), "the Role names the ConfigMap the control plane writes")
		ensureNamespace(ctx, ns, nil)
		ensureServiceAccount(ctx, ns, "ambientmesh-controlplane")
		ensure(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "controlplane"}, Rules: manifests.ControlPlaneNamespaceRules()})
		ensure(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "controlplane"},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "controlplane"},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: "ambientmesh-controlplane"}}})
		asControlPlane := rest.CopyConfig(menv.Config)
		asControlPlane.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + ns + ":ambientmesh-controlplane"}
		live, err := client.NewWithWatch(asControlPlane, client.Options{Scheme: meshscheme.New()})
		Expect(err).NotTo(HaveOccurred())

		root, err := menv.RootCAPEM(ctx)
		Expect(err).NotTo(HaveOccurred())
		trust := identity.NewTrustRoots(identity.TrustRootsOptions{Client: live, Namespace: ns, Log: logf.Log.WithName("rbac")})
		Expect(trust.Load(ctx)).To(Succeed())
		Expect(trust.Issued(ctx, []string{string(root)}, time.Now().Add(time.Hour))).To(Succeed(), "create")
		Expect(trust.Issued(ctx, []string{string(root)}, time.Now().Add(2*time.Hour))).To(Succeed(), "update")
		w, err := live.Watch(ctx, &corev1.ConfigMapList{}, client.InNamespace(ns),
			client.MatchingFieldsSelector{Selector: fields.OneTermEqualSelector("metadata.name", identity.TrustRootsConfigMap)})
		Expect(err).NotTo(HaveOccurred(), "watch, as Run does")
		w.Stop()
		Expect(trust.Roots()).To(HaveLen(1))
	})
})

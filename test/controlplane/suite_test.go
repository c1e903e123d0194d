// The control-plane suite runs the control plane in-process against real parts: the
// envtest kube-apiserver and etcd, the real cert-manager controller signing with a CA
// Issuer, real projected service-account tokens checked by TokenReview, and the ztunnel's
// own delta xDS client over TLS.
package controlplane_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"

	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"k8s.io/client-go/kubernetes"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/ambientmesh/ambient-operator/controlplane"
	"github.com/ambientmesh/ambient-operator/controlplane/identity"
	"github.com/ambientmesh/ambient-operator/controlplane/xds/translate"
	"github.com/ambientmesh/ambient-operator/internal/meshscheme"
	"github.com/ambientmesh/ambient-operator/test/controlplane/meshenv"
)

const (
	trustDomain = "cluster.local"
	// serverName is the DNS SAN of the control plane's own certificate.
	serverName = "ambientmesh-controlplane.ambient-system.svc"
	timeout    = 30 * time.Second
	poll       = 100 * time.Millisecond
)

var (
	suiteCtx  context.Context
	menv      *meshenv.Env
	k8sClient client.Client
	clientset *kubernetes.Clientset
	cp        *controlplane.ControlPlane
	xdsAddr   string
	caAddr    string
)

func TestControlPlane(t *testing.T) {
	if testing.Short() {
		t.Skip("envtest suite (real kube-apiserver, etcd, cert-manager): skipped in -short mode, run by make test")
	}
	RegisterFailHandler(Fail)
	RunSpecs(t, "control plane suite")
}

var _ = BeforeSuite(func() {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	ctrl.SetLogger(logf.Log)
	var cancel context.CancelFunc
	suiteCtx, cancel = context.WithCancel(context.Background())

	var err error
	menv, err = meshenv.Start(suiteCtx, GinkgoWriter)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() {
		cancel()
		menv.Stop()
	})
	k8sClient = menv.Client
	clientset, err = kubernetes.NewForConfig(menv.Config)
	Expect(err).NotTo(HaveOccurred())

	mgr, err := ctrl.NewManager(menv.Config, ctrl.Options{
		Scheme:  meshscheme.New(),
		Metrics: metricsserver.Options{BindAddress: "0"},
	})
	Expect(err).NotTo(HaveOccurred())
	cp, err = controlplane.New(suiteCtx, mgr, menv.Config, suiteOptions(metrics.Registry))
	Expect(err).NotTo(HaveOccurred())
	Expect(mgr.Add(cp)).To(Succeed())
	go func() {
		defer GinkgoRecover()
		Expect(mgr.Start(suiteCtx)).To(Succeed())
	}()
	ready, cancelReady := context.WithTimeout(suiteCtx, 2*time.Minute)
	defer cancelReady()
	xdsAddr, caAddr, err = cp.WaitReady(ready)
	Expect(err).NotTo(HaveOccurred())
})

// suiteOptions configure the suite's control plane. Every client of the suite connects
// from 127.0.0.1, one caller to the rate limits: they are raised far above what the
// suite asks for.
func suiteOptions(reg prometheus.Registerer) controlplane.Options {
	return controlplane.Options{
		Mesh:                    translate.Mesh{TrustDomain: trustDomain, RootNamespace: meshenv.Namespace, ClusterDomain: "cluster.local"},
		Namespace:               meshenv.Namespace,
		ServiceAccount:          "ambientmesh-controlplane",
		XDSAddress:              "127.0.0.1:0",
		CAAddress:               "127.0.0.1:0",
		IssuerRef:               cmmeta.IssuerReference{Name: meshenv.CAIssuer, Kind: "Issuer", Group: "cert-manager.io"},
		DNSNames:                []string{serverName},
		NodeAgents:              []string{meshenv.Namespace + "/ztunnel"},
		Debounce:                20 * time.Millisecond,
		Registerer:              reg,
		XDSStreamLimit:          identity.RateLimit{PerSecond: 1000, Burst: 10000},
		CertificateRequestLimit: identity.RateLimit{PerSecond: 1000, Burst: 10000},
	}
}

// meshTLS trusts the mesh roots and checks the control plane's DNS name.
func meshTLS() *tls.Config {
	pool := x509.NewCertPool()
	for _, r := range cp.Roots() {
		pool.AppendCertsFromPEM([]byte(r))
	}
	return &tls.Config{RootCAs: pool, ServerName: serverName, MinVersion: tls.VersionTLS13}
}

// dial opens a gRPC connection to addr over TLS with the mesh roots.
func dial(addr string) *grpc.ClientConn {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(meshTLS())))
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(conn.Close)
	return conn
}

package testenv

import (
	"context"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/ambientmesh/ambient-operator/internal/meshscheme"
)

var (
	suiteCtx        context.Context
	suiteCancel     context.CancelFunc
	env             *envtest.Environment
	cfg             *rest.Config
	k8sClient       client.Client
	stopCertManager func()
)

func TestTestenv(t *testing.T) {
	if testing.Short() {
		t.Skip("envtest suite (real kube-apiserver, etcd, cert-manager): skipped in -short mode, run by make test")
	}
	RegisterFailHandler(Fail)
	RunSpecs(t, "testenv harness suite")
}

var _ = BeforeSuite(func() {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	suiteCtx, suiteCancel = context.WithCancel(context.Background())

	var err error
	env, err = New()
	Expect(err).NotTo(HaveOccurred())
	cfg, err = env.Start()
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() {
		suiteCancel()
		Expect(env.Stop()).To(Succeed())
	})

	k8sClient, err = client.New(cfg, client.Options{Scheme: meshscheme.New()})
	Expect(err).NotTo(HaveOccurred())

	stopCertManager, err = StartCertManager(suiteCtx, cfg, WithCertManagerLogs(GinkgoWriter))
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() { stopCertManager() })
})

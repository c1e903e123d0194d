package main

import (
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/ambientmesh/ambient-operator/test/testenv"
)

var (
	env       *envtest.Environment
	cfg       *rest.Config
	clientset *kubernetes.Clientset
)

func TestOperatorManager(t *testing.T) {
	if testing.Short() {
		t.Skip("envtest suite (real kube-apiserver and etcd): skipped in -short mode, run by make test")
	}
	RegisterFailHandler(Fail)
	RunSpecs(t, "operator manager suite")
}

var _ = BeforeSuite(func() {
	ctrl.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	var err error
	env, err = testenv.New()
	Expect(err).NotTo(HaveOccurred())
	cfg, err = env.Start()
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() { Expect(env.Stop()).To(Succeed()) })
	clientset, err = kubernetes.NewForConfig(cfg)
	Expect(err).NotTo(HaveOccurred())
})

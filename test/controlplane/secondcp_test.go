package controlplane_test

import (
	"context"
	"net"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controlplane"
	"github.com/ambientmesh/ambient-operator/controlplane/identity"
	"github.com/ambientmesh/ambient-operator/internal/meshscheme"
)

// A second control plane in the suite's process, beside the suite's: it starts its cache
// and itself, not its manager, so that its status writers never compete with the suite's.
var _ = Describe("a second control plane in the same process", Ordered, func() {
	newManager := func() ctrl.Manager {
		mgr, err := ctrl.NewManager(menv.Config, ctrl.Options{
			Scheme:     meshscheme.New(),
			Metrics:    metricsserver.Options{BindAddress: "0"},
			Controller: config.Controller{SkipNameValidation: ptr.To(true)}, // the suite's control plane has the same controllers
		})
		Expect(err).NotTo(HaveOccurred())
		return mgr
	}

	var (
		second    *controlplane.ControlPlane
		mu        sync.Mutex
		listeners []net.Listener // in the order Start opens them: xDS, then CA
		stopped   = make(chan error, 1)
	)

	It("is refused with an error, not a panic, when its registry already holds the suite's metrics", func(ctx SpecContext) {
		_, err := controlplane.New(ctx, newManager(), menv.Config, suiteOptions(metrics.Registry))
		Expect(err).To(MatchError(ContainSubstring("registering the control plane's metrics")))
	})

	BeforeAll(func(ctx SpecContext) {
		opts := suiteOptions(prometheus.NewRegistry())
		opts.XDSStreamLimit = identity.RateLimit{PerSecond: 0.001, Burst: 2}
		opts.CertificateRequestLimit = identity.RateLimit{PerSecond: 0.001, Burst: 2}
		opts.Listen = func(network, address string) (net.Listener, error) {
			l, err := net.Listen(network, address)
			if err == nil {
				mu.Lock()
				listeners = append(listeners, l)
				mu.Unlock()
			}
			return l, err
		}
		mgr := newManager()
		var err error
		second, err = controlplane.New(suiteCtx, mgr, menv.Config, opts)
		Expect(err).NotTo(HaveOccurred())
		runCtx, stop := context.WithCancel(suiteCtx)
		DeferCleanup(stop)
		go func() { _ = mgr.GetCache().Start(runCtx) }()
		go func() { stopped <- second.Start(runCtx) }()
	})

	It("serves with a registry of its own", func(ctx SpecContext) {
		_, _, err := second.WaitReady(ctx)
		Expect(err).NotTo(HaveOccurred())
	})

	It("refuses the xDS streams and certificate requests of one caller beyond its limits", func(ctx SpecContext) {
		xds, ca, err := second.WaitReady(ctx)
		Expect(err).NotTo(HaveOccurred())
		conn := dial(xds)
		for range 2 {
			err := subscribeAs(ctx, conn, &corev3.Node{Id: "ztunnel~node-p"}, pb.WorkloadTypeURL)
			Expect(status.Code(err)).To(Equal(codes.Unauthenticated), "within the limit: authenticated, and refused for want of credentials: %v", err)
		}
		err = subscribeAs(ctx, conn, &corev3.Node{Id: "ztunnel~node-p"}, pb.WorkloadTypeURL)
		Expect(status.Code(err)).To(Equal(codes.ResourceExhausted))
		Expect(status.Convert(err).Message()).To(ContainSubstring("too many xDS streams from 127.0.0.1"))

		certs := pb.NewCertificateServiceClient(dial(ca))
		for range 2 {
			_, err := certs.CreateCertificate(ctx, &pb.CreateCertificateRequest{})
			Expect(status.Code(err)).To(Equal(codes.Unauthenticated))
		}
		_, err = certs.CreateCertificate(ctx, &pb.CreateCertificateRequest{})
		Expect(status.Code(err)).To(Equal(codes.ResourceExhausted))
		Expect(status.Convert(err).Message()).To(ContainSubstring("too many certificate requests from 127.0.0.1"))
	})

	It("stops with the error of a server that fails after it was ready, and stays reported ready", func(ctx SpecContext) {
		mu.Lock()
		Expect(listeners).To(HaveLen(2))
		xdsListener := listeners[0]
		mu.Unlock()
		Expect(xdsListener.Close()).To(Succeed()) // the xDS server's Accept fails
		Eventually(stopped).WithTimeout(timeout).Should(Receive(MatchError(net.ErrClosed)))
		xds, _, err := second.WaitReady(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(xds).To(Equal(xdsListener.Addr().String()))
	})
})

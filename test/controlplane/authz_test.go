package controlplane_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controlplane/xds/waypoint"
	"github.com/ambientmesh/ambient-operator/dataplane/bootstrap"
	"github.com/ambientmesh/ambient-operator/dataplane/xdsclient"
	"github.com/ambientmesh/ambient-operator/dataplane/ztunnel"
	"github.com/ambientmesh/ambient-operator/internal/spiffe"
	"github.com/ambientmesh/ambient-operator/test/controlplane/meshenv"
)

var _ = Describe("who may hold an xDS stream", Ordered, func() {
	const ns = "authz-shop"
	var (
		conn         *grpc.ClientConn
		ztunnelToken string // bound to the ztunnel pod of node-p
		webToken     string // bound to a workload pod of node-p
	)
	withToken := func(token string) grpc.CallOption { return grpc.PerRPCCredentials(bearer(token)) }

	BeforeAll(func(ctx SpecContext) {
		ensureNamespace(ctx, ns, map[string]string{meshv1.LabelDataplaneMode: meshv1.DataplaneModeAmbient})
		ensureNode(ctx, "node-p")
		zt := runPod(ctx, podSpec{namespace: meshenv.Namespace, name: "ztunnel-p", serviceAccount: "ztunnel", node: "node-p"})
		ztunnelToken = tokenFor(ctx, meshenv.Namespace, "ztunnel", zt, pb.CATokenAudience)
		web := runPod(ctx, podSpec{namespace: ns, name: "web-1", serviceAccount: "web", node: "node-p", ip: "10.40.0.1"})
		webToken = tokenFor(ctx, ns, "web", web, pb.CATokenAudience)
		conn = dial(xdsAddr)
	})

	It("serves a ztunnel the workload API for the node its token is bound to", func(ctx SpecContext) {
		Expect(subscribeAs(ctx, conn, &corev3.Node{Id: "ztunnel~node-p"}, pb.WorkloadTypeURL, withToken(ztunnelToken))).To(Succeed())
	})

	It("refuses a ztunnel whose node id names another node than its credentials", func(ctx SpecContext) {
		err := subscribeAs(ctx, conn, &corev3.Node{Id: "ztunnel~node-q"}, pb.WorkloadTypeURL, withToken(ztunnelToken))
		Expect(status.Code(err)).To(Equal(codes.PermissionDenied))
		Expect(status.Convert(err).Message()).To(ContainSubstring(`claims the ztunnel of node "node-q", but the client's credentials are bound to node "node-p"`))
	})

	It("refuses a service account that is not a ztunnel's, even on its own node", func(ctx SpecContext) {
		err := subscribeAs(ctx, conn, &corev3.Node{Id: "ztunnel~node-p"}, pb.WorkloadTypeURL, withToken(webToken))
		Expect(status.Code(err)).To(Equal(codes.PermissionDenied))
		Expect(status.Convert(err).Message()).To(ContainSubstring("authenticated as authz-shop/web, which is not a ztunnel service account"))

		By("and whatever node it claims to be")
		err = subscribeAs(ctx, conn, &corev3.Node{Id: "debug-client"}, pb.WorkloadTypeURL, withToken(webToken))
		Expect(status.Code(err)).To(Equal(codes.PermissionDenied))
		Expect(status.Convert(err).Message()).To(ContainSubstring("neither a ztunnel"))
	})

	It("serves a waypoint its own resources only", func(ctx SpecContext) {
		By("running two Waypoints, each in front of one Service")
		for _, name := range []string{"wp-a", "wp-b"} {
			ensureServiceAccount(ctx, ns, name)
			Expect(k8sClient.Create(ctx, &meshv1.Waypoint{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}})).To(Succeed())
			Expect(k8sClient.Create(ctx, &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{meshv1.LabelWaypoint: name}},
				Spec: corev1.ServiceSpec{Selector: map[string]string{meshv1.LabelWaypoint: name},
					Ports: []corev1.ServicePort{{Name: "hbone", Port: 15008}}},
			})).To(Succeed())
			Expect(k8sClient.Create(ctx, &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "api-" + name, Labels: map[string]string{meshv1.LabelUseWaypoint: name}},
				Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "api"},
					Ports: []corev1.ServicePort{{Name: "http", Port: 80, AppProtocol: ptr.To("http")}}},
			})).To(Succeed())
		}
		ownListener := "api-wp-a." + ns + ".svc.cluster.local:80"
		Eventually(func() any {
			return cp.XDS.Waypoints().Get(ns, "wp-b", resourcev3.ListenerType, "api-wp-b."+ns+".svc.cluster.local:80")
		}).WithTimeout(timeout).WithPolling(poll).ShouldNot(BeNil(), "wp-b's listener is published")

		By("connecting as wp-a: its listener and nothing of wp-b's")
		wpA := tokenFor(ctx, ns, "wp-a", nil, pb.CATokenAudience)
		asWPA := &corev3.Node{Id: "wp-a-1." + ns, Cluster: waypoint.NodeCluster(ns, "wp-a")}
		var mu sync.Mutex
		held := map[string]bool{}
		listeners := func() []string {
			mu.Lock()
			defer mu.Unlock()
			return slices.Sorted(maps.Keys(held))
		}
		c := xdsclient.New(xdsAddr, xdsclient.HandlerFunc(func(typeURL string, upserts map[string]*anypb.Any, removed []string) error {
			if typeURL != resourcev3.ListenerType {
				return nil
			}
			mu.Lock()
			defer mu.Unlock()
			for name := range upserts {
				held[name] = true
			}
			for _, name := range removed {
				delete(held, name)
			}
			return nil
		}), xdsclient.Options{
			TypeURLs: waypoint.TypeURLs, Node: asWPA,
			DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(meshTLS()))},
			CallOptions: []grpc.CallOption{withToken(wpA)}, InitialBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		})
		runCtx, stop := context.WithCancel(ctx)
		defer stop()
		go func() { _ = c.Run(runCtx) }()
		Eventually(listeners).WithTimeout(timeout).WithPolling(poll).Should(Equal([]string{ownListener}))

		By("refusing wp-a the workload API, and the resources of wp-b")
		err := subscribeAs(ctx, conn, asWPA, pb.WorkloadTypeURL, withToken(wpA))
		Expect(status.Code(err)).To(Equal(codes.PermissionDenied))
		Expect(status.Convert(err).Message()).To(ContainSubstring("is served its Envoy resources only"))
		err = subscribeAs(ctx, conn, &corev3.Node{Id: "wp-a-1." + ns, Cluster: waypoint.NodeCluster(ns, "wp-b")}, resourcev3.ListenerType, withToken(wpA))
		Expect(status.Code(err)).To(Equal(codes.PermissionDenied))
		Expect(status.Convert(err).Message()).To(ContainSubstring("not the waypoint's service account authz-shop/wp-b"))
	})

	It("serves a ztunnel over mutual TLS with its own certificate, as cmd/ztunnel connects, with no token needed", func(ctx SpecContext) {
		ensureNode(ctx, "node-t")
		zt := runPod(ctx, podSpec{namespace: meshenv.Namespace, name: "ztunnel-t", serviceAccount: "ztunnel", node: "node-t"})
		var token atomic.Value
		token.Store(tokenFor(ctx, meshenv.Namespace, "ztunnel", zt, pb.CATokenAudience))
		readToken := func() (string, error) { return token.Load().(string), nil }
		roots := x509.NewCertPool()
		for _, r := range cp.Roots() {
			roots.AppendCertsFromPEM([]byte(r))
		}
		caConn, err := grpc.NewClient(caAddr, bootstrap.Transport(false, roots, nil), grpc.WithAuthority(serverName))
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(caConn.Close)

		By("building the ztunnel as cmd/ztunnel does: its own certificate on the xDS connection, its token along")
		own := spiffe.ID{TrustDomain: trustDomain, Namespace: meshenv.Namespace, ServiceAccount: "ztunnel"}
		var z *ztunnel.Ztunnel
		clientCert := func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			certCtx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			return z.Identity.Certificate(certCtx, own)
		}
		z, err = ztunnel.New(ztunnel.Config{
			Node: "node-t", TrustDomain: trustDomain, XDSAddress: xdsAddr,
			XDSDialOptions: []grpc.DialOption{bootstrap.Transport(false, roots, clientCert), grpc.WithAuthority(serverName),
				grpc.WithPerRPCCredentials(bootstrap.BearerToken{Read: readToken, Secure: true})},
			CA: pb.NewCertificateServiceClient(caConn), Token: readToken,
			AdminAddress: "-", MetricsAddress: "-", ReadinessAddress: "-", HandoverGrace: time.Millisecond, DrainPeriod: time.Millisecond,
		})
		Expect(err).NotTo(HaveOccurred())
		z.Identity.Acquire(own)
		_, err = z.Identity.Certificate(ctx, own)
		Expect(err).NotTo(HaveOccurred(), "the CA issues the ztunnel its own certificate for its token")

		By("spoiling the token: from now on only the certificate can authenticate the ztunnel")
		token.Store("not-a-token")
		runCtx, stop := context.WithCancel(suiteCtx)
		done := make(chan struct{})
		go func() { defer close(done); _ = z.Run(runCtx) }()
		DeferCleanup(func() { stop(); <-done })
		Eventually(z.Ready).WithTimeout(timeout).WithPolling(poll).Should(Succeed(), "configured over mutual TLS, node-t's ztunnel is ready")
		Expect(z.Store.Snapshot().TrustBundles).NotTo(BeEmpty())
	})

	It("asks again after rejecting a response, and is level again once it accepts what it rejected", func(ctx SpecContext) {
		ensureNode(ctx, "node-n")
		zt := runPod(ctx, podSpec{namespace: meshenv.Namespace, name: "ztunnel-n", serviceAccount: "ztunnel", node: "node-n"})
		rec := newRecorder()
		var reject atomic.Bool
		var badUID atomic.Value
		badUID.Store("")
		// The client stream (its Connects count) that carried the last rejected response.
		var rejectedOn atomic.Int64
		var c *xdsclient.Client
		relay := startProxy(xdsAddr)
		c = xdsclient.New(relay.lis.Addr().String(), xdsclient.HandlerFunc(func(typeURL string, upserts map[string]*anypb.Any, removed []string) error {
			if _, bad := upserts[badUID.Load().(string)]; bad && reject.Load() {
				rejectedOn.Store(int64(c.Stats().Connects))
				return errors.New("test: workload refused")
			}
			return rec.Apply(typeURL, upserts, removed)
		}), xdsclient.Options{
			TypeURLs: pb.TypeURLs, Node: &corev3.Node{Id: "ztunnel~node-n"},
			DialOptions:    []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(meshTLS()))},
			CallOptions:    []grpc.CallOption{withToken(tokenFor(ctx, meshenv.Namespace, "ztunnel", zt, pb.CATokenAudience))},
			InitialBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		})
		runCtx, stop := context.WithCancel(suiteCtx)
		DeferCleanup(stop)
		go func() { _ = c.Run(runCtx) }()
		Eventually(c.Synced()).WithTimeout(timeout).Should(BeClosed())

		By("creating two pods while the client is away, so that one response carries both")
		relay.cut(true)
		Eventually(func() bool { return c.Stats().Connected }).WithTimeout(timeout).Should(BeFalse())
		good := runPod(ctx, podSpec{namespace: ns, name: "good", serviceAccount: "web", node: "node-n", ip: "10.40.1.1"})
		bad := runPod(ctx, podSpec{namespace: ns, name: "bad", serviceAccount: "web", node: "node-n", ip: "10.40.1.2"})
		for _, p := range []*corev1.Pod{good, bad} {
			Eventually(func() []string {
				w, _ := cp.XDS.Publisher().Get(pb.WorkloadTypeURL, string(p.UID)).(*pb.Workload)
				return w.GetAddresses()
			}).WithTimeout(timeout).Should(Equal([]string{p.Status.PodIP}))
		}
		cp.XDS.Publisher().Flush()
		badUID.Store(string(bad.UID))
		reject.Store(true)
		nacksBefore := serverNacks(meshenv.Namespace+"/ztunnel", "Workload")
		relay.resume()

		By("rejecting the response: behind, counted by the control plane under the ztunnels' service account")
		Eventually(c.Behind).WithTimeout(timeout).WithPolling(poll).Should(HaveKeyWithValue(pb.WorkloadTypeURL, "test: workload refused"))
		Eventually(func() float64 { return serverNacks(meshenv.Namespace+"/ztunnel", "Workload") }).WithTimeout(timeout).Should(BeNumerically(">", nacksBefore))
		Expect(rec.has(string(good.UID))).To(BeFalse(), "the valid pod came in the rejected response")

		By("accepting again: the next stream brings both pods")
		reject.Store(false)
		Eventually(func(g Gomega) {
			g.Expect(rec.has(string(good.UID))).To(BeTrue(), "the rejected response's valid pod")
			g.Expect(rec.has(string(bad.UID))).To(BeTrue())
			g.Expect(c.Behind()).To(BeEmpty())
		}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
		Expect(int64(c.Stats().Connects)).To(BeNumerically(">", rejectedOn.Load()), "caught up on a stream after the one that carried the rejection")
	})
})

// serverNacks reads ambientmesh_xds_nacks_total of one client and type.
func serverNacks(client, typ string) float64 {
	families, err := metrics.Registry.Gather()
	Expect(err).NotTo(HaveOccurred())
	for _, f := range families {
		if f.GetName() != "ambientmesh_xds_nacks_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["client"] == client && labels["type"] == typ {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

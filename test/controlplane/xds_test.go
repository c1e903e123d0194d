package controlplane_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"sort"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/dataplane/xdsclient"
	"github.com/ambientmesh/ambient-operator/test/controlplane/meshenv"
)

// recorder is the xDS client's handler: it keeps the resources the client holds and every
// update (type, upserted names, removed names) in arrival order.
type recorder struct {
	mu        sync.Mutex
	workloads map[string]*pb.Workload
	services  map[string]*pb.Service
	bundles   map[string]*pb.TrustBundle
	updates   []update
}

type update struct {
	typeURL string
	upserts []string
	removed []string
}

func newRecorder() *recorder {
	return &recorder{workloads: map[string]*pb.Workload{}, services: map[string]*pb.Service{}, bundles: map[string]*pb.TrustBundle{}}
}

func (r *recorder) Apply(typeURL string, upserts map[string]*anypb.Any, removed []string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	u := update{typeURL: typeURL, removed: append([]string(nil), removed...)}
	for name, a := range upserts {
		u.upserts = append(u.upserts, name)
		switch typeURL {
		case pb.WorkloadTypeURL:
			w := &pb.Workload{}
			if err := a.UnmarshalTo(w); err != nil {
				return err
			}
			r.workloads[name] = w
		case pb.ServiceTypeURL:
			s := &pb.Service{}
			if err := a.UnmarshalTo(s); err != nil {
				return err
			}
			r.services[name] = s
		case pb.TrustBundleTypeURL:
			b := &pb.TrustBundle{}
			if err := a.UnmarshalTo(b); err != nil {
				return err
			}
			r.bundles[name] = b
		}
	}
	for _, name := range removed {
		delete(r.workloads, name)
		delete(r.services, name)
	}
	sort.Strings(u.upserts)
	if len(u.upserts)+len(u.removed) > 0 {
		r.updates = append(r.updates, u)
	}
	return nil
}

// workload returns a copy of a held Workload; nil when the client does not hold it.
func (r *recorder) workload(uid string) *pb.Workload {
	r.mu.Lock()
	defer r.mu.Unlock()
	w, ok := r.workloads[uid]
	if !ok {
		return nil
	}
	return proto.Clone(w).(*pb.Workload)
}

func (r *recorder) has(uid string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.workloads[uid]
	return ok
}

// since returns the non-empty updates after the first n.
func (r *recorder) since(n int) []update {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]update(nil), r.updates[n:]...)
}

// settle waits until no update has arrived for half a second (earlier changes are done).
func (r *recorder) settle() {
	Eventually(func() bool {
		before := r.count()
		time.Sleep(500 * time.Millisecond)
		return r.count() == before
	}).WithTimeout(timeout).Should(BeTrue())
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.updates)
}

// bearer sends a projected token on every RPC, as a ztunnel without a certificate does.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{pb.AuthorizationMetadataKey: pb.BearerPrefix + string(b)}, nil
}
func (bearer) RequireTransportSecurity() bool { return true }

// proxy is a TCP relay between the client and the xDS port that the test can cut, so the
// client's stream breaks and it reconnects (with the versions it holds).
type proxy struct {
	lis    net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	paused bool
}

func startProxy(target string) *proxy {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	p := &proxy{lis: lis, target: target}
	go p.serve()
	DeferCleanup(func() { _ = lis.Close(); p.cut(false) })
	return p
}

func (p *proxy) serve() {
	for {
		c, err := p.lis.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		paused := p.paused
		p.mu.Unlock()
		if paused {
			_ = c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		go func() { _, _ = io.Copy(up, c); _ = up.Close() }()
		go func() { _, _ = io.Copy(c, up); _ = c.Close() }()
	}
}

// cut closes every relayed connection; paused refuses new ones until resume.
func (p *proxy) cut(paused bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paused = paused
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}

func (p *proxy) resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paused = false
}

var _ = Describe("delta xDS to the ztunnel's client", Ordered, func() {
	const ns = "xds-shop"
	var (
		rec      *recorder
		client0  *xdsclient.Client
		relay    *proxy
		web1     *corev1.Pod
		webSvcID string
		// ztunnelToken is a projected token of the ztunnel service account.
		ztunnelToken string
	)

	BeforeAll(func(ctx SpecContext) {
		ensureNamespace(ctx, ns, map[string]string{meshv1.LabelDataplaneMode: meshv1.DataplaneModeAmbient})
		ensureNode(ctx, "node-x")
		web1 = runPod(ctx, podSpec{namespace: ns, name: "web-1", serviceAccount: "web", node: "node-x", ip: "10.10.0.1", labels: map[string]string{"app": "web"}})
		Expect(k8sClient.Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"},
				Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}}},
		})).To(Succeed())
		webSvcID = pb.ServiceResourceName(ns, "web."+ns+".svc.cluster.local")

		ztunnel := runPod(ctx, podSpec{namespace: meshenv.Namespace, name: "ztunnel-x", serviceAccount: "ztunnel", node: "node-x"})
		ztunnelToken = tokenFor(ctx, meshenv.Namespace, "ztunnel", ztunnel, pb.CATokenAudience)

		relay = startProxy(xdsAddr)
		rec = newRecorder()
		client0 = xdsclient.New(relay.lis.Addr().String(), rec, xdsclient.Options{
			TypeURLs:       pb.TypeURLs,
			Node:           &corev3.Node{Id: "ztunnel~node-x"},
			DialOptions:    []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(meshTLS()))},
			CallOptions:    []grpc.CallOption{grpc.PerRPCCredentials(bearer(ztunnelToken))},
			InitialBackoff: 50 * time.Millisecond,
			MaxBackoff:     200 * time.Millisecond,
		})
		runCtx, cancel := context.WithCancel(suiteCtx)
		DeferCleanup(cancel)
		go func() { _ = client0.Run(runCtx) }()
	})

	It("receives the initial state: workloads with named ports resolved, services, the trust bundle", func(ctx SpecContext) {
		Eventually(client0.Synced()).WithTimeout(timeout).Should(BeClosed())
		Eventually(func(g Gomega) {
			g.Expect(rec.has(string(web1.UID))).To(BeTrue())
			w := rec.workload(string(web1.UID))
			g.Expect(w.GetTunnelProtocol()).To(Equal(pb.TunnelProtocol_TUNNEL_PROTOCOL_HBONE))
			g.Expect(w.GetAddresses()).To(Equal([]string{"10.10.0.1"}))
			g.Expect(w.GetServices()).To(HaveKey(webSvcID))
			g.Expect(w.GetServices()[webSvcID].GetPorts()).To(ConsistOf(HaveField("TargetPort", uint32(8080))))
			rec.mu.Lock()
			defer rec.mu.Unlock()
			g.Expect(rec.services).To(HaveKey(webSvcID))
			g.Expect(rec.bundles).To(HaveKey(trustDomain))
			g.Expect(rec.bundles[trustDomain].GetRoots()).To(Equal(cp.Roots()))
		}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
	})

	// expectOnly waits for updates after mark and checks that exactly one resource changed.
	expectOnly := func(mark int, typeURL, name string, removed bool) {
		var got []update
		Eventually(func() []update { got = rec.since(mark); return got }).WithTimeout(timeout).WithPolling(poll).ShouldNot(BeEmpty())
		Consistently(func() []update { got = rec.since(mark); return got }).WithTimeout(time.Second).WithPolling(poll).Should(HaveLen(1),
			"one pod change must send one resource, got %+v", got)
		Expect(got[0].typeURL).To(Equal(typeURL))
		if removed {
			Expect(got[0].removed).To(Equal([]string{name}))
			Expect(got[0].upserts).To(BeEmpty())
		} else {
			Expect(got[0].upserts).To(Equal([]string{name}))
			Expect(got[0].removed).To(BeEmpty())
		}
	}

	It("sends exactly the new Workload when a pod is added", func(ctx SpecContext) {
		rec.settle()
		mark := rec.count()
		web2 := runPod(ctx, podSpec{namespace: ns, name: "web-2", serviceAccount: "web", node: "node-x", ip: "10.10.0.2", labels: map[string]string{"app": "web"}})
		// Create and the status update (IP, Ready) may land in one debounce window or two;
		// each push must carry only this pod.
		Eventually(func() []string { return rec.workload(string(web2.UID)).GetAddresses() }).WithTimeout(timeout).
			Should(Equal([]string{"10.10.0.2"}))
		Expect(rec.workload(string(web2.UID)).GetStatus()).To(Equal(pb.WorkloadStatus_WORKLOAD_STATUS_HEALTHY))
		for _, u := range rec.since(mark) {
			Expect(u.typeURL).To(Equal(pb.WorkloadTypeURL))
			Expect(u.upserts).To(Equal([]string{string(web2.UID)}))
		}
	})

	It("sends exactly the changed Workload when a pod is relabeled out of the mesh", func(ctx SpecContext) {
		rec.settle()
		mark := rec.count()
		patch := client.MergeFrom(web1.DeepCopy())
		web1.Labels[meshv1.LabelDataplaneMode] = meshv1.DataplaneModeNone
		Expect(k8sClient.Patch(ctx, web1, patch)).To(Succeed())
		expectOnly(mark, pb.WorkloadTypeURL, string(web1.UID), false)
		Expect(rec.workload(string(web1.UID)).GetTunnelProtocol()).To(Equal(pb.TunnelProtocol_TUNNEL_PROTOCOL_NONE))
	})

	It("sends exactly one removal when a pod is deleted", func(ctx SpecContext) {
		rec.settle()
		mark := rec.count()
		Expect(k8sClient.Delete(ctx, web1, client.GracePeriodSeconds(0))).To(Succeed())
		expectOnly(mark, pb.WorkloadTypeURL, string(web1.UID), true)
	})

	It("replaces the Workload of a pod recreated under the same name", func(ctx SpecContext) {
		spec := podSpec{namespace: ns, name: "again", serviceAccount: "web", node: "node-x", ip: "10.10.0.9"}
		old := runPod(ctx, spec)
		Eventually(func() bool { return rec.has(string(old.UID)) }).WithTimeout(timeout).Should(BeTrue())
		Expect(k8sClient.Delete(ctx, old, client.GracePeriodSeconds(0))).To(Succeed())
		renewed := runPod(ctx, spec) // possibly before the control plane saw the deletion
		Expect(renewed.UID).NotTo(Equal(old.UID))
		Eventually(func(g Gomega) {
			g.Expect(rec.has(string(renewed.UID))).To(BeTrue())
			g.Expect(rec.has(string(old.UID))).To(BeFalse(), "the old pod's Workload is removed")
		}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
	})

	It("moves a namespace's pods into the mesh when the namespace is labelled, pushing only them", func(ctx SpecContext) {
		const late = "xds-late"
		ensureNamespace(ctx, late, nil)
		a := runPod(ctx, podSpec{namespace: late, name: "a", serviceAccount: "app", node: "node-x", ip: "10.10.1.1"})
		b := runPod(ctx, podSpec{namespace: late, name: "b", serviceAccount: "app", node: "node-x", ip: "10.10.1.2"})
		Eventually(func() []string { return rec.workload(string(b.UID)).GetAddresses() }).WithTimeout(timeout).Should(Equal([]string{"10.10.1.2"}))
		Expect(rec.workload(string(a.UID)).GetTunnelProtocol()).To(Equal(pb.TunnelProtocol_TUNNEL_PROTOCOL_NONE))
		rec.settle()
		mark := rec.count()

		var nsObj corev1.Namespace
		Expect(k8sClient.Get(ctx, client.ObjectKey{Name: late}, &nsObj)).To(Succeed())
		patch := client.MergeFrom(nsObj.DeepCopy())
		nsObj.Labels = map[string]string{meshv1.LabelDataplaneMode: meshv1.DataplaneModeAmbient}
		Expect(k8sClient.Patch(ctx, &nsObj, patch)).To(Succeed())

		Eventually(func(g Gomega) {
			g.Expect(rec.workload(string(a.UID)).GetTunnelProtocol()).To(Equal(pb.TunnelProtocol_TUNNEL_PROTOCOL_HBONE))
			g.Expect(rec.workload(string(b.UID)).GetTunnelProtocol()).To(Equal(pb.TunnelProtocol_TUNNEL_PROTOCOL_HBONE))
		}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
		rec.settle()
		var pushed []string
		for _, u := range rec.since(mark) {
			Expect(u.typeURL).To(Equal(pb.WorkloadTypeURL))
			Expect(u.removed).To(BeEmpty())
			pushed = append(pushed, u.upserts...)
		}
		Expect(pushed).To(ConsistOf(string(a.UID), string(b.UID)), "only the namespace's pods change")
	})

	It("keeps serving other clients while one client reads nothing", func(ctx SpecContext) {
		By("opening a second delta stream of the node's ztunnel that subscribes to Workloads, reads the first response and nothing after")
		pushesBefore := pushesTo(meshenv.Namespace + "/ztunnel")
		conn := dial(xdsAddr)
		stuckCtx, cancelStuck := context.WithCancel(ctx)
		defer cancelStuck()
		stuck, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(stuckCtx,
			grpc.PerRPCCredentials(bearer(ztunnelToken)))
		Expect(err).NotTo(HaveOccurred())
		Expect(stuck.Send(&discoveryv3.DeltaDiscoveryRequest{
			Node: &corev3.Node{Id: "ztunnel~node-x"}, TypeUrl: pb.WorkloadTypeURL, ResourceNamesSubscribe: []string{"*"},
		})).To(Succeed())
		_, err = stuck.Recv()
		Expect(err).NotTo(HaveOccurred(), "the stuck client gets its first response")

		By("creating more pods than fit in the stuck stream's flow-control window")
		const n = 500
		var uids []string
		for i := range n {
			p := runPod(ctx, podSpec{namespace: ns, name: fmt.Sprintf("burst-%03d", i), serviceAccount: "web", node: "node-x"})
			uids = append(uids, string(p.UID))
		}
		Eventually(func() int {
			held := 0
			for _, uid := range uids {
				if rec.has(uid) {
					held++
				}
			}
			return held
		}).WithTimeout(timeout).WithPolling(poll).Should(Equal(n), "the reading client gets every pod")

		By("counting pushes under the ztunnels' service account, not per node id")
		Expect(pushesTo(meshenv.Namespace + "/ztunnel")).To(BeNumerically(">", pushesBefore))
	})

	It("resumes after a reconnect with only what changed while it was away", func(ctx SpecContext) {
		connects := client0.Stats().Connects
		relay.cut(true)
		Eventually(func() bool { return client0.Stats().Connected }).WithTimeout(timeout).Should(BeFalse())
		web3 := runPod(ctx, podSpec{namespace: ns, name: "web-3", serviceAccount: "web", node: "node-x", ip: "10.10.0.3", labels: map[string]string{"app": "web"}})
		// Let the control plane finish with the pod (created, then given an IP) before the
		// client comes back, so the catch-up is one Workload in its final state.
		Eventually(func() []string {
			w, _ := cp.XDS.Publisher().Get(pb.WorkloadTypeURL, string(web3.UID)).(*pb.Workload)
			return w.GetAddresses()
		}).WithTimeout(timeout).Should(Equal([]string{"10.10.0.3"}))
		cp.XDS.Publisher().Flush()
		mark := rec.count()
		relay.resume()
		Eventually(func() int { return client0.Stats().Connects }).WithTimeout(timeout).Should(BeNumerically(">", connects))
		Eventually(func() bool { return rec.has(string(web3.UID)) }).WithTimeout(timeout).Should(BeTrue())
		Consistently(func() []update { return rec.since(mark) }).WithTimeout(time.Second).WithPolling(poll).Should(
			ConsistOf(update{typeURL: pb.WorkloadTypeURL, upserts: []string{string(web3.UID)}}),
			"after reconnecting, only the pod created meanwhile is sent, not the world")
	})
})

// pushesTo sums ambientmesh_xds_pushes_total for one client (an authenticated service
// account, "<namespace>/<name>").
func pushesTo(clientName string) float64 {
	families, err := metrics.Registry.Gather()
	Expect(err).NotTo(HaveOccurred())
	total := 0.0
	for _, f := range families {
		if f.GetName() != "ambientmesh_xds_pushes_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "client" && l.GetValue() == clientName {
					total += m.GetCounter().GetValue()
				}
			}
		}
	}
	return total
}

var _ = Describe("authentication on the xDS port", func() {
	It("refuses a client with neither a mesh certificate nor a token", func(ctx SpecContext) {
		err := subscribeAs(ctx, dial(xdsAddr), &corev3.Node{Id: "ztunnel~node-m"}, pb.TrustBundleTypeURL)
		Expect(status.Code(err)).To(Equal(codes.Unauthenticated))
	})

	It("admits a ztunnel with the certificate the certificate service issued to it, without a token, for its own node only", func(ctx SpecContext) {
		By("getting the ztunnel's own certificate from the CA with its token")
		ensureNode(ctx, "node-m")
		zt := runPod(ctx, podSpec{namespace: meshenv.Namespace, name: "ztunnel-m", serviceAccount: "ztunnel", node: "node-m"})
		id := pb.SpiffeID(trustDomain, meshenv.Namespace, "ztunnel")
		key, csr := newCSR(id)
		caCtx := metadata.AppendToOutgoingContext(ctx, pb.AuthorizationMetadataKey,
			pb.BearerPrefix+tokenFor(ctx, meshenv.Namespace, "ztunnel", zt, pb.CATokenAudience))
		resp, err := pb.NewCertificateServiceClient(dial(caAddr)).CreateCertificate(caCtx, &pb.CreateCertificateRequest{Csr: csr, ImpersonatedIdentity: id})
		Expect(err).NotTo(HaveOccurred())

		By("connecting to xDS with that certificate")
		cert := tls.Certificate{PrivateKey: key}
		for _, c := range resp.CertChain {
			cert.Certificate = append(cert.Certificate, parsePEM(c).Raw)
		}
		cfg := meshTLS()
		cfg.Certificates = []tls.Certificate{cert}
		conn, err := grpc.NewClient(xdsAddr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(conn.Close)
		Expect(subscribeAs(ctx, conn, &corev3.Node{Id: "ztunnel~node-m"}, pb.TrustBundleTypeURL)).To(Succeed())

		By("claiming another node with that certificate")
		err = subscribeAs(ctx, conn, &corev3.Node{Id: "ztunnel~node-x"}, pb.TrustBundleTypeURL)
		Expect(status.Code(err)).To(Equal(codes.PermissionDenied))
		Expect(status.Convert(err).Message()).To(ContainSubstring(`bound to node "node-m"`))
	})
})

// subscribeAs opens a delta stream, subscribes to typeURL as node and returns the error of
// the first response (nil when one arrives).
func subscribeAs(ctx context.Context, conn *grpc.ClientConn, node *corev3.Node, typeURL string, opts ...grpc.CallOption) error {
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx, opts...)
	if err != nil {
		return err
	}
	// A refused stream may fail the Send with io.EOF; Recv then carries the status.
	_ = stream.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: typeURL, ResourceNamesSubscribe: []string{"*"}})
	_, err = stream.Recv()
	return err
}

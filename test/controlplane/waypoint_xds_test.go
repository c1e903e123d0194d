package controlplane_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"slices"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/encoding/protojson"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/dataplane/hbone"
	"github.com/ambientmesh/ambient-operator/dataplane/waypoint"
	"github.com/ambientmesh/ambient-operator/dataplane/xdsclient"
	"github.com/ambientmesh/ambient-operator/internal/spiffe"
)

// xdsResponse is what one delta response carried: its type and the resource names it
// upserted and removed.
type xdsResponse struct {
	typeURL string
	upserts []string
	removed []string
}

// responseLog counts the resources of every non-empty response a client receives, in
// arrival order (the xDS client's Observe hook).
type responseLog struct {
	mu        sync.Mutex
	responses []xdsResponse
}

func (l *responseLog) observe(resp *discoveryv3.DeltaDiscoveryResponse) {
	r := xdsResponse{typeURL: resp.GetTypeUrl(), removed: resp.GetRemovedResources()}
	for _, res := range resp.GetResources() {
		r.upserts = append(r.upserts, res.GetName())
	}
	if len(r.upserts)+len(r.removed) == 0 {
		return
	}
	slices.Sort(r.upserts)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.responses = append(l.responses, r)
}

func (l *responseLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.responses)
}

// since returns the responses after the first n.
func (l *responseLog) since(n int) []xdsResponse {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.responses[n:])
}

// settle waits until no response has arrived for half a second.
func (l *responseLog) settle() {
	Eventually(func() bool {
		before := l.count()
		time.Sleep(500 * time.Millisecond)
		return l.count() == before
	}).WithTimeout(timeout).Should(BeTrue())
}

// heldRouteConfig decodes a RouteConfiguration the waypoint holds (nil when it holds none
// of that name), from its config dump: what the store applied, not what was sent.
func heldRouteConfig(wp *waypoint.Waypoint, name string) *routev3.RouteConfiguration {
	for _, r := range wp.ConfigDump().Resources[resourcev3.RouteType] {
		if r.Name != name {
			continue
		}
		rc := &routev3.RouteConfiguration{}
		Expect(protojson.Unmarshal(r.Resource, rc)).To(Succeed())
		return rc
	}
	return nil
}

// heldNames lists the names of the resources of a type the waypoint holds.
func heldNames(wp *waypoint.Waypoint, typeURL string) []string {
	var names []string
	for _, r := range wp.ConfigDump().Resources[typeURL] {
		names = append(names, r.Name)
	}
	return names
}

// routeHeader is the value a route of rc sets for a request header ("" when none).
func routeHeader(rc *routev3.RouteConfiguration, route, header string) string {
	for _, vh := range rc.GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			if r.GetName() != route {
				continue
			}
			for _, h := range r.GetRequestHeadersToAdd() {
				if h.GetHeader().GetKey() == header {
					return h.GetHeader().GetValue()
				}
			}
		}
	}
	return ""
}

var _ = Describe("a waypoint's xDS stream", Ordered, func() {
	const (
		ns      = "waypoint-xds-shop"
		wpName  = "wp"
		header  = "x-edit"
		apiHost = "api." + ns + ".svc.cluster.local"
		// apiConfig names the Listener and RouteConfiguration of the Service api's port 80.
		apiConfig  = apiHost + ":80"
		apiCluster = "outbound|80||" + apiHost
		// apiRoute is the name of the HTTPRoute's first rule's route in the RouteConfiguration.
		apiRoute = ns + "/api-route/0/0"
	)
	var (
		wp        *waypoint.Waypoint
		ads       *xdsclient.Client
		received  *responseLog
		relay     *proxy
		httpRoute *gatewayv1.HTTPRoute
	)

	// setHeader edits the HTTPRoute: its rule sets the request header to value.
	setHeader := func(ctx context.Context, value string) {
		GinkgoHelper()
		patch := client.MergeFrom(httpRoute.DeepCopy())
		httpRoute.Spec.Rules[0].Filters = []gatewayv1.HTTPRouteFilter{{
			Type:                  gatewayv1.HTTPRouteFilterRequestHeaderModifier,
			RequestHeaderModifier: &gatewayv1.HTTPHeaderFilter{Set: []gatewayv1.HTTPHeader{{Name: header, Value: value}}},
		}}
		Expect(k8sClient.Patch(ctx, httpRoute, patch)).To(Succeed())
	}
	heldHeader := func() string { return routeHeader(heldRouteConfig(wp, apiConfig), apiRoute, header) }
	onlyTheRouteConfig := []xdsResponse{{typeURL: resourcev3.RouteType, upserts: []string{apiConfig}}}

	BeforeAll(func(ctx SpecContext) {
		By("creating a Waypoint with its Service and ServiceAccount, a namespace using it, a Service api and an HTTPRoute on it")
		ensureNamespace(ctx, ns, map[string]string{meshv1.LabelDataplaneMode: meshv1.DataplaneModeAmbient, meshv1.LabelUseWaypoint: wpName})
		ensureServiceAccount(ctx, ns, wpName)
		Expect(k8sClient.Create(ctx, &meshv1.Waypoint{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: wpName}})).To(Succeed())
		Expect(k8sClient.Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: wpName, Labels: map[string]string{meshv1.LabelWaypoint: wpName}},
			Spec: corev1.ServiceSpec{Selector: map[string]string{meshv1.LabelWaypoint: wpName},
				Ports: []corev1.ServicePort{{Name: "hbone", Port: 15008}}},
		})).To(Succeed())
		Expect(k8sClient.Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "api"},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "api"}, Ports: []corev1.ServicePort{{
				Name: "http", Port: 80, TargetPort: intstr.FromString("http"), AppProtocol: ptr.To("http")}}},
		})).To(Succeed())
		ensureNode(ctx, "node-w")
		runPod(ctx, podSpec{namespace: ns, name: "api-1", serviceAccount: "api", node: "node-w", ip: "10.30.0.1", labels: map[string]string{"app": "api"}})
		httpRoute = &gatewayv1.HTTPRoute{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "api-route"},
			Spec: gatewayv1.HTTPRouteSpec{
				CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{
					Group: ptr.To(gatewayv1.Group("")), Kind: ptr.To(gatewayv1.Kind("Service")),
					Name: "api", Port: ptr.To(gatewayv1.PortNumber(80)),
				}}},
				Rules: []gatewayv1.HTTPRouteRule{{
					Matches: []gatewayv1.HTTPRouteMatch{{Path: &gatewayv1.HTTPPathMatch{
						Type: ptr.To(gatewayv1.PathMatchPathPrefix), Value: ptr.To("/v1"),
					}}},
					BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{
						Name: "api", Port: ptr.To(gatewayv1.PortNumber(80)),
					}}}},
				}},
			},
		}
		Expect(k8sClient.Create(ctx, httpRoute)).To(Succeed())

		By("connecting the real waypoint's config store through a relay the test can cut")
		pool := x509.NewCertPool()
		for _, r := range cp.Roots() {
			pool.AppendCertsFromPEM([]byte(r))
		}
		var err error
		wp, err = waypoint.New(waypoint.Config{
			Namespace: ns, Name: wpName, PodName: "wp-1",
			Identity: spiffe.ID{TrustDomain: trustDomain, Namespace: ns, ServiceAccount: wpName},
			// This waypoint only takes configuration: it serves no HBONE, so it needs no
			// certificate of its own.
			Certs: hbone.CertSourceFunc(func(context.Context, spiffe.ID) (*tls.Certificate, error) {
				return nil, errors.New("this waypoint serves no traffic")
			}),
			Roots: hbone.RootsFunc(func() *x509.CertPool { return pool }),
		})
		Expect(err).NotTo(HaveOccurred())
		relay = startProxy(xdsAddr)
		received = &responseLog{}
		ads = xdsclient.New(relay.lis.Addr().String(), wp.Handler(), xdsclient.Options{
			TypeURLs:       waypoint.TypeURLs,
			Node:           &corev3.Node{Id: "wp-1." + ns, Cluster: waypoint.NodeCluster(ns, wpName)},
			DialOptions:    []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(meshTLS()))},
			CallOptions:    []grpc.CallOption{grpc.PerRPCCredentials(bearer(tokenFor(ctx, ns, wpName, nil, pb.CATokenAudience)))},
			InitialBackoff: 50 * time.Millisecond,
			MaxBackoff:     200 * time.Millisecond,
			Observe:        received.observe,
		})
		runCtx, stop := context.WithCancel(suiteCtx)
		DeferCleanup(stop)
		go func() { _ = ads.Run(runCtx) }()
	})

	It("delivers the Service's listener, route configuration, cluster and endpoints to the waypoint's store", func() {
		Eventually(ads.Synced()).WithTimeout(timeout).Should(BeClosed())
		Eventually(func(g Gomega) {
			g.Expect(heldNames(wp, resourcev3.ListenerType)).To(ContainElement(apiConfig))
			g.Expect(heldNames(wp, resourcev3.ClusterType)).To(ContainElement(apiCluster))
			g.Expect(heldNames(wp, resourcev3.EndpointType)).To(ContainElement(apiCluster))
			rc := heldRouteConfig(wp, apiConfig)
			g.Expect(rc).NotTo(BeNil())
			g.Expect(rc.GetVirtualHosts()).To(HaveLen(1))
			g.Expect(rc.GetVirtualHosts()[0].GetRoutes()).To(ContainElement(HaveField("Name", apiRoute)), "the HTTPRoute's rule is in it")
		}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
		Expect(ads.Stats().Nacks).To(BeZero(), "last NACK: %s", ads.Stats().LastNack)
	})

	It("sends exactly the edited RouteConfiguration when the HTTPRoute is edited", func(ctx SpecContext) {
		received.settle()
		mark := received.count()
		setHeader(ctx, "1")
		Eventually(heldHeader).WithTimeout(timeout).WithPolling(poll).Should(Equal("1"), "the store holds the edit")
		Consistently(func() []xdsResponse { return received.since(mark) }).WithTimeout(2*time.Second).WithPolling(poll).
			Should(Equal(onlyTheRouteConfig), "one HTTPRoute edit sends one resource and nothing else")
		Expect(ads.Stats().Nacks).To(BeZero(), "last NACK: %s", ads.Stats().LastNack)
	})

	It("resumes after a reconnect with only the edit made while it was away", func(ctx SpecContext) {
		received.settle()
		connects := ads.Stats().Connects
		relay.cut(true)
		Eventually(func() bool { return ads.Stats().Connected }).WithTimeout(timeout).Should(BeFalse())

		By("editing the HTTPRoute while the waypoint is disconnected")
		setHeader(ctx, "2")
		Eventually(func() string {
			rc, _ := cp.XDS.Waypoints().Get(ns, wpName, resourcev3.RouteType, apiConfig).(*routev3.RouteConfiguration)
			return routeHeader(rc, apiRoute, header)
		}).WithTimeout(timeout).WithPolling(poll).Should(Equal("2"), "the control plane published the edit")
		Expect(heldHeader()).To(Equal("1"), "the disconnected waypoint keeps its last configuration")

		By("letting the same client reconnect, announcing the versions it holds")
		mark := received.count()
		relay.resume()
		Eventually(func() int { return ads.Stats().Connects }).WithTimeout(timeout).Should(BeNumerically(">", connects))
		Eventually(heldHeader).WithTimeout(timeout).WithPolling(poll).Should(Equal("2"))
		Consistently(func() []xdsResponse { return received.since(mark) }).WithTimeout(2*time.Second).WithPolling(poll).
			Should(Equal(onlyTheRouteConfig), "after reconnecting, only what changed meanwhile is sent, not the world")
		Expect(ads.Stats().Nacks).To(BeZero(), "last NACK: %s", ads.Stats().LastNack)
	})
})

package controlplane_test

import (
	"errors"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/anypb"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controlplane/status"
	"github.com/ambientmesh/ambient-operator/controlplane/xds/waypoint"
	"github.com/ambientmesh/ambient-operator/dataplane/xdsclient"
	"github.com/ambientmesh/ambient-operator/test/controlplane/meshenv"
)

var _ = Describe("status written back", Ordered, func() {
	const ns = "status-shop"

	BeforeAll(func(ctx SpecContext) {
		ensureNamespace(ctx, ns, map[string]string{meshv1.LabelDataplaneMode: meshv1.DataplaneModeAmbient})
	})

	condition := func(p *meshv1.MeshPolicy, t string) *metav1.Condition {
		return meta.FindStatusCondition(p.Status.Conditions, t)
	}
	acceptAll := xdsclient.HandlerFunc(func(string, map[string]*anypb.Any, []string) error { return nil })

	It("marks an L4 selector policy Enforced once the ztunnel of the selected workload's node ACKed it", func(ctx SpecContext) {
		p := &meshv1.MeshPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "allow-frontend"},
			Spec: meshv1.MeshPolicySpec{
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
				Rules:    []meshv1.Rule{{From: []meshv1.Source{{ServiceAccounts: []meshv1.ServiceAccountRef{ns + "/frontend"}}}}},
			},
		}
		Expect(k8sClient.Create(ctx, p)).To(Succeed())
		By("selecting no workload yet")
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), p)).To(Succeed())
			g.Expect(p.Status.ObservedGeneration).To(Equal(p.Generation))
			g.Expect(condition(p, meshv1.PolicyConditionAccepted)).To(HaveField("Status", metav1.ConditionTrue))
			g.Expect(conditionString(condition(p, meshv1.PolicyConditionEnforced))).To(Equal("False/NoWorkloads"))
			g.Expect(p.Status.EnforcedBy).To(BeEmpty())
		}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
		Eventually(func() any {
			return cp.XDS.Publisher().Get(pb.AuthorizationTypeURL, ns+"/allow-frontend")
		}).WithTimeout(timeout).ShouldNot(BeNil())

		By("running a selected pod on node-s, whose ztunnel is not connected")
		ensureNode(ctx, "node-s")
		runPod(ctx, podSpec{namespace: ns, name: "web-1", serviceAccount: "web", node: "node-s", ip: "10.20.0.1", labels: map[string]string{"app": "web"}})
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), p)).To(Succeed())
			enforced := condition(p, meshv1.PolicyConditionEnforced)
			g.Expect(conditionString(enforced)).To(Equal("False/Pending"))
			g.Expect(enforced.Message).To(ContainSubstring("node node-s: its ztunnel is not connected"))
		}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())

		By("connecting node-s's ztunnel, which ACKs")
		ztunnel := runPod(ctx, podSpec{namespace: meshenv.Namespace, name: "ztunnel-s", serviceAccount: "ztunnel", node: "node-s"})
		runXDSClient(pb.TypeURLs, &corev3.Node{Id: "ztunnel~node-s"},
			tokenFor(ctx, meshenv.Namespace, "ztunnel", ztunnel, pb.CATokenAudience), acceptAll)
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), p)).To(Succeed())
			g.Expect(conditionString(condition(p, meshv1.PolicyConditionEnforced))).To(Equal("True/Enforced"))
			g.Expect(p.Status.EnforcedBy).To(Equal([]meshv1.EnforcementPoint{meshv1.EnforcedByZTunnel}))
		}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
	})

	It("does not rewrite a status that has not changed", func(ctx SpecContext) {
		p := &meshv1.MeshPolicy{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "allow-frontend"}, p)).To(Succeed())
		By("touching the policy without changing anything the status depends on")
		patch := client.MergeFrom(p.DeepCopy())
		p.Labels = map[string]string{"touched": "yes"}
		Expect(k8sClient.Patch(ctx, p, patch)).To(Succeed())
		rv := p.ResourceVersion
		Consistently(func() string {
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), p)).To(Succeed())
			return p.ResourceVersion
		}).WithTimeout(2*time.Second).WithPolling(poll).Should(Equal(rv), "no status write follows an unrelated change")
	})

	It("reports an L7 policy Enforced only once its Waypoint is Ready and its proxy ACKed the generation", func(ctx SpecContext) {
		Expect(k8sClient.Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "api"},
			Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "api"}, Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
		})).To(Succeed())
		p := &meshv1.MeshPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "api-get-only"},
			Spec: meshv1.MeshPolicySpec{
				TargetRefs: []meshv1.PolicyTargetReference{{Kind: meshv1.TargetKindService, Name: "api"}},
				Rules:      []meshv1.Rule{{To: []meshv1.Destination{{Methods: []string{"GET"}}}}},
			},
		}
		Expect(k8sClient.Create(ctx, p)).To(Succeed())
		enforcedIs := func(want string, in ...string) {
			GinkgoHelper()
			Eventually(func(g Gomega) {
				g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), p)).To(Succeed())
				enforced := condition(p, meshv1.PolicyConditionEnforced)
				g.Expect(conditionString(enforced)).To(Equal(want))
				g.Expect(enforced.ObservedGeneration).To(Equal(p.Generation))
				for _, s := range in {
					g.Expect(enforced.Message).To(ContainSubstring(s))
				}
			}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
		}
		enforcedIs("False/NoWaypoint", `Service "api"`)
		Expect(cp.XDS.Publisher().Get(pb.AuthorizationTypeURL, ns+"/api-get-only")).To(BeNil(), "L7 policies are not sent to ztunnel")

		By("creating a Waypoint with its Service and pointing the namespace at it: not Ready yet")
		Expect(k8sClient.Create(ctx, &meshv1.Waypoint{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "wp"}})).To(Succeed())
		wpSvc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "wp", Labels: map[string]string{meshv1.LabelWaypoint: "wp"}},
			Spec: corev1.ServiceSpec{Selector: map[string]string{meshv1.LabelWaypoint: "wp"},
				Ports: []corev1.ServicePort{{Name: "hbone", Port: 15008}}},
		}
		Expect(k8sClient.Create(ctx, wpSvc)).To(Succeed())
		var nsObj corev1.Namespace
		Expect(k8sClient.Get(ctx, client.ObjectKey{Name: ns}, &nsObj)).To(Succeed())
		patch := client.MergeFrom(nsObj.DeepCopy())
		nsObj.Labels[meshv1.LabelUseWaypoint] = "wp"
		Expect(k8sClient.Patch(ctx, &nsObj, patch)).To(Succeed())
		enforcedIs("False/WaypointNotReady", `Waypoint "wp" reports no Ready condition yet`)
		Expect(p.Status.EnforcedBy).To(BeEmpty())

		By("the operator reporting the Waypoint Ready: no proxy connected yet")
		var wp meshv1.Waypoint
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "wp"}, &wp)).To(Succeed())
		wpPatch := client.MergeFrom(wp.DeepCopy())
		meta.SetStatusCondition(&wp.Status.Conditions, metav1.Condition{Type: meshv1.WaypointConditionReady,
			Status: metav1.ConditionTrue, Reason: meshv1.ReasonReady, Message: "1/1 replicas available", ObservedGeneration: wp.Generation})
		Expect(k8sClient.Status().Patch(ctx, &wp, wpPatch)).To(Succeed())
		enforcedIs("False/Pending", `no proxy of Waypoint "wp" is connected`)

		By("connecting the waypoint's proxy, which rejects its listeners")
		ensureServiceAccount(ctx, ns, "wp")
		var rejectListeners atomic.Bool
		rejectListeners.Store(true)
		runXDSClient(waypoint.TypeURLs, &corev3.Node{Id: "wp-1." + ns, Cluster: waypoint.NodeCluster(ns, "wp")},
			tokenFor(ctx, ns, "wp", nil, pb.CATokenAudience),
			xdsclient.HandlerFunc(func(typeURL string, _ map[string]*anypb.Any, _ []string) error {
				if typeURL == resourcev3.ListenerType && rejectListeners.Load() {
					return errors.New("test: listener refused")
				}
				return nil
			}))
		enforcedIs("False/Pending", `Waypoint "wp" rejected its configuration: "test: listener refused"`)

		By("editing the policy once the proxy accepts: the new generation is Enforced once ACKed")
		rejectListeners.Store(false)
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), p)).To(Succeed())
		p.Spec.Rules[0].To[0].Methods = []string{"GET", "HEAD"}
		Expect(k8sClient.Update(ctx, p)).To(Succeed())
		enforcedIs("True/Enforced", `Waypoint "wp"`)
		Expect(p.Status.EnforcedBy).To(Equal([]meshv1.EnforcementPoint{meshv1.EnforcedByWaypoint}))

		By("leaving the Waypoint's status to the operator: the control plane writes none of it")
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "wp"}, &wp)).To(Succeed())
		Expect(wp.Status.Addresses).To(BeEmpty())
		for _, f := range wp.ManagedFields {
			Expect(f.Manager).NotTo(Equal(status.FieldOwner), "the control plane owns no Waypoint field")
		}

		By("sending the Service with the waypoint in front of it")
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(wpSvc), wpSvc)).To(Succeed())
		Eventually(func(g Gomega) {
			s, _ := cp.XDS.Publisher().Get(pb.ServiceTypeURL, pb.ServiceResourceName(ns, "api."+ns+".svc.cluster.local")).(*pb.Service)
			g.Expect(s).NotTo(BeNil())
			g.Expect(s.GetWaypoint().GetAddress()).To(Equal(wpSvc.Spec.ClusterIP))
			g.Expect(s.GetWaypoint().GetIdentity()).To(Equal(pb.SpiffeID(trustDomain, ns, "wp")))
		}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
	})

	It("reports a route whose backend Service does not exist, keeping other controllers' entries", func(ctx SpecContext) {
		route := &gatewayv1.HTTPRoute{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "to-missing"},
			Spec: gatewayv1.HTTPRouteSpec{
				CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{
					Group: ptr.To(gatewayv1.Group("")), Kind: ptr.To(gatewayv1.Kind("Service")), Name: "api",
				}}},
				Rules: []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: gatewayv1.BackendRef{
					BackendObjectReference: gatewayv1.BackendObjectReference{Name: "missing", Port: ptr.To(gatewayv1.PortNumber(80))},
				}}}}},
			},
		}
		Expect(k8sClient.Create(ctx, route)).To(Succeed())
		By("another controller writing its own entry meanwhile")
		other := gatewayv1.RouteParentStatus{
			ParentRef:      gatewayv1.ParentReference{Name: "some-gateway"},
			ControllerName: "example.com/other-controller",
			Conditions: []metav1.Condition{{Type: string(gatewayv1.RouteConditionAccepted), Status: metav1.ConditionTrue,
				Reason: string(gatewayv1.RouteReasonAccepted), Message: "theirs", LastTransitionTime: metav1.Now()}},
		}
		Eventually(func() error {
			if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(route), route); err != nil {
				return err
			}
			route.Status.Parents = append(route.Status.Parents, other)
			return k8sClient.Status().Update(ctx, route)
		}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())

		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(route), route)).To(Succeed())
			var ours *gatewayv1.RouteParentStatus
			controllers := []string{}
			for i := range route.Status.Parents {
				controllers = append(controllers, string(route.Status.Parents[i].ControllerName))
				if route.Status.Parents[i].ControllerName == "ambientmesh.dev/waypoint-controller" {
					ours = &route.Status.Parents[i]
				}
			}
			g.Expect(controllers).To(ConsistOf("example.com/other-controller", "ambientmesh.dev/waypoint-controller"))
			g.Expect(ours.ParentRef.Name).To(Equal(gatewayv1.ObjectName("api")))
			resolved := meta.FindStatusCondition(ours.Conditions, string(gatewayv1.RouteConditionResolvedRefs))
			g.Expect(conditionString(resolved)).To(Equal("False/BackendNotFound"))
			g.Expect(resolved.Message).To(ContainSubstring("missing"))
			g.Expect(resolved.ObservedGeneration).To(Equal(route.Generation))
			g.Expect(meta.FindStatusCondition(ours.Conditions, string(gatewayv1.RouteConditionAccepted))).NotTo(BeNil())
		}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
	})

	It("reports a target that does not exist", func(ctx SpecContext) {
		p := &meshv1.MeshPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "to-nowhere"},
			Spec: meshv1.MeshPolicySpec{
				TargetRefs: []meshv1.PolicyTargetReference{{Kind: meshv1.TargetKindWaypoint, Name: "missing"}},
				Rules:      []meshv1.Rule{{To: []meshv1.Destination{{Ports: []int32{80}}}}},
			},
		}
		Expect(k8sClient.Create(ctx, p)).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), p)).To(Succeed())
			accepted := condition(p, meshv1.PolicyConditionAccepted)
			g.Expect(accepted).NotTo(BeNil())
			g.Expect(accepted.Status).To(Equal(metav1.ConditionFalse))
			g.Expect(accepted.Reason).To(Equal(meshv1.ReasonTargetNotFound))
		}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
	})
})

// conditionString is "<status>/<reason>" ("" for a missing condition).
func conditionString(c *metav1.Condition) string {
	if c == nil {
		return ""
	}
	return string(c.Status) + "/" + c.Reason
}

// runXDSClient runs a delta ADS client (the one ztunnel and the waypoint use) with the
// given node and token until the suite ends (the specs after it rely on it staying).
func runXDSClient(typeURLs []string, node *corev3.Node, token string, handler xdsclient.Handler) {
	c := xdsclient.New(xdsAddr, handler, xdsclient.Options{
		TypeURLs:       typeURLs,
		Node:           node,
		DialOptions:    []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(meshTLS()))},
		CallOptions:    []grpc.CallOption{grpc.PerRPCCredentials(bearer(token))},
		InitialBackoff: 50 * time.Millisecond,
		MaxBackoff:     200 * time.Millisecond,
	})
	go func() { _ = c.Run(suiteCtx) }()
}

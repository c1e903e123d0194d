package controlplane_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
)

var _ = Describe("status written back", Ordered, func() {
	const ns = "status-shop"

	BeforeAll(func(ctx SpecContext) {
		ensureNamespace(ctx, ns, map[string]string{meshv1.LabelDataplaneMode: meshv1.DataplaneModeAmbient})
	})

	condition := func(p *meshv1.MeshPolicy, t string) *metav1.Condition {
		return meta.FindStatusCondition(p.Status.Conditions, t)
	}

	It("marks an L4 selector policy Accepted and enforced by ztunnel, and serves it as an Authorization", func(ctx SpecContext) {
		p := &meshv1.MeshPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "allow-frontend"},
			Spec: meshv1.MeshPolicySpec{
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
				Rules:    []meshv1.Rule{{From: []meshv1.Source{{ServiceAccounts: []meshv1.ServiceAccountRef{ns + "/frontend"}}}}},
			},
		}
		Expect(k8sClient.Create(ctx, p)).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), p)).To(Succeed())
			g.Expect(p.Status.ObservedGeneration).To(Equal(p.Generation))
			g.Expect(condition(p, meshv1.PolicyConditionAccepted)).To(HaveField("Status", metav1.ConditionTrue))
			g.Expect(condition(p, meshv1.PolicyConditionEnforced)).To(HaveField("Status", metav1.ConditionTrue))
			g.Expect(p.Status.EnforcedBy).To(Equal([]meshv1.EnforcementPoint{meshv1.EnforcedByZTunnel}))
		}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
		Eventually(func() any {
			return cp.XDS.Publisher().Get(pb.AuthorizationTypeURL, ns+"/allow-frontend")
		}).WithTimeout(timeout).ShouldNot(BeNil())
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

	It("reports an L7 policy on a Service without a waypoint, then enforced once a Waypoint serves it", func(ctx SpecContext) {
		Expect(k8sClient.Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "api"},
			Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "api"}, Ports: []corev1.ServicePort{{Port: 80}}},
		})).To(Succeed())
		p := &meshv1.MeshPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "api-get-only"},
			Spec: meshv1.MeshPolicySpec{
				TargetRefs: []meshv1.PolicyTargetReference{{Kind: meshv1.TargetKindService, Name: "api"}},
				Rules:      []meshv1.Rule{{To: []meshv1.Destination{{Methods: []string{"GET"}}}}},
			},
		}
		Expect(k8sClient.Create(ctx, p)).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), p)).To(Succeed())
			g.Expect(condition(p, meshv1.PolicyConditionAccepted)).To(HaveField("Status", metav1.ConditionTrue))
			enforced := condition(p, meshv1.PolicyConditionEnforced)
			g.Expect(enforced).NotTo(BeNil())
			g.Expect(enforced.Status).To(Equal(metav1.ConditionFalse))
			g.Expect(enforced.Reason).To(Equal(meshv1.ReasonNoWaypoint))
			g.Expect(enforced.Message).To(ContainSubstring(`Service "api"`))
		}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
		Expect(cp.XDS.Publisher().Get(pb.AuthorizationTypeURL, ns+"/api-get-only")).To(BeNil(), "L7 policies are not sent to ztunnel")

		By("creating a Waypoint with its Service and pointing the namespace at it")
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

		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), p)).To(Succeed())
			g.Expect(condition(p, meshv1.PolicyConditionEnforced)).To(HaveField("Status", metav1.ConditionTrue))
			g.Expect(p.Status.EnforcedBy).To(Equal([]meshv1.EnforcementPoint{meshv1.EnforcedByWaypoint}))
		}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())

		By("reporting the Waypoint's addresses from its Service")
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(wpSvc), wpSvc)).To(Succeed())
		Eventually(func(g Gomega) {
			var wp meshv1.Waypoint
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "wp"}, &wp)).To(Succeed())
			g.Expect(wp.Status.Addresses).To(Equal([]meshv1.WaypointAddress{
				{Type: meshv1.AddressTypeIPAddress, Value: wpSvc.Spec.ClusterIP},
				{Type: meshv1.AddressTypeHostname, Value: "wp." + ns + ".svc.cluster.local"},
			}))
			g.Expect(wp.Status.HBONEPort).To(Equal(int32(15008)))
		}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())

		By("sending the Service with the waypoint in front of it")
		Eventually(func(g Gomega) {
			s, _ := cp.XDS.Publisher().Get(pb.ServiceTypeURL, pb.ServiceResourceName(ns, "api."+ns+".svc.cluster.local")).(*pb.Service)
			g.Expect(s).NotTo(BeNil())
			g.Expect(s.GetWaypoint().GetAddress()).To(Equal(wpSvc.Spec.ClusterIP))
			g.Expect(s.GetWaypoint().GetIdentity()).To(Equal(pb.SpiffeID(trustDomain, ns, "wp")))
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

package controlplane_test

import (
	"maps"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"google.golang.org/protobuf/types/known/anypb"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controlplane/xds/translate"
	"github.com/ambientmesh/ambient-operator/controlplane/xds/waypoint"
	"github.com/ambientmesh/ambient-operator/dataplane/xdsclient"
)

var _ = Describe("a Gateway of the waypoint class", Ordered, func() {
	const ns = "gateway-shop"

	It("carries the traffic of the Services that name it, and its proxy receives their listeners", func(ctx SpecContext) {
		ensureNamespace(ctx, ns, map[string]string{meshv1.LabelDataplaneMode: meshv1.DataplaneModeAmbient})
		By("creating the Gateway, and what the operator makes of it: its acceptance and its Service")
		gw := &gatewayv1.Gateway{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "gw"},
			Spec: gatewayv1.GatewaySpec{
				GatewayClassName: translate.WaypointGatewayClass,
				Listeners:        []gatewayv1.Listener{{Name: "mesh", Port: 15008, Protocol: "HBONE"}},
			},
		}
		Expect(k8sClient.Create(ctx, gw)).To(Succeed())
		meta.SetStatusCondition(&gw.Status.Conditions, metav1.Condition{Type: string(gatewayv1.GatewayConditionAccepted),
			Status: metav1.ConditionTrue, Reason: string(gatewayv1.GatewayReasonAccepted), Message: "accepted as an ambient mesh waypoint",
			ObservedGeneration: gw.Generation})
		Expect(k8sClient.Status().Update(ctx, gw)).To(Succeed())
		gwSvc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "gw", Labels: map[string]string{meshv1.LabelWaypoint: "gw"}},
			Spec: corev1.ServiceSpec{Selector: map[string]string{meshv1.LabelWaypoint: "gw"},
				Ports: []corev1.ServicePort{{Name: "tcp-hbone", Port: 15008}}},
		}
		Expect(k8sClient.Create(ctx, gwSvc)).To(Succeed())

		By("labelling a Service with use-waypoint=<the Gateway's name>")
		Expect(k8sClient.Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "api", Labels: map[string]string{meshv1.LabelUseWaypoint: "gw"}},
			Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "api"}, Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
		})).To(Succeed())
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(gwSvc), gwSvc)).To(Succeed())
		Eventually(func(g Gomega) {
			s, _ := cp.XDS.Publisher().Get(pb.ServiceTypeURL, pb.ServiceResourceName(ns, "api."+ns+".svc.cluster.local")).(*pb.Service)
			g.Expect(s).NotTo(BeNil())
			g.Expect(s.GetWaypoint().GetAddress()).To(Equal(gwSvc.Spec.ClusterIP))
			g.Expect(s.GetWaypoint().GetIdentity()).To(Equal(pb.SpiffeID(trustDomain, ns, "gw")))
		}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())

		By("connecting a waypoint client authenticated as the Gateway's service account")
		ensureServiceAccount(ctx, ns, "gw")
		var mu sync.Mutex
		listeners := map[string]bool{}
		runXDSClient(waypoint.TypeURLs, &corev3.Node{Id: "gw-1." + ns, Cluster: waypoint.NodeCluster(ns, "gw")},
			tokenFor(ctx, ns, "gw", nil, pb.CATokenAudience),
			xdsclient.HandlerFunc(func(typeURL string, upserts map[string]*anypb.Any, removed []string) error {
				if typeURL != resourcev3.ListenerType {
					return nil
				}
				mu.Lock()
				defer mu.Unlock()
				for name := range upserts {
					listeners[name] = true
				}
				for _, name := range removed {
					delete(listeners, name)
				}
				return nil
			}))
		Eventually(func() map[string]bool {
			mu.Lock()
			defer mu.Unlock()
			return maps.Clone(listeners)
		}).WithTimeout(timeout).WithPolling(poll).Should(HaveKey("api." + ns + ".svc.cluster.local:80"))

		By("the Gateway no longer accepted: the Service goes without a waypoint")
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(gw), gw)).To(Succeed())
		meta.SetStatusCondition(&gw.Status.Conditions, metav1.Condition{Type: string(gatewayv1.GatewayConditionAccepted),
			Status: metav1.ConditionFalse, Reason: string(gatewayv1.GatewayReasonListenersNotValid), Message: "no HBONE listener",
			ObservedGeneration: gw.Generation})
		Expect(k8sClient.Status().Update(ctx, gw)).To(Succeed())
		Eventually(func(g Gomega) {
			s, _ := cp.XDS.Publisher().Get(pb.ServiceTypeURL, pb.ServiceResourceName(ns, "api."+ns+".svc.cluster.local")).(*pb.Service)
			g.Expect(s).NotTo(BeNil())
			g.Expect(s.GetWaypoint()).To(BeNil())
		}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
		Eventually(func() map[string]bool {
			mu.Lock()
			defer mu.Unlock()
			return maps.Clone(listeners)
		}).WithTimeout(timeout).WithPolling(poll).Should(BeEmpty())
	})
})

package gateway_test

import (
	"context"
	"os"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambientmesh/ambient-operator/controllers/gateway"
	"github.com/ambientmesh/ambient-operator/controllers/waypoint/waypointtest"
	"github.com/ambientmesh/ambient-operator/test/testenv"
)

var ctx = context.Background()

func get[T client.Object](obj T, ns, name string) func() (T, error) {
	return func() (T, error) {
		err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, obj)
		return obj, err
	}
}

// statusOf reads "Status/Reason" of a condition.
func statusOf(conds []metav1.Condition, conditionType string) string {
	c := meta.FindStatusCondition(conds, conditionType)
	if c == nil {
		return ""
	}
	return string(c.Status) + "/" + c.Reason
}

// gatewayCondition reads "Status/Reason" of a Gateway condition, or of
// one of its listener's when listener is not empty.
func gatewayCondition(ns, name, listener, conditionType string) func() string {
	return func() string {
		gw := &gatewayv1.Gateway{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, gw); err != nil {
			return ""
		}
		if listener == "" {
			return statusOf(gw.Status.Conditions, conditionType)
		}
		for _, l := range gw.Status.Listeners {
			if string(l.Name) == listener {
				return statusOf(l.Conditions, conditionType)
			}
		}
		return ""
	}
}

func newGateway(ns, name, class string, listeners ...gatewayv1.Listener) *gatewayv1.Gateway {
	return &gatewayv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       gatewayv1.GatewaySpec{GatewayClassName: gatewayv1.ObjectName(class), Listeners: listeners},
	}
}

var hboneListener = gatewayv1.Listener{Name: "mesh", Port: 15008, Protocol: gateway.ProtocolHBONE}

var _ = Describe("GatewayClass", Ordered, func() {
	It("is created by the operator and accepted", func() {
		Eventually(get(&gatewayv1.GatewayClass{}, "", gateway.ClassName)).Should(HaveField("Spec.ControllerName", Equal(gateway.ControllerName)))
		Eventually(func() (string, error) {
			gc, err := get(&gatewayv1.GatewayClass{}, "", gateway.ClassName)()
			return statusOf(gc.Status.Conditions, "Accepted"), err
		}).Should(Equal("True/Accepted"))
	})

	It("is created again when deleted", func() {
		gc, err := get(&gatewayv1.GatewayClass{}, "", gateway.ClassName)()
		Expect(err).NotTo(HaveOccurred())
		old := gc.UID
		Expect(k8sClient.Delete(ctx, gc)).To(Succeed())
		Eventually(func() (any, error) {
			gc, err := get(&gatewayv1.GatewayClass{}, "", gateway.ClassName)()
			return gc.UID, err
		}).ShouldNot(Equal(old))
	})
})

var _ = Describe("Gateway of the waypoint class", Ordered, func() {
	const name = "waypoint"
	var ns string

	BeforeAll(func() {
		n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "shop-"}}
		Expect(k8sClient.Create(ctx, n)).To(Succeed())
		ns = n.Name
		_, err := waypointtest.CreateMesh(ctx, k8sClient, "0.1.0")
		Expect(client.IgnoreAlreadyExists(err)).To(Succeed())
		Expect(waypointtest.SetMeshStatus(ctx, k8sClient, "0.1.0", "0.1.0")).To(Succeed())
	})

	It("gets the same objects as a Waypoint, owned by the Gateway", func() {
		gw := newGateway(ns, name, gateway.ClassName, hboneListener)
		Expect(k8sClient.Create(ctx, gw)).To(Succeed())

		Eventually(get(&appsv1.Deployment{}, ns, name)).Should(HaveField("Spec.Template.Spec.Containers", ConsistOf(And(
			HaveField("Image", "ghcr.io/ambientmesh/waypoint:0.1.0"),
			HaveField("Args", Equal([]string{
				"--mesh-config=/etc/ambientmesh/config/mesh.yaml",
				"--namespace=$(POD_NAMESPACE)",
				"--pod-name=$(POD_NAME)",
				"--name=waypoint",
				"--service-account=$(SERVICE_ACCOUNT)",
				"--ca-root-file=/var/run/secrets/ambientmesh/ca/root-cert.pem",
				"--token-file=/var/run/secrets/ambientmesh/tokens/ambientmesh-ca-token",
				"--log-level=info",
			})),
		))))
		for _, obj := range []client.Object{&corev1.ConfigMap{}, &corev1.ServiceAccount{}, &appsv1.Deployment{}, &corev1.Service{}} {
			Eventually(get(obj, ns, name)).ShouldNot(BeNil())
			ref := metav1.GetControllerOf(obj)
			Expect(ref).NotTo(BeNil(), "%T", obj)
			Expect(ref.Kind).To(Equal("Gateway"))
			Expect(ref.UID).To(Equal(gw.UID))
			Expect(ref.BlockOwnerDeletion).To(HaveValue(BeTrue()))
			Expect(obj.GetLabels()).To(HaveKeyWithValue("ambientmesh.dev/waypoint", name))
		}
		svc := &corev1.Service{}
		Eventually(get(svc, ns, name)).ShouldNot(BeNil())
		Expect(svc.Spec.Ports).To(ConsistOf(HaveField("Port", BeEquivalentTo(15008)), HaveField("Port", BeEquivalentTo(15021))))

		Eventually(gatewayCondition(ns, name, "", "Accepted")).Should(Equal("True/Accepted"))
		Eventually(gatewayCondition(ns, name, "", "Programmed")).Should(Equal("False/Pending"))
		Eventually(gatewayCondition(ns, name, "mesh", "Accepted")).Should(Equal("True/Accepted"))
		Expect(gatewayCondition(ns, name, "mesh", "ResolvedRefs")()).To(Equal("True/ResolvedRefs"))
		Expect(gatewayCondition(ns, name, "mesh", "Conflicted")()).To(Equal("False/NoConflicts"))
		Expect(gatewayCondition(ns, name, "mesh", "Programmed")()).To(Equal("False/Pending"))
		// The addresses come from the Service, which may be written in a later pass than the conditions.
		Eventually(func() []gatewayv1.GatewayStatusAddress {
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(gw), gw)).To(Succeed())
			return gw.Status.Addresses
		}).Should(Equal([]gatewayv1.GatewayStatusAddress{
			{Type: ptr.To(gatewayv1.IPAddressType), Value: svc.Spec.ClusterIP},
			{Type: ptr.To(gatewayv1.HostnameAddressType), Value: name + "." + ns + ".svc.cluster.local"},
		}))
	})

	It("is Programmed once a proxy replica is available", func() {
		Expect(waypointtest.SetAvailable(ctx, k8sClient, client.ObjectKey{Namespace: ns, Name: name}, 1)).To(Succeed())
		Eventually(gatewayCondition(ns, name, "", "Programmed")).Should(Equal("True/Programmed"))
		Eventually(gatewayCondition(ns, name, "mesh", "Programmed")).Should(Equal("True/Programmed"))
	})

	It("repairs a hand-edited Deployment", func() {
		Eventually(func() error {
			d, err := get(&appsv1.Deployment{}, ns, name)()
			if err != nil {
				return err
			}
			d.Spec.Template.Spec.Containers[0].Image = "example.com/not-a-waypoint"
			return k8sClient.Update(ctx, d, client.FieldOwner("kubectl-edit"))
		}).Should(Succeed())
		Eventually(get(&appsv1.Deployment{}, ns, name)).Should(HaveField("Spec.Template.Spec.Containers",
			ConsistOf(HaveField("Image", "ghcr.io/ambientmesh/waypoint:0.1.0"))))
	})

	It("removes the proxy when an edit makes the Gateway unacceptable, and brings it back", func() {
		setListeners := func(l gatewayv1.Listener) {
			Eventually(func() error {
				gw, err := get(&gatewayv1.Gateway{}, ns, name)()
				if err != nil {
					return err
				}
				gw.Spec.Listeners = []gatewayv1.Listener{l}
				return k8sClient.Update(ctx, gw)
			}).Should(Succeed())
		}
		setListeners(gatewayv1.Listener{Name: "web", Port: 80, Protocol: gatewayv1.HTTPProtocolType})
		Eventually(gatewayCondition(ns, name, "", "Accepted")).Should(Equal("False/ListenersNotValid"))
		for _, obj := range []client.Object{&corev1.ConfigMap{}, &corev1.ServiceAccount{}, &appsv1.Deployment{}, &corev1.Service{}} {
			Eventually(func() bool {
				return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, obj))
			}).
				Should(BeTrue(), "%T", obj)
		}
		setListeners(hboneListener)
		Eventually(gatewayCondition(ns, name, "", "Accepted")).Should(Equal("True/Accepted"))
		Eventually(get(&appsv1.Deployment{}, ns, name)).ShouldNot(BeNil())
	})

	It("does not accept a Gateway without an HBONE listener on 15008", func() {
		web := gatewayv1.Listener{Name: "web", Port: 80, Protocol: gatewayv1.HTTPProtocolType}
		Expect(k8sClient.Create(ctx, newGateway(ns, "web", gateway.ClassName, web))).To(Succeed())
		Eventually(gatewayCondition(ns, "web", "", "Accepted")).Should(Equal("False/ListenersNotValid"))
		Expect(gatewayCondition(ns, "web", "", "Programmed")()).To(Equal("False/Invalid"))
		Expect(gatewayCondition(ns, "web", "web", "Accepted")()).To(Equal("False/UnsupportedProtocol"))
		Expect(apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, &appsv1.Deployment{}))).To(BeTrue())
	})

	It("accepts the Gateway API sample", func() {
		root, err := testenv.RepoRoot()
		Expect(err).NotTo(HaveOccurred())
		f, err := os.Open(filepath.Join(root, "config", "samples", "gateway-api", "waypoint-gateway.yaml"))
		Expect(err).NotTo(HaveOccurred())
		defer f.Close()
		objs, err := testenv.DecodeObjects(f)
		Expect(err).NotTo(HaveOccurred())
		Expect(objs).To(HaveLen(1))
		objs[0].SetNamespace(ns)
		Expect(k8sClient.Create(ctx, objs[0])).To(Succeed())
		Eventually(gatewayCondition(ns, objs[0].GetName(), "", "Accepted")).Should(Equal("True/Accepted"))
		Eventually(get(&appsv1.Deployment{}, ns, objs[0].GetName())).ShouldNot(BeNil())
	})

	It("leaves Gateways of other controllers alone", func() {
		other := &gatewayv1.GatewayClass{
			ObjectMeta: metav1.ObjectMeta{Name: "other"},
			Spec:       gatewayv1.GatewayClassSpec{ControllerName: "example.com/gateway-controller"},
		}
		Expect(k8sClient.Create(ctx, other)).To(Succeed())
		Expect(k8sClient.Create(ctx, newGateway(ns, "other", "other", hboneListener))).To(Succeed())
		Consistently(gatewayCondition(ns, "other", "", "Accepted")).WithTimeout(2 * time.Second).Should(BeElementOf("", "Unknown/Pending"))
		Expect(apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "other"}, &appsv1.Deployment{}))).To(BeTrue())
		gc, _ := get(&gatewayv1.GatewayClass{}, "", "other")()
		Expect(statusOf(gc.Status.Conditions, "Accepted")).NotTo(HavePrefix("True"))
	})
})

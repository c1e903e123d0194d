package waypoint_test

import (
	"context"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controllers/waypoint/waypointtest"
)

var ctx = context.Background()

func getWaypoint(ns, name string) *meshv1alpha1.Waypoint {
	GinkgoHelper()
	wp := &meshv1alpha1.Waypoint{}
	Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, wp)).To(Succeed())
	return wp
}

// conditionOf reads "Status/Reason" of a Waypoint condition ("" while the
// Waypoint or the condition is not there yet).
func conditionOf(ns, name, conditionType string) func() string {
	return func() string {
		wp := &meshv1alpha1.Waypoint{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, wp); err != nil {
			return ""
		}
		c := meta.FindStatusCondition(wp.Status.Conditions, conditionType)
		if c == nil {
			return ""
		}
		return string(c.Status) + "/" + c.Reason
	}
}

func get[T client.Object](obj T, ns, name string) func() (T, error) {
	return func() (T, error) {
		err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, obj)
		return obj, err
	}
}

func notFound(obj client.Object, ns, name string) func() bool {
	return func() bool {
		return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, obj))
	}
}

var _ = Describe("Waypoint", Ordered, func() {
	const name = "waypoint"
	var ns string
	key := func() client.ObjectKey { return client.ObjectKey{Namespace: ns, Name: name} }

	BeforeAll(func() {
		n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "shop-"}}
		Expect(k8sClient.Create(ctx, n)).To(Succeed())
		ns = n.Name
	})

	It("reports NoMesh and creates nothing while there is no ready AmbientMesh", func() {
		Expect(k8sClient.Create(ctx, &meshv1alpha1.Waypoint{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}})).To(Succeed())
		Eventually(conditionOf(ns, name, meshv1alpha1.WaypointConditionProgrammed)).Should(Equal("False/NoMesh"))
		Eventually(conditionOf(ns, name, meshv1alpha1.WaypointConditionReady)).Should(Equal("False/NoMesh"))

		_, err := waypointtest.CreateMesh(ctx, k8sClient, "0.1.0")
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() string {
			return meta.FindStatusCondition(getWaypoint(ns, name).Status.Conditions, meshv1alpha1.WaypointConditionProgrammed).Message
		}).Should(ContainSubstring("the AmbientMesh is not ready yet"))
		Expect(notFound(&appsv1.Deployment{}, ns, name)()).To(BeTrue())
	})

	It("creates the ServiceAccount, Deployment, Service and ConfigMap once the mesh is ready", func() {
		Expect(waypointtest.SetMeshStatus(ctx, k8sClient, "0.1.0", "0.1.0")).To(Succeed())

		Eventually(get(&corev1.ServiceAccount{}, ns, name)).Should(HaveField("AutomountServiceAccountToken", HaveValue(BeFalse())))
		cm := &corev1.ConfigMap{}
		Eventually(get(cm, ns, name)).ShouldNot(BeNil())
		Expect(cm.Data).To(Equal(map[string]string{"mesh.yaml": waypointtest.MeshConfig, "root-cert.pem": waypointtest.CARoot}))

		d := &appsv1.Deployment{}
		Eventually(get(d, ns, name)).ShouldNot(BeNil())
		Expect(d.Spec.Replicas).To(HaveValue(BeEquivalentTo(1)))
		pod := d.Spec.Template
		Expect(pod.Labels).To(HaveKeyWithValue("ambientmesh.dev/waypoint", name))
		Expect(pod.Labels).To(HaveKeyWithValue("ambientmesh.dev/dataplane-mode", "none"))
		Expect(pod.Spec.ServiceAccountName).To(Equal(name))
		c := pod.Spec.Containers[0]
		Expect(c.Image).To(Equal("ghcr.io/ambientmesh/waypoint:0.1.0"))
		Expect(c.Args).To(Equal([]string{
			"--mesh-config=/etc/ambientmesh/config/mesh.yaml",
			"--namespace=$(POD_NAMESPACE)",
			"--pod-name=$(POD_NAME)",
			"--name=waypoint",
			"--service-account=$(SERVICE_ACCOUNT)",
			"--ca-root-file=/var/run/secrets/ambientmesh/ca/root-cert.pem",
			"--token-file=/var/run/secrets/ambientmesh/tokens/ambientmesh-ca-token",
			"--log-level=info",
		}))
		Expect(c.ReadinessProbe.HTTPGet.Path).To(Equal("/healthz/ready"))
		Expect(c.ReadinessProbe.HTTPGet.Port.IntValue()).To(Equal(15021))

		svc := &corev1.Service{}
		Eventually(get(svc, ns, name)).ShouldNot(BeNil())
		Expect(svc.Labels).To(HaveKeyWithValue("ambientmesh.dev/waypoint", name))
		Expect(svc.Spec.Ports).To(ConsistOf(
			HaveField("Port", BeEquivalentTo(15008)),
			HaveField("Port", BeEquivalentTo(15021)),
		))
		Expect(svc.Spec.ClusterIP).NotTo(BeEmpty())

		Eventually(conditionOf(ns, name, meshv1alpha1.WaypointConditionProgrammed)).Should(Equal("True/Programmed"))
		Eventually(conditionOf(ns, name, meshv1alpha1.WaypointConditionReady)).Should(Equal("False/NoReadyReplicas"))
		st := getWaypoint(ns, name).Status
		Expect(st.ObservedGeneration).To(Equal(getWaypoint(ns, name).Generation))
		Expect(st.HBONEPort).To(BeEquivalentTo(15008))
		Expect(st.Replicas).To(BeZero())
		Expect(st.Addresses).To(Equal([]meshv1alpha1.WaypointAddress{
			{Type: meshv1alpha1.AddressTypeIPAddress, Value: svc.Spec.ClusterIP},
			{Type: meshv1alpha1.AddressTypeHostname, Value: name + "." + ns + ".svc.cluster.local"},
		}))
	})

	It("is Ready once the Deployment has an available replica", func() {
		Expect(waypointtest.SetAvailable(ctx, k8sClient, key(), 1)).To(Succeed())
		Eventually(conditionOf(ns, name, meshv1alpha1.WaypointConditionReady)).Should(Equal("True/Ready"))
		Expect(getWaypoint(ns, name).Status.Replicas).To(BeEquivalentTo(1))
	})

	It("repairs a hand-edited Deployment and a deleted Service", func() {
		Eventually(func() error {
			d := &appsv1.Deployment{}
			if err := k8sClient.Get(ctx, key(), d); err != nil {
				return err
			}
			d.Spec.Template.Spec.Containers[0].Args = []string{"--log-level=debug"}
			return k8sClient.Update(ctx, d, client.FieldOwner("kubectl-edit"))
		}).Should(Succeed())
		Eventually(func() ([]string, error) {
			d, err := get(&appsv1.Deployment{}, ns, name)()
			return d.Spec.Template.Spec.Containers[0].Args, err
		}).Should(ContainElement("--name=waypoint"))

		svc, err := get(&corev1.Service{}, ns, name)()
		Expect(err).NotTo(HaveOccurred())
		oldUID := svc.UID
		Expect(k8sClient.Delete(ctx, svc)).To(Succeed())
		Eventually(func() (any, error) {
			s, err := get(&corev1.Service{}, ns, name)()
			return s.UID, err
		}).ShouldNot(Equal(oldUID))
	})

	It("adds a PodDisruptionBudget with two replicas and removes it with one", func() {
		setSpec(ns, name, func(s *meshv1alpha1.WaypointSpec) { s.Replicas = ptr.To(int32(2)) })
		Eventually(get(&policyv1.PodDisruptionBudget{}, ns, name)).Should(HaveField("Spec.MinAvailable.IntVal", BeEquivalentTo(1)))
		Eventually(get(&appsv1.Deployment{}, ns, name)).Should(HaveField("Spec.Replicas", HaveValue(BeEquivalentTo(2))))

		setSpec(ns, name, func(s *meshv1alpha1.WaypointSpec) { s.Replicas = ptr.To(int32(1)) })
		Eventually(notFound(&policyv1.PodDisruptionBudget{}, ns, name)).Should(BeTrue())
	})

	It("scales with an autoscaler when autoscaling is set", func() {
		setSpec(ns, name, func(s *meshv1alpha1.WaypointSpec) {
			s.Replicas = nil
			s.Autoscaling = &meshv1alpha1.WaypointAutoscaling{MinReplicas: ptr.To(int32(2)), MaxReplicas: 4}
		})
		Eventually(get(&autoscalingv2.HorizontalPodAutoscaler{}, ns, name)).Should(And(
			HaveField("Spec.ScaleTargetRef.Name", Equal(name)),
			HaveField("Spec.MinReplicas", HaveValue(BeEquivalentTo(2))),
			HaveField("Spec.MaxReplicas", BeEquivalentTo(4)),
			HaveField("Spec.Metrics", ContainElement(HaveField("Resource.Target.AverageUtilization", HaveValue(BeEquivalentTo(80))))),
		))
		Eventually(get(&policyv1.PodDisruptionBudget{}, ns, name)).Should(HaveField("Spec.MinAvailable.IntVal", BeEquivalentTo(1)))

		setSpec(ns, name, func(s *meshv1alpha1.WaypointSpec) { s.Autoscaling = nil })
		Eventually(notFound(&autoscalingv2.HorizontalPodAutoscaler{}, ns, name)).Should(BeTrue())
		Eventually(notFound(&policyv1.PodDisruptionBudget{}, ns, name)).Should(BeTrue())
	})

	It("follows the mesh to the version ztunnel runs on every node", func() {
		Expect(waypointtest.SetMeshStatus(ctx, k8sClient, "0.1.0", "0.2.0")).To(Succeed())
		Eventually(func() (string, error) {
			d, err := get(&appsv1.Deployment{}, ns, name)()
			return d.Spec.Template.Spec.Containers[0].Image, err
		}).Should(Equal("ghcr.io/ambientmesh/waypoint:0.2.0"))
		d, _ := get(&appsv1.Deployment{}, ns, name)()
		Expect(d.Spec.Template.Labels).To(HaveKeyWithValue("app.kubernetes.io/version", "0.2.0"))
	})

	It("refuses to take over a Service of the same name it does not control", func() {
		taken := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "taken"},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
		}
		Expect(k8sClient.Create(ctx, taken)).To(Succeed())
		Expect(k8sClient.Create(ctx, &meshv1alpha1.Waypoint{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "taken"}})).To(Succeed())
		Eventually(conditionOf(ns, "taken", meshv1alpha1.WaypointConditionProgrammed)).Should(Equal("False/ApplyFailed"))
		msg := meta.FindStatusCondition(getWaypoint(ns, "taken").Status.Conditions, meshv1alpha1.WaypointConditionProgrammed).Message
		Expect(msg).To(ContainSubstring("apply Service " + ns + "/taken: it exists and is not controlled by Waypoint taken"))
		svc, err := get(&corev1.Service{}, ns, "taken")()
		Expect(err).NotTo(HaveOccurred())
		Expect(svc.OwnerReferences).To(BeEmpty())
		Expect(svc.Spec.Ports).To(HaveLen(1))
	})

	// envtest runs no garbage collector: what it would delete is what the
	// owner references say, so they are what is checked.
	It("leaves every object to the garbage collector through controller references", func() {
		wp := getWaypoint(ns, name)
		setSpec(ns, name, func(s *meshv1alpha1.WaypointSpec) { s.Replicas = ptr.To(int32(2)) })
		Eventually(get(&policyv1.PodDisruptionBudget{}, ns, name)).Should(Not(BeNil()))
		for _, obj := range []client.Object{
			&corev1.ConfigMap{}, &corev1.ServiceAccount{}, &appsv1.Deployment{}, &corev1.Service{}, &policyv1.PodDisruptionBudget{},
		} {
			Eventually(get(obj, ns, name)).Should(Not(BeNil()))
			ref := metav1.GetControllerOf(obj)
			Expect(ref).NotTo(BeNil(), "%T has no controller", obj)
			Expect(ref.UID).To(Equal(wp.UID), "%T", obj)
			Expect(ref.Kind).To(Equal("Waypoint"))
			Expect(ref.BlockOwnerDeletion).To(HaveValue(BeTrue()), "%T: foreground deletion waits for it", obj)
		}
		Expect(k8sClient.Delete(ctx, wp)).To(Succeed())
		Eventually(notFound(&meshv1alpha1.Waypoint{}, ns, name)).Should(BeTrue(), "no finalizer holds the Waypoint")
	})
})

// setSpec changes a Waypoint's spec, retrying on conflicts with the
// controller's status writes.
func setSpec(ns, name string, change func(*meshv1alpha1.WaypointSpec)) {
	GinkgoHelper()
	Eventually(func() error {
		wp := &meshv1alpha1.Waypoint{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, wp); err != nil {
			return err
		}
		change(&wp.Spec)
		return k8sClient.Update(ctx, wp)
	}).Should(Succeed())
}

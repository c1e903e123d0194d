package webhook_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/internal/versions"
)

// expectInvalid asserts what kubectl shows a user: a 422 Invalid naming the
// field, with a message that says what is wrong.
func expectInvalid(err error, fieldPath, message string) {
	GinkgoHelper()
	Expect(err).To(HaveOccurred(), "want %s refused", fieldPath)
	Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want 422 Invalid, got %v", err)
	status, ok := err.(apierrors.APIStatus)
	Expect(ok).To(BeTrue())
	details := status.Status().Details
	Expect(details).NotTo(BeNil(), "no field details in %v", err)
	var causes []string
	for _, c := range details.Causes {
		causes = append(causes, c.Field+": "+c.Message)
		if c.Field == fieldPath && strings.Contains(c.Message, message) {
			return
		}
	}
	Fail(fmt.Sprintf("no cause on %s containing %q; causes: %q", fieldPath, message, causes))
}

func expectWarning(substring string) {
	GinkgoHelper()
	Expect(warnings.Messages()).To(ContainElement(ContainSubstring(substring)))
}

func sample[T client.Object](name string, obj T) T {
	GinkgoHelper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "config", "samples", name))
	Expect(err).NotTo(HaveOccurred())
	Expect(yaml.UnmarshalStrict(data, obj)).To(Succeed())
	return obj
}

func newNamespace(labels map[string]string) string {
	GinkgoHelper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "wh-", Labels: labels}}
	Expect(k8sClient.Create(ctx, ns)).To(Succeed())
	return ns.Name
}

// createMesh creates the singleton mesh and deletes it after the spec.
func createMesh(mutate func(*meshv1alpha1.AmbientMesh)) (*meshv1alpha1.AmbientMesh, error) {
	mesh := sample("mesh_v1alpha1_ambientmesh.yaml", &meshv1alpha1.AmbientMesh{})
	mesh.Spec.Version = versions.Default
	if mutate != nil {
		mutate(mesh)
	}
	err := k8sClient.Create(ctx, mesh)
	if err == nil {
		DeferCleanup(func() { Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, mesh))).To(Succeed()) })
	}
	return mesh, err
}

var _ = BeforeEach(func() { warnings.Reset() })

var _ = Describe("AmbientMesh", func() {
	It("accepts the sample and stores the version without its leading v", func() {
		mesh, err := createMesh(func(m *meshv1alpha1.AmbientMesh) { m.Spec.Version = "v" + versions.Default })
		Expect(err).NotTo(HaveOccurred())
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(mesh), mesh)).To(Succeed())
		Expect(mesh.Spec.Version).To(Equal(versions.Default))
		Expect(warnings.Messages()).To(BeEmpty())
	})

	It("refuses a version the operator cannot install, listing those it can", func() {
		_, err := createMesh(func(m *meshv1alpha1.AmbientMesh) { m.Spec.Version = "9.9.9" })
		expectInvalid(err, "spec.version", `Unsupported value: "9.9.9": supported values: "`+strings.Join(versions.Supported(), `", "`)+`"`)
	})

	It("refuses a downgrade and a skipped minor version, and allows the next minor", func() {
		mesh, err := createMesh(func(m *meshv1alpha1.AmbientMesh) { m.Spec.Version = "0.2.0" })
		Expect(err).NotTo(HaveOccurred())
		mesh.Spec.Version = "0.1.1"
		expectInvalid(k8sClient.Update(ctx, mesh), "spec.version", "downgrade not supported: from 0.2.0 to 0.1.1")

		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(mesh), mesh)).To(Succeed())
		Expect(k8sClient.Delete(ctx, mesh)).To(Succeed())
		mesh, err = createMesh(func(m *meshv1alpha1.AmbientMesh) { m.Spec.Version = "0.1.0" })
		Expect(err).NotTo(HaveOccurred())
		mesh.Spec.Version = "0.3.0"
		expectInvalid(k8sClient.Update(ctx, mesh), "spec.version", "skips a minor version; upgrade one minor version at a time (next: 0.2.0)")
		mesh.Spec.Version = "0.2.0"
		Expect(k8sClient.Update(ctx, mesh)).To(Succeed())
	})

	It("refuses an issuerRef of a cert-manager kind that is not an issuer", func() {
		_, err := createMesh(func(m *meshv1alpha1.AmbientMesh) {
			m.Spec.Identity.IssuerRef = &meshv1alpha1.IssuerReference{Name: "ca", Kind: "Certificate", Group: "cert-manager.io"}
		})
		// The CRD's CEL rule and the webhook agree; whichever answers, the
		// user sees the field and the kinds allowed.
		expectInvalid(err, "spec.identity.issuerRef.kind", "Issuer")
	})

	It("accepts a ClusterIssuer, and warns about an external issuer kind no API serves", func() {
		_, err := createMesh(func(m *meshv1alpha1.AmbientMesh) {
			m.Spec.Identity.IssuerRef = &meshv1alpha1.IssuerReference{Name: "ca", Kind: "ClusterIssuer", Group: "cert-manager.io"}
		})
		Expect(err).NotTo(HaveOccurred())
		Expect(warnings.Messages()).To(BeEmpty())
		Expect(k8sClient.Delete(ctx, &meshv1alpha1.AmbientMesh{ObjectMeta: metav1.ObjectMeta{Name: "default"}})).To(Succeed())

		_, err = createMesh(func(m *meshv1alpha1.AmbientMesh) {
			m.Spec.Identity.IssuerRef = &meshv1alpha1.IssuerReference{Name: "pca", Kind: "AWSPCAClusterIssuer", Group: "awspca.cert-manager.io"}
		})
		Expect(err).NotTo(HaveOccurred())
		expectWarning("no API in this cluster serves kind AWSPCAClusterIssuer in group awspca.cert-manager.io")
	})

	It("refuses changing the trust domain or the install namespace", func() {
		mesh, err := createMesh(nil)
		Expect(err).NotTo(HaveOccurred())
		mesh.Spec.TrustDomain = "example.org"
		expectInvalid(k8sClient.Update(ctx, mesh), "spec.trustDomain", "immutable")

		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(mesh), mesh)).To(Succeed())
		mesh.Spec.Namespace = "elsewhere"
		expectInvalid(k8sClient.Update(ctx, mesh), "spec.namespace", "immutable")
	})
})

var _ = Describe("AmbientMesh host paths, node selectors and resources", func() {
	It("refuses CNI directories that would let the agent write into the host's root or system directories", func() {
		_, err := createMesh(func(m *meshv1alpha1.AmbientMesh) { m.Spec.CNI.BinDir = "/" })
		expectInvalid(err, "spec.cni.binDir", "must not be the host's root directory")

		_, err = createMesh(func(m *meshv1alpha1.AmbientMesh) { m.Spec.CNI.ConfDir = "/etc" })
		expectInvalid(err, "spec.cni.confDir", "must not be a system directory itself")

		_, err = createMesh(func(m *meshv1alpha1.AmbientMesh) { m.Spec.CNI.BinDir = "/opt/cni/../../usr/bin" })
		expectInvalid(err, "spec.cni.binDir", "must be a clean absolute path")

		_, err = createMesh(func(m *meshv1alpha1.AmbientMesh) { m.Spec.CNI.ConfDir = "/proc/1/root/etc/cni/net.d" })
		expectInvalid(err, "spec.cni.confDir", "must not be in /proc, /sys, /dev or /boot")
	})

	It("accepts the CNI directories of GKE and OpenShift, and refuses moving them to / later", func() {
		mesh, err := createMesh(func(m *meshv1alpha1.AmbientMesh) {
			m.Spec.CNI.BinDir = "/home/kubernetes/bin"
			m.Spec.CNI.ConfDir = "/etc/kubernetes/cni/net.d"
		})
		Expect(err).NotTo(HaveOccurred())
		mesh.Spec.CNI.BinDir = "/"
		expectInvalid(k8sClient.Update(ctx, mesh), "spec.cni.binDir", "must not be the host's root directory")
	})

	It("refuses a node selector that is not valid labels", func() {
		_, err := createMesh(func(m *meshv1alpha1.AmbientMesh) {
			m.Spec.ZTunnel.NodeSelector = map[string]string{"pool": "bad value!"}
		})
		expectInvalid(err, "spec.ztunnel.nodeSelector", `Invalid value: "bad value!"`)

		_, err = createMesh(func(m *meshv1alpha1.AmbientMesh) {
			m.Spec.Waypoint.NodeSelector = map[string]string{"bad key!": "x"}
		})
		expectInvalid(err, "spec.waypoint.nodeSelector", `Invalid value: "bad key!"`)
	})

	It("refuses a request above its limit, and warns when resources drop the memory limit", func() {
		_, err := createMesh(func(m *meshv1alpha1.AmbientMesh) {
			m.Spec.ControlPlane.Resources = &corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("2Gi")},
				Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")},
			}
		})
		expectInvalid(err, "spec.controlPlane.resources.requests[memory]", "must be less than or equal to the memory limit 1Gi")

		_, err = createMesh(func(m *meshv1alpha1.AmbientMesh) {
			m.Spec.ZTunnel.Resources = &corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("200m")},
			}
		})
		Expect(err).NotTo(HaveOccurred())
		expectWarning("spec.ztunnel.resources: no limits.memory")
	})
})

var _ = Describe("Waypoint", func() {
	waypoint := func(ns, name string, f meshv1alpha1.WaypointTrafficType) *meshv1alpha1.Waypoint {
		return &meshv1alpha1.Waypoint{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: meshv1alpha1.WaypointSpec{For: f}}
	}

	It("defaults replicas to 1 only without autoscaling, and warns while there is no mesh", func() {
		ns := newNamespace(nil)
		wp := waypoint(ns, "fixed", meshv1alpha1.WaypointForService)
		Expect(k8sClient.Create(ctx, wp)).To(Succeed())
		Expect(wp.Spec.Replicas).To(HaveValue(Equal(int32(1))))
		expectWarning(`no AmbientMesh "default" exists`)

		scaled := sample("mesh_v1alpha1_waypoint.yaml", &meshv1alpha1.Waypoint{})
		scaled.Namespace = ns
		scaled.Spec.For = meshv1alpha1.WaypointForWorkload
		Expect(k8sClient.Create(ctx, scaled)).To(Succeed())
		Expect(scaled.Spec.Replicas).To(BeNil())
		Expect(scaled.Spec.Autoscaling.MaxReplicas).To(Equal(int32(3)))
	})

	It("allows several Waypoints per namespace, whatever traffic they handle", func() {
		_, err := createMesh(nil)
		Expect(err).NotTo(HaveOccurred())
		ns := newNamespace(nil)
		for name, f := range map[string]meshv1alpha1.WaypointTrafficType{
			"services": meshv1alpha1.WaypointForService, "services-2": meshv1alpha1.WaypointForService,
			"everything": meshv1alpha1.WaypointForAll, "pods": meshv1alpha1.WaypointForWorkload, "idle": meshv1alpha1.WaypointForNone,
		} {
			Expect(k8sClient.Create(ctx, waypoint(ns, name, f))).To(Succeed())
		}
		Expect(warnings.Messages()).To(BeEmpty())
	})

	It("checks allowedNamespaces: a selector exactly when from is Selector, and a valid one", func() {
		ns := newNamespace(nil)
		wp := waypoint(ns, "shared", meshv1alpha1.WaypointForService)
		wp.Spec.AllowedNamespaces = &meshv1alpha1.WaypointAllowedNamespaces{From: meshv1alpha1.NamespacesFromSelector}
		expectInvalid(k8sClient.Create(ctx, wp), "spec.allowedNamespaces.selector", "selector is required when from is Selector")

		wp.Spec.AllowedNamespaces.Selector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "team", Operator: "Near"}}}
		expectInvalid(k8sClient.Create(ctx, wp), "spec.allowedNamespaces.selector.matchExpressions[0].operator", "not a valid selector operator")

		wp.Spec.AllowedNamespaces.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"team": "shop"}}
		Expect(k8sClient.Create(ctx, wp)).To(Succeed())

		wp.Spec.AllowedNamespaces.From = meshv1alpha1.NamespacesFromAll
		expectInvalid(k8sClient.Update(ctx, wp), "spec.allowedNamespaces.selector", "and only then")

		wp.Spec.AllowedNamespaces = &meshv1alpha1.WaypointAllowedNamespaces{}
		Expect(k8sClient.Update(ctx, wp)).To(Succeed())
		Expect(wp.Spec.AllowedNamespaces.From).To(Equal(meshv1alpha1.NamespacesFromSame), "from defaults to Same")
	})

	It("refuses a request above its limit, and warns when resources have no memory limit", func() {
		ns := newNamespace(nil)
		wp := waypoint(ns, "sized", meshv1alpha1.WaypointForService)
		wp.Spec.Resources = &corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2")},
			Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")},
		}
		expectInvalid(k8sClient.Create(ctx, wp), "spec.resources.requests[cpu]", "must be less than or equal to the cpu limit 1")

		wp.Spec.Resources.Limits = nil
		Expect(k8sClient.Create(ctx, wp)).To(Succeed())
		expectWarning("spec.resources: no limits.memory")
	})
})

var _ = Describe("MeshPolicy", func() {
	BeforeEach(func() {
		_, err := createMesh(nil)
		Expect(err).NotTo(HaveOccurred())
	})

	policyIn := func(ns, file string) *meshv1alpha1.MeshPolicy {
		p := sample(file, &meshv1alpha1.MeshPolicy{})
		p.Namespace = ns
		return p
	}

	It("accepts the L4 samples without warnings", func() {
		ns := newNamespace(nil)
		Expect(k8sClient.Create(ctx, policyIn(ns, "mesh_v1alpha1_meshpolicy_allow_l4.yaml"))).To(Succeed())
		Expect(k8sClient.Create(ctx, policyIn(ns, "mesh_v1alpha1_meshpolicy_deny.yaml"))).To(Succeed())
		Expect(warnings.Messages()).To(BeEmpty())
	})

	It("refuses a selector with an invalid label value or an unknown operator, which would select nothing", func() {
		p := policyIn(newNamespace(nil), "mesh_v1alpha1_meshpolicy_deny.yaml")
		p.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"app": "bad value!"}}
		expectInvalid(k8sClient.Create(ctx, p), "spec.selector.matchLabels", `Invalid value: "bad value!"`)

		p.Spec.Selector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "app", Operator: "Near", Values: []string{"orders"}}}}
		expectInvalid(k8sClient.Create(ctx, p), "spec.selector.matchExpressions[0].operator", `Invalid value: "Near": not a valid selector operator`)

		p.Spec.Selector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "app", Operator: metav1.LabelSelectorOpIn}}}
		expectInvalid(k8sClient.Create(ctx, p), "spec.selector.matchExpressions[0].values", "must be specified when `operator` is 'In' or 'NotIn'")

		p.Spec.Selector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "app", Operator: metav1.LabelSelectorOpIn, Values: []string{"orders", "payments"}}}}
		Expect(k8sClient.Create(ctx, p)).To(Succeed())

		p.Spec.Selector.MatchLabels = map[string]string{"tier": "bad value!"}
		expectInvalid(k8sClient.Update(ctx, p), "spec.selector.matchLabels", `Invalid value: "bad value!"`)
	})

	It("refuses a principal that is not a valid SPIFFE id", func() {
		p := policyIn(newNamespace(nil), "mesh_v1alpha1_meshpolicy_allow_l4.yaml")
		// The schema's pattern accepts this shape; an empty DNS label in the
		// service account name makes it an identity no workload can have.
		p.Spec.Rules[0].From[0].Principals = []meshv1alpha1.SPIFFEID{"spiffe://cluster.local/ns/shop/sa/front..end"}
		expectInvalid(k8sClient.Create(ctx, p), "spec.rules[0].from[0].principals[0]", "service account")
	})

	It("refuses a service account reference with an invalid namespace", func() {
		p := policyIn(newNamespace(nil), "mesh_v1alpha1_meshpolicy_allow_l4.yaml")
		p.Spec.Rules[0].From[1] = meshv1alpha1.Source{ServiceAccounts: []meshv1alpha1.ServiceAccountRef{
			meshv1alpha1.ServiceAccountRef(strings.Repeat("n", 64) + "/frontend")}}
		expectInvalid(k8sClient.Create(ctx, p), "spec.rules[0].from[1].serviceAccounts[0]", "namespace: must be no more than 63 characters")
	})

	It("refuses a Namespace target other than the policy's namespace", func() {
		ns := newNamespace(nil)
		p := policyIn(ns, "mesh_v1alpha1_meshpolicy_deny.yaml")
		p.Spec.TargetRefs = []meshv1alpha1.PolicyTargetReference{{Kind: meshv1alpha1.TargetKindNamespace, Name: "kube-system"}}
		expectInvalid(k8sClient.Create(ctx, p), "spec.targetRefs[0].name", fmt.Sprintf("policy's own namespace %q", ns))
	})

	It("warns about a principal from another trust domain", func() {
		p := policyIn(newNamespace(nil), "mesh_v1alpha1_meshpolicy_allow_l4.yaml")
		p.Spec.Rules[0].From[0].Principals = []meshv1alpha1.SPIFFEID{"spiffe://other.example/ns/shop/sa/frontend"}
		Expect(k8sClient.Create(ctx, p)).To(Succeed())
		expectWarning(`spec.rules[0].from[0].principals[0]: "spiffe://other.example/ns/shop/sa/frontend" is in trust domain "other.example"`)
	})

	It("warns when L7 rules target a Service no waypoint serves, and not once one does", func() {
		ns := newNamespace(nil)
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "orders"},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}},
		}
		Expect(k8sClient.Create(ctx, svc)).To(Succeed())
		p := policyIn(ns, "mesh_v1alpha1_meshpolicy_l7.yaml")
		Expect(k8sClient.Create(ctx, p)).To(Succeed())
		expectWarning(fmt.Sprintf("spec.targetRefs[0]: Service %s/orders uses no waypoint", ns))

		Expect(k8sClient.Create(ctx, &meshv1alpha1.Waypoint{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "waypoint"}})).To(Succeed())
		svc.Labels = map[string]string{meshv1alpha1.LabelUseWaypoint: "waypoint"}
		Expect(k8sClient.Update(ctx, svc)).To(Succeed())
		warnings.Reset()
		p.Spec.Action = meshv1alpha1.ActionDeny
		Expect(k8sClient.Update(ctx, p)).To(Succeed())
		Expect(warnings.Messages()).To(BeEmpty())
	})

	It("warns when L7 rules select workloads, which only ztunnel (L4) serves", func() {
		p := policyIn(newNamespace(nil), "mesh_v1alpha1_meshpolicy_l7.yaml")
		p.Spec.TargetRefs = nil
		p.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"app": "orders"}}
		Expect(k8sClient.Create(ctx, p)).To(Succeed())
		expectWarning("spec.rules: L7 fields (methods, paths, hosts, when) need a waypoint")
	})

	It("writes the group of a Waypoint target and warns while that Waypoint does not exist", func() {
		p := policyIn(newNamespace(nil), "mesh_v1alpha1_meshpolicy_l7.yaml")
		p.Spec.TargetRefs = []meshv1alpha1.PolicyTargetReference{{Kind: meshv1alpha1.TargetKindWaypoint, Name: "missing"}}
		Expect(k8sClient.Create(ctx, p)).To(Succeed())
		Expect(p.Spec.TargetRefs[0].Group).To(Equal(meshv1alpha1.GroupVersion.Group))
		expectWarning("spec.targetRefs[0]: Waypoint " + p.Namespace + "/missing does not exist")
	})
})

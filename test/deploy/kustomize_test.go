package deploy

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ambientmesh/ambient-operator/test/testenv"
)

// dryRunApply sends obj to the apiserver as a server-side apply with
// dryRun=All: every admission step and validation runs, nothing is stored.
func dryRunApply(obj *unstructured.Unstructured) error {
	return k8sClient.Apply(ctx, client.ApplyConfigurationFromUnstructured(obj.DeepCopy()), client.DryRunAll, client.FieldOwner("deploy-test"), client.ForceOwnership)
}

func typed[T any](obj *unstructured.Unstructured, into *T) *T {
	GinkgoHelper()
	Expect(runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, into)).To(Succeed())
	return into
}

var _ = Describe("kustomize build config/default", Ordered, func() {
	var objs []*unstructured.Unstructured

	BeforeAll(func() {
		objs = render(GinkgoT(), "config/default")
		Expect(objs).NotTo(BeEmpty())
	})

	It("renders objects the apiserver accepts (server-side dry-run)", func() {
		ns := find(objs, "Namespace", "")
		Expect(ns).NotTo(BeNil(), "config/default must create the operator's namespace")
		Expect(dryRunApply(ns)).To(Succeed())
		// Namespaced objects need their namespace to exist even in a dry run.
		Expect(k8sClient.Apply(ctx, client.ApplyConfigurationFromUnstructured(ns.DeepCopy()), client.FieldOwner("deploy-test"))).To(Succeed())
		kinds := map[string]int{}
		for _, obj := range objs {
			Expect(dryRunApply(obj)).To(Succeed(), "%s %s", obj.GetKind(), obj.GetName())
			kinds[obj.GetKind()]++
		}
		for _, kind := range []string{"CustomResourceDefinition", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
			"Deployment", "Service", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration", "Issuer", "Certificate"} {
			Expect(kinds).To(HaveKey(kind), "config/default renders no %s", kind)
		}
		Expect(kinds["CustomResourceDefinition"]).To(Equal(3))
		Expect(kinds["Service"]).To(Equal(2), "webhook and metrics Services")
	})

	It("runs the operator with leader election, probes, requests and a restricted security context", func() {
		d := typed(find(objs, "Deployment", ""), &appsv1.Deployment{})
		pod := d.Spec.Template.Spec
		Expect(pod.SecurityContext.RunAsNonRoot).To(HaveValue(BeTrue()))
		c := pod.Containers[0]
		Expect(c.Args).To(ContainElement("--leader-elect"))
		Expect(c.LivenessProbe.HTTPGet.Path).To(Equal("/healthz"))
		Expect(c.ReadinessProbe.HTTPGet.Path).To(Equal("/readyz"))
		Expect(c.Resources.Requests).To(HaveKey(corev1.ResourceCPU))
		Expect(c.Resources.Requests).To(HaveKey(corev1.ResourceMemory))
		Expect(c.SecurityContext.AllowPrivilegeEscalation).To(HaveValue(BeFalse()))
		Expect(c.SecurityContext.ReadOnlyRootFilesystem).To(HaveValue(BeTrue()))
		Expect(c.SecurityContext.Capabilities.Drop).To(ContainElement(corev1.Capability("ALL")))
		Expect(c.Image).To(Equal("ghcr.io/ambientmesh/ambient-operator:latest"))
	})

	It("wires the webhooks: Service → operator port, cert-manager certificate → mounted Secret, CA injected into both configurations", func() {
		d := typed(find(objs, "Deployment", ""), &appsv1.Deployment{})
		container := d.Spec.Template.Spec.Containers[0]
		var webhookPort int32
		for _, p := range container.Ports {
			if p.Name == "webhook-server" {
				webhookPort = p.ContainerPort
			}
		}
		Expect(webhookPort).To(Equal(int32(9443)), "controller-runtime's webhook server listens on 9443")

		cert := find(objs, "Certificate", "")
		secret, _, _ := unstructured.NestedString(cert.Object, "spec", "secretName")
		dnsNames, _, _ := unstructured.NestedStringSlice(cert.Object, "spec", "dnsNames")
		var mountsSecret bool
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Secret != nil && v.Secret.SecretName == secret {
				for _, m := range container.VolumeMounts {
					mountsSecret = mountsSecret || (m.Name == v.Name && m.MountPath == "/tmp/k8s-webhook-server/serving-certs")
				}
			}
		}
		Expect(mountsSecret).To(BeTrue(), "the operator must mount Secret %s at controller-runtime's cert dir", secret)

		for _, kind := range []string{"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"} {
			cfg := find(objs, kind, "")
			Expect(cfg.GetAnnotations()).To(HaveKeyWithValue("cert-manager.io/inject-ca-from", cert.GetNamespace()+"/"+cert.GetName()))
			hooks, _, _ := unstructured.NestedSlice(cfg.Object, "webhooks")
			Expect(hooks).To(HaveLen(3))
			for _, h := range hooks {
				svc, _, _ := unstructured.NestedStringMap(h.(map[string]any), "clientConfig", "service")
				service := typed(find(objs, "Service", svc["name"]), &corev1.Service{})
				Expect(service.Namespace).To(Equal(svc["namespace"]))
				Expect(dnsNames).To(ContainElement(fmt.Sprintf("%s.%s.svc", service.Name, service.Namespace)))
				Expect(service.Spec.Ports[0].TargetPort.StrVal).To(Equal("webhook-server"))
				Expect(service.Spec.Selector).To(Equal(d.Spec.Selector.MatchLabels))
			}
		}
	})

	It("gets its webhook serving certificate from the real cert-manager controller, for the webhook Service's DNS names", func() {
		stop, err := testenv.StartCertManager(ctx, cfg, testenv.WithCertManagerLogs(GinkgoWriter))
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(stop)
		issuer, cert := find(objs, "Issuer", ""), find(objs, "Certificate", "")
		for _, obj := range []*unstructured.Unstructured{issuer, cert} {
			Expect(k8sClient.Apply(ctx, client.ApplyConfigurationFromUnstructured(obj.DeepCopy()), client.FieldOwner("deploy-test"), client.ForceOwnership)).To(Succeed())
		}
		secretName, _, _ := unstructured.NestedString(cert.Object, "spec", "secretName")
		dnsNames, _, _ := unstructured.NestedStringSlice(cert.Object, "spec", "dnsNames")
		var secret corev1.Secret
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: cert.GetNamespace(), Name: secretName}, &secret)).To(Succeed())
			g.Expect(secret.Data).To(HaveKey("tls.crt"))
			g.Expect(secret.Data).To(HaveKey("tls.key"))
			g.Expect(secret.Data).To(HaveKey("ca.crt"), "the CA cainjector copies into the webhook configurations")
		}).WithTimeout(60 * time.Second).WithPolling(250 * time.Millisecond).Should(Succeed())
		block, _ := pem.Decode(secret.Data["tls.crt"])
		Expect(block).NotTo(BeNil())
		leaf, err := x509.ParseCertificate(block.Bytes)
		Expect(err).NotTo(HaveOccurred())
		Expect(leaf.DNSNames).To(ConsistOf(dnsNames))
		// The webhook configurations reach the operator through this name.
		Expect(leaf.VerifyHostname(fmt.Sprintf("%s.%s.svc", find(objs, "Service", "ambient-operator-webhook-service").GetName(), cert.GetNamespace()))).To(Succeed())
	})

	It("exposes the metrics endpoint through a Service selecting the operator", func() {
		d := typed(find(objs, "Deployment", ""), &appsv1.Deployment{})
		var metrics *corev1.Service
		for _, o := range objs {
			if o.GetKind() == "Service" && strings.Contains(o.GetName(), "metrics") {
				metrics = typed(o, &corev1.Service{})
			}
		}
		Expect(metrics).NotTo(BeNil())
		Expect(metrics.Spec.Selector).To(Equal(d.Spec.Selector.MatchLabels))
		Expect(metrics.Spec.Ports[0].Port).To(Equal(int32(8443)))
		Expect(d.Spec.Template.Spec.Containers[0].Args).To(ContainElement("--metrics-bind-address=:8443"))
	})
})

var _ = Describe("the OLM bundle's manifests", func() {
	It("are accepted by the apiserver (server-side dry-run), including the CSV's Deployment", func() {
		dir := filepath.Join(repoRoot(GinkgoT()), "bundle", "manifests")
		entries, err := os.ReadDir(dir)
		Expect(err).NotTo(HaveOccurred())
		for _, e := range entries {
			f, err := os.Open(filepath.Join(dir, e.Name()))
			Expect(err).NotTo(HaveOccurred())
			for _, obj := range decodeAll(GinkgoT(), f) {
				if obj.GetKind() == "ClusterServiceVersion" {
					deploys, _, _ := unstructured.NestedSlice(obj.Object, "spec", "install", "spec", "deployments")
					Expect(deploys).To(HaveLen(1))
					spec := deploys[0].(map[string]any)["spec"].(map[string]any)
					d := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "spec": spec}}
					d.SetName(deploys[0].(map[string]any)["name"].(string))
					d.SetNamespace("default")
					Expect(dryRunApply(d)).To(Succeed(), "the CSV's Deployment")
					continue
				}
				if obj.GetNamespace() == "" && obj.GetKind() == "Service" {
					obj.SetNamespace("default") // OLM places it in the install namespace
				}
				Expect(dryRunApply(obj)).To(Succeed(), "%s %s", obj.GetKind(), obj.GetName())
			}
			Expect(f.Close()).To(Succeed())
		}
	})
})

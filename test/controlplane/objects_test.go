package controlplane_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net/url"

	. "github.com/onsi/gomega"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The suite plays the kubelet: it creates Nodes, ServiceAccounts and Pods (with nodeName
// and status set) and asks the API server for projected tokens bound to those pods.

func ensure(ctx context.Context, obj client.Object) {
	err := k8sClient.Create(ctx, obj)
	if !apierrors.IsAlreadyExists(err) {
		Expect(err).NotTo(HaveOccurred())
	}
}

func ensureNamespace(ctx context.Context, name string, labels map[string]string) {
	ensure(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}})
}

func ensureNode(ctx context.Context, name string) {
	ensure(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}})
}

func ensureServiceAccount(ctx context.Context, namespace, name string) {
	ensure(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}})
}

// podSpec describes a pod the suite runs.
type podSpec struct {
	namespace, name, serviceAccount, node, ip string
	labels                                    map[string]string
}

// runPod creates a pod on a node and marks it Running and Ready with its IP, as a kubelet would.
func runPod(ctx context.Context, p podSpec) *corev1.Pod {
	ensureServiceAccount(ctx, p.namespace, p.serviceAccount)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: p.namespace, Name: p.name, Labels: p.labels},
		Spec: corev1.PodSpec{
			ServiceAccountName: p.serviceAccount,
			NodeName:           p.node,
			Containers:         []corev1.Container{{Name: "app", Image: "app", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}},
		},
	}
	Expect(k8sClient.Create(ctx, pod)).To(Succeed())
	if p.ip != "" {
		pod.Status = corev1.PodStatus{
			Phase:      corev1.PodRunning,
			PodIP:      p.ip,
			PodIPs:     []corev1.PodIP{{IP: p.ip}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
		}
		Expect(k8sClient.Status().Update(ctx, pod)).To(Succeed())
	}
	return pod
}

// tokenFor asks the API server for a projected token of a service account bound to pod.
func tokenFor(ctx context.Context, namespace, serviceAccount string, pod *corev1.Pod, audience string) string {
	req := &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{
		Audiences:         []string{audience},
		ExpirationSeconds: ptr.To(int64(600)),
	}}
	if pod != nil {
		req.Spec.BoundObjectRef = &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}
	}
	out, err := clientset.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, serviceAccount, req, metav1.CreateOptions{})
	Expect(err).NotTo(HaveOccurred())
	return out.Status.Token
}

// newCSR makes an ECDSA P-256 key and a CSR whose only SAN is uri.
func newCSR(uri string) (*ecdsa.PrivateKey, string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	Expect(err).NotTo(HaveOccurred())
	u, err := url.Parse(uri)
	Expect(err).NotTo(HaveOccurred())
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{}, URIs: []*url.URL{u}}, key)
	Expect(err).NotTo(HaveOccurred())
	return key, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func parsePEM(s string) *x509.Certificate {
	block, _ := pem.Decode([]byte(s))
	Expect(block).NotTo(BeNil(), "not PEM: %q", s)
	c, err := x509.ParseCertificate(block.Bytes)
	Expect(err).NotTo(HaveOccurred())
	return c
}

package main

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controllers/ambientmesh/manifests"
	"github.com/ambientmesh/ambient-operator/internal/meshconfig"
	"github.com/ambientmesh/ambient-operator/internal/meshscheme"
)

var _ = Describe("the operator's manager", Ordered, func() {
	var (
		probeAddr, metricsAddr string
		mgr                    ctrl.Manager
		managerDone            chan error
		cancelManager          func()
	)

	BeforeAll(func() {
		probeAddr, metricsAddr = freeLocalAddr(), freeLocalAddr()
		var err error
		mgr, err = newManager(cfg, &options{
			metricsAddr:   metricsAddr,
			secureMetrics: true,
			probeAddr:     probeAddr,
			leaderElect:   true,
			leaderElectNS: "default",
		})
		Expect(err).NotTo(HaveOccurred())

		ctx, cancel := context.WithCancel(context.Background())
		cancelManager = cancel
		managerDone = make(chan error, 1)
		go func() { managerDone <- mgr.Start(ctx) }()
	})

	It("answers the liveness and readiness probes", func() {
		for _, path := range []string{"/healthz", "/readyz"} {
			Eventually(func(g Gomega) {
				resp, err := http.Get("http://" + probeAddr + path)
				g.Expect(err).NotTo(HaveOccurred())
				defer resp.Body.Close()
				g.Expect(resp.StatusCode).To(Equal(http.StatusOK), path)
			}).WithTimeout(30 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())
		}
	})

	It("becomes leader through a Lease", func(ctx SpecContext) {
		Eventually(func(g Gomega) {
			lease, err := clientset.CoordinationV1().Leases("default").Get(ctx, leaderElectionID, metav1.GetOptions{})
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(lease.Spec.HolderIdentity).NotTo(BeNil())
			g.Expect(*lease.Spec.HolderIdentity).NotTo(BeEmpty())
		}).WithContext(ctx).WithTimeout(30 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())
	})

	It("serves metrics over HTTPS only to callers RBAC allows", func(ctx SpecContext) {
		By("refusing a caller without credentials")
		Eventually(func(g Gomega) {
			g.Expect(metricsStatus(metricsAddr, "")).To(Equal(http.StatusUnauthorized))
		}).WithContext(ctx).WithTimeout(30 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())

		By("refusing an authenticated service account that RBAC does not allow")
		Expect(metricsStatus(metricsAddr, serviceAccountToken(ctx, "default", "stranger"))).To(Equal(http.StatusForbidden))

		By("serving the metrics to a service account bound to GET /metrics")
		_, err := clientset.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
			ObjectMeta: metav1.ObjectMeta{Name: "test-metrics-reader"},
			Rules:      []rbacv1.PolicyRule{{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}},
		}, metav1.CreateOptions{})
		Expect(err).NotTo(HaveOccurred())
		_, err = clientset.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "test-metrics-reader"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "test-metrics-reader"},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: "default", Name: "scraper"}},
		}, metav1.CreateOptions{})
		Expect(err).NotTo(HaveOccurred())
		token := serviceAccountToken(ctx, "default", "scraper")
		// RBAC changes reach the authorizer's informers within moments; a
		// scraper that was never denied is not held by the filter's deny cache.
		Eventually(func(g Gomega) {
			status, body := metrics(metricsAddr, token)
			g.Expect(status).To(Equal(http.StatusOK))
			g.Expect(body).To(ContainSubstring("leader_election_master_status"))
		}).WithContext(ctx).WithTimeout(60 * time.Second).WithPolling(time.Second).Should(Succeed())
	})

	It("caches only the Pods and ConfigMaps the operator labelled", func(ctx SpecContext) {
		ours := map[string]string{manifests.LabelManagedBy: manifests.ManagedByValue}
		// The user's objects are created first: once the operator's, created
		// after them on the same ordered watch, is in the cache, the user's
		// would be too if the cache held them.
		for _, labels := range []map[string]string{nil, ours} {
			name := "theirs"
			if labels != nil {
				name = "ours"
			}
			_, err := clientset.CoreV1().ConfigMaps("default").Create(ctx,
				&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
			Expect(err).NotTo(HaveOccurred())
			_, err = clientset.CoreV1().Pods("default").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}}, metav1.CreateOptions{})
			Expect(err).NotTo(HaveOccurred())
		}
		cached := mgr.GetClient()
		for _, obj := range []client.Object{&corev1.ConfigMap{}, &corev1.Pod{}} {
			Eventually(func() error {
				return cached.Get(ctx, client.ObjectKey{Namespace: "default", Name: "ours"}, obj)
			}).WithContext(ctx).WithTimeout(30*time.Second).WithPolling(100*time.Millisecond).Should(Succeed(), "%T", obj)
			err := cached.Get(ctx, client.ObjectKey{Namespace: "default", Name: "theirs"}, obj)
			Expect(apierrors.IsNotFound(err)).To(BeTrue(), "%T of the user: err = %v, want not found in the cache", obj, err)
		}
	})

	It("installs into an install namespace the user created, and uninstalls leaving it", func(ctx SpecContext) {
		const ns = "ambient-system"
		_, err := clientset.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		Expect(err).NotTo(HaveOccurred())
		c, err := client.New(cfg, client.Options{Scheme: meshscheme.New()})
		Expect(err).NotTo(HaveOccurred())
		mesh := &meshv1alpha1.AmbientMesh{ObjectMeta: metav1.ObjectMeta{Name: meshv1alpha1.MeshName}}
		Expect(c.Create(ctx, mesh)).To(Succeed())

		By("installing the components into the user's namespace")
		Eventually(func() error {
			_, err := clientset.CoreV1().ConfigMaps(ns).Get(ctx, meshconfig.ConfigMapName, metav1.GetOptions{})
			return err
		}).WithContext(ctx).WithTimeout(30 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())

		By("waiting, on uninstall, for a CNI agent pod after telling the agents to stop enrolling")
		cniLabels := manifests.MeshLabels(meshv1alpha1.MeshName)
		cniLabels[manifests.LabelName] = manifests.CNIName
		cniPod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "cni-agent", Namespace: ns, Labels: cniLabels},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "cni", Image: "cni"}}}}
		Expect(c.Create(ctx, cniPod)).To(Succeed())
		Eventually(func() error {
			return mgr.GetClient().Get(ctx, client.ObjectKeyFromObject(cniPod), &corev1.Pod{})
		}).WithContext(ctx).WithTimeout(30 * time.Second).WithPolling(100 * time.Millisecond).Should(Succeed())
		Expect(c.Delete(ctx, mesh)).To(Succeed())
		Eventually(func(g Gomega) {
			cm, err := clientset.CoreV1().ConfigMaps(ns).Get(ctx, meshconfig.ConfigMapName, metav1.GetOptions{})
			g.Expect(err).NotTo(HaveOccurred())
			config, err := meshconfig.Parse([]byte(cm.Data[meshconfig.ConfigMapKey]))
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(config.Uninstalling).To(BeTrue())
		}).WithContext(ctx).WithTimeout(30 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())

		By("finishing once the pod is gone, and leaving the user's namespace")
		Expect(c.Delete(ctx, cniPod, client.GracePeriodSeconds(0))).To(Succeed())
		Eventually(func() bool {
			return apierrors.IsNotFound(c.Get(ctx, client.ObjectKeyFromObject(mesh), &meshv1alpha1.AmbientMesh{}))
		}).WithContext(ctx).WithTimeout(30 * time.Second).WithPolling(200 * time.Millisecond).Should(BeTrue())
		left, err := clientset.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		Expect(err).NotTo(HaveOccurred())
		Expect(left.DeletionTimestamp).To(BeNil())
	})

	It("stops cleanly when its context ends", func() {
		cancelManager()
		Eventually(managerDone).WithTimeout(30 * time.Second).Should(Receive(BeNil()))
	})
})

func metricsStatus(addr, token string) int {
	status, _ := metrics(addr, token)
	return status
}

// metrics GETs /metrics from the manager with an optional bearer token. The
// server's certificate is self-signed by controller-runtime, on loopback.
func metrics(addr, token string) (int, string) {
	GinkgoHelper()
	httpClient := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, //nolint:gosec // loopback test server
	}
	req, err := http.NewRequest(http.MethodGet, "https://"+addr+"/metrics", nil)
	Expect(err).NotTo(HaveOccurred())
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// serviceAccountToken creates a service account and a bound token for it.
func serviceAccountToken(ctx context.Context, namespace, name string) string {
	GinkgoHelper()
	_, err := clientset.CoreV1().ServiceAccounts(namespace).Create(ctx,
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if !apierrors.IsAlreadyExists(err) {
		Expect(err).NotTo(HaveOccurred())
	}
	tr, err := clientset.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name,
		&authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	Expect(err).NotTo(HaveOccurred())
	return tr.Status.Token
}

// freeLocalAddr returns a loopback address with a port that was free a moment ago.
func freeLocalAddr() string {
	GinkgoHelper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	defer l.Close()
	return l.Addr().String()
}

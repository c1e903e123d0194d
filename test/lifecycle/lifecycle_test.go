package lifecycle

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	cmv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controllers/ambientmesh"
	"github.com/ambientmesh/ambient-operator/controllers/ambientmesh/manifests"
	"github.com/ambientmesh/ambient-operator/internal/meshconfig"
	"github.com/ambientmesh/ambient-operator/internal/versions"
)

var meshKey = client.ObjectKey{Name: meshv1alpha1.MeshName}

// testbed is one operator and one fake cluster for one spec.
type testbed struct {
	ns        string
	clock     *offsetClock
	cluster   *fakeCluster
	stopOp    func()
	stopClust context.CancelFunc
}

var nsCounter int

// newTestbed starts the fake cluster (3 nodes) and the operator, and
// registers their cleanup: the mesh is uninstalled first (so each spec
// leaves a clean API server), then the operator and the cluster stop.
func newTestbed() *testbed {
	nsCounter++
	tb := &testbed{ns: fmt.Sprintf("mesh-%d", nsCounter), clock: &offsetClock{}}
	ctx, cancel := context.WithCancel(suiteCtx)
	tb.stopClust = cancel
	tb.cluster = newFakeCluster(k8sClient, tb.ns, 3)
	tb.cluster.start(ctx)
	DeferCleanup(cancel)
	tb.stopOp = startOperator(tb.clock)
	DeferCleanup(func() { tb.stopOp() })
	DeferCleanup(func() {
		tb.cluster.set(func(f *fakeCluster) { f.holdGC, f.holdReady = false, map[string]bool{} })
		deleteMeshAndWait()
		Expect(tb.cluster.Err()).NotTo(HaveOccurred(), "the fake cluster failed to sync")
	})
	return tb
}

func (tb *testbed) restartOperator() {
	tb.stopOp()
	tb.stopOp = startOperator(tb.clock)
}

func (tb *testbed) install(version string, mutate ...func(*meshv1alpha1.AmbientMesh)) {
	m := &meshv1alpha1.AmbientMesh{}
	m.Name = meshv1alpha1.MeshName
	m.Spec.Version = version
	m.Spec.Namespace = tb.ns
	for _, f := range mutate {
		f(m)
	}
	Expect(k8sClient.Create(suiteCtx, m)).To(Succeed())
}

func deleteMeshAndWait() {
	m := &meshv1alpha1.AmbientMesh{}
	if err := k8sClient.Get(suiteCtx, meshKey, m); apierrors.IsNotFound(err) {
		return
	}
	Expect(client.IgnoreNotFound(k8sClient.Delete(suiteCtx, m))).To(Succeed())
	Eventually(func() error { return k8sClient.Get(suiteCtx, meshKey, &meshv1alpha1.AmbientMesh{}) }).
		Should(Satisfy(apierrors.IsNotFound), "the mesh was not uninstalled")
}

func getMesh() *meshv1alpha1.AmbientMesh {
	m := &meshv1alpha1.AmbientMesh{}
	Expect(k8sClient.Get(suiteCtx, meshKey, m)).To(Succeed())
	return m
}

func updateMesh(fn func(*meshv1alpha1.AmbientMesh)) {
	Eventually(func() error {
		m := getMesh()
		fn(m)
		return k8sClient.Update(suiteCtx, m)
	}).Should(Succeed())
}

// poke makes the operator reconcile now (any change to the mesh does).
func poke() {
	updateMesh(func(m *meshv1alpha1.AmbientMesh) {
		if m.Annotations == nil {
			m.Annotations = map[string]string{}
		}
		m.Annotations["test/poke"] = time.Now().Format(time.RFC3339Nano)
	})
}

func condition(m *meshv1alpha1.AmbientMesh, t string) metav1.Condition {
	if c := meta.FindStatusCondition(m.Status.Conditions, t); c != nil {
		return *c
	}
	return metav1.Condition{}
}

// conditionFn polls a condition of the mesh as "Status/Reason: message".
func conditionFn(t string) func() string {
	return func() string {
		m := &meshv1alpha1.AmbientMesh{}
		if err := k8sClient.Get(suiteCtx, meshKey, m); err != nil {
			return err.Error()
		}
		c := condition(m, t)
		return fmt.Sprintf("%s/%s: %s", c.Status, c.Reason, c.Message)
	}
}

func waitReady(version string) {
	Eventually(func(g Gomega) {
		m := getMesh()
		g.Expect(condition(m, meshv1alpha1.MeshConditionReady).Status).To(Equal(metav1.ConditionTrue),
			"Ready: %s", condition(m, meshv1alpha1.MeshConditionReady).Message)
		g.Expect(m.Status.Phase).To(Equal(meshv1alpha1.MeshPhaseReady))
		g.Expect(m.Status.Version).To(Equal(version))
		g.Expect(m.Status.ObservedGeneration).To(Equal(m.Generation))
	}, 90*time.Second).Should(Succeed())
}

// ownedObjects lists, as Kind/namespace/name, every object carrying the
// mesh's labels in the kinds the operator writes (pods excluded), cluster
// scoped or in ns. Namespaces of earlier specs stay Terminating in envtest
// (no namespace controller), so their leftovers are not counted.
func ownedObjects(ns string) []string {
	lists := map[string]client.ObjectList{
		"ConfigMap": &corev1.ConfigMapList{}, "ServiceAccount": &corev1.ServiceAccountList{},
		"Service": &corev1.ServiceList{}, "Secret": &corev1.SecretList{},
		"Deployment": &appsv1.DeploymentList{}, "DaemonSet": &appsv1.DaemonSetList{},
		"PodDisruptionBudget": &policyv1.PodDisruptionBudgetList{},
		"ClusterRole":         &rbacv1.ClusterRoleList{}, "ClusterRoleBinding": &rbacv1.ClusterRoleBindingList{},
		"Role": &rbacv1.RoleList{}, "RoleBinding": &rbacv1.RoleBindingList{},
		"Issuer": &cmv1.IssuerList{}, "Certificate": &cmv1.CertificateList{},
	}
	var out []string
	for kind, list := range lists {
		Expect(k8sClient.List(suiteCtx, list, client.MatchingLabels(manifests.MeshLabels(meshv1alpha1.MeshName)))).To(Succeed())
		items, err := meta.ExtractList(list)
		Expect(err).NotTo(HaveOccurred())
		for _, it := range items {
			o := it.(client.Object)
			if o.GetDeletionTimestamp().IsZero() && (o.GetNamespace() == "" || o.GetNamespace() == ns) {
				out = append(out, kind+"/"+o.GetNamespace()+"/"+o.GetName())
			}
		}
	}
	sort.Strings(out)
	return out
}

func expectedObjects(ns string, selfSigned bool) []string {
	objs := []string{
		"ConfigMap/" + ns + "/ambientmesh-config",
		"ServiceAccount/" + ns + "/ambientmesh-controlplane", "ServiceAccount/" + ns + "/ztunnel", "ServiceAccount/" + ns + "/ambientmesh-cni",
		"ClusterRole//ambientmesh-controlplane", "ClusterRoleBinding//ambientmesh-controlplane",
		"ClusterRole//ambientmesh-cni", "ClusterRoleBinding//ambientmesh-cni",
		"Role/" + ns + "/ambientmesh-cni", "RoleBinding/" + ns + "/ambientmesh-cni",
		"Role/" + ns + "/ambientmesh-controlplane", "RoleBinding/" + ns + "/ambientmesh-controlplane",
		"Service/" + ns + "/ambientmesh-controlplane", "Deployment/" + ns + "/ambientmesh-controlplane",
		"PodDisruptionBudget/" + ns + "/ambientmesh-controlplane",
		"DaemonSet/" + ns + "/ambientmesh-cni", "DaemonSet/" + ns + "/ztunnel",
		"Certificate/" + ns + "/ambientmesh-controlplane-tls", "Secret/" + ns + "/ambientmesh-controlplane-tls",
	}
	if selfSigned {
		objs = append(objs, "Issuer/"+ns+"/ambientmesh-selfsigned", "Certificate/"+ns+"/ambientmesh-root-ca",
			"Secret/"+ns+"/ambientmesh-root-ca", "Issuer/"+ns+"/ambientmesh-ca")
	}
	sort.Strings(objs)
	return objs
}

func getObj[T client.Object](obj T, ns, name string) T {
	Expect(k8sClient.Get(suiteCtx, client.ObjectKey{Namespace: ns, Name: name}, obj)).To(Succeed())
	return obj
}

var _ = Describe("AmbientMesh install", func() {
	It("creates exactly the expected objects, with a real cert-manager chain, and becomes Ready", func() {
		tb := newTestbed()
		tb.install("0.1.0")
		waitReady("0.1.0")
		Eventually(func() []string { return ownedObjects(tb.ns) }).Should(Equal(expectedObjects(tb.ns, true)))

		m := getMesh()
		Expect(m.Finalizers).To(ContainElement(ambientmesh.Finalizer))
		Expect(condition(m, meshv1alpha1.MeshConditionIdentityReady).Reason).To(Equal(meshv1alpha1.ReasonReady))
		Expect(m.Status.Components.ZTunnel).To(Equal(meshv1alpha1.ComponentStatus{Version: "0.1.0", Desired: 3, Ready: 3, Updated: 3}))
		Expect(m.Status.Components.CNI).To(Equal(meshv1alpha1.ComponentStatus{Version: "0.1.0", Desired: 3, Ready: 3, Updated: 3}))
		Expect(m.Status.Components.ControlPlane).To(Equal(meshv1alpha1.ComponentStatus{Version: "0.1.0", Desired: 1, Ready: 1, Updated: 1}))
		for _, t := range []string{meshv1alpha1.MeshConditionControlPlaneReady, meshv1alpha1.MeshConditionCNIReady,
			meshv1alpha1.MeshConditionZTunnelReady, meshv1alpha1.MeshConditionIdentityReady} {
			Expect(condition(m, t).Status).To(Equal(metav1.ConditionTrue), t)
			Expect(condition(m, t).ObservedGeneration).To(Equal(m.Generation), t)
		}
		Expect(condition(m, meshv1alpha1.MeshConditionUpgrading).Reason).To(Equal(meshv1alpha1.ReasonUpToDate))

		By("the namespace is created and labelled as the operator's")
		ns := getObj(&corev1.Namespace{}, "", tb.ns)
		Expect(ns.Labels).To(HaveKeyWithValue(manifests.LabelManagedBy, manifests.ManagedByValue))

		By("the real cert-manager issued the root CA and the control plane certificate")
		root := getObj(&corev1.Secret{}, tb.ns, manifests.RootCAName)
		Expect(root.Data).To(HaveKey("tls.crt"))
		cpTLS := getObj(&corev1.Secret{}, tb.ns, manifests.ControlPlaneTLSName)
		Expect(cpTLS.Data["ca.crt"]).To(Equal(root.Data["tls.crt"]), "the control plane certificate is signed by the mesh root")

		By("the mesh config is what components parse")
		cm := getObj(&corev1.ConfigMap{}, tb.ns, meshconfig.ConfigMapName)
		cfg, err := meshconfig.Parse([]byte(cm.Data[meshconfig.ConfigMapKey]))
		Expect(err).NotTo(HaveOccurred())
		Expect(cfg.Namespace).To(Equal(tb.ns))
		Expect(cfg.ControlPlane.XDSAddress()).To(Equal("ambientmesh-controlplane." + tb.ns + ".svc:15010"))

		By("the workloads run the versions table's images and are applied by one field owner")
		ds := getObj(&appsv1.DaemonSet{}, tb.ns, manifests.ZTunnelName)
		Expect(ds.Spec.Template.Spec.Containers[0].Image).To(Equal(versions.Image(versions.ZTunnel, "0.1.0")))
		Expect(ds.Spec.UpdateStrategy.Type).To(Equal(appsv1.OnDeleteDaemonSetStrategyType))
		managers := map[string]bool{}
		for _, mf := range ds.ManagedFields {
			if mf.Operation == metav1.ManagedFieldsOperationApply {
				managers[mf.Manager] = true
			}
		}
		Expect(managers).To(Equal(map[string]bool{manifests.FieldOwner: true}))

		By("a steady mesh is not rewritten on every pass")
		before := specVersions(tb.ns)
		poke()
		Consistently(func() map[string]string { return specVersions(tb.ns) }, 3*time.Second, 200*time.Millisecond).Should(Equal(before))
	})

	It("reports status that follows component readiness", func() {
		tb := newTestbed()
		tb.install("0.1.0")
		waitReady("0.1.0")

		By("node-2's ztunnel crashes and does not come back ready")
		tb.cluster.set(func(f *fakeCluster) { f.broken["node-2"] = true })
		deleteZTunnelPodOn(tb.ns, "node-2")
		Eventually(conditionFn(meshv1alpha1.MeshConditionZTunnelReady)).Should(HavePrefix("False/NotReady: ztunnel: 2/3 nodes ready"))
		m := getMesh()
		Expect(m.Status.Phase).To(Equal(meshv1alpha1.MeshPhaseDegraded))
		Expect(condition(m, meshv1alpha1.MeshConditionReady).Reason).To(Equal(meshv1alpha1.ReasonComponentsNotReady))
		Expect(condition(m, meshv1alpha1.MeshConditionUpgrading).Status).To(Equal(metav1.ConditionFalse),
			"a crash outside a rollout is not an upgrade")

		By("it recovers")
		tb.cluster.set(func(f *fakeCluster) { delete(f.broken, "node-2") })
		waitReady("0.1.0")
	})

	It("surfaces a missing external issuer and accepts it once it exists", func() {
		tb := newTestbed()
		tb.install("0.1.0", func(m *meshv1alpha1.AmbientMesh) {
			m.Spec.Identity.IssuerRef = &meshv1alpha1.IssuerReference{Name: "corp-ca", Kind: "Issuer", Group: "cert-manager.io"}
		})
		Eventually(conditionFn(meshv1alpha1.MeshConditionIdentityReady)).Should(Equal(
			"False/IssuerNotFound: spec.identity.issuerRef names Issuer " + tb.ns + "/corp-ca, which does not exist: create it, or fix or remove issuerRef"))
		Eventually(conditionFn(meshv1alpha1.MeshConditionReady)).Should(ContainSubstring("IdentityReady"))
		Expect(getMesh().Status.Phase).To(Equal(meshv1alpha1.MeshPhaseInstalling))
		for _, name := range []string{manifests.SelfSignedIssuerName, manifests.CAIssuerName} {
			Expect(apierrors.IsNotFound(k8sClient.Get(suiteCtx, client.ObjectKey{Namespace: tb.ns, Name: name}, &cmv1.Issuer{}))).
				To(BeTrue(), "no operator-managed chain with issuerRef set")
		}

		By("creating the issuer makes identity ready (cert-manager marks it Ready)")
		Expect(k8sClient.Create(suiteCtx, &cmv1.Issuer{
			ObjectMeta: metav1.ObjectMeta{Name: "corp-ca", Namespace: tb.ns},
			Spec:       cmv1.IssuerSpec{IssuerConfig: cmv1.IssuerConfig{SelfSigned: &cmv1.SelfSignedIssuer{}}},
		})).To(Succeed())
		waitReady("0.1.0")
		Expect(conditionFn(meshv1alpha1.MeshConditionIdentityReady)()).To(HavePrefix("True/Ready: Issuer " + tb.ns + "/corp-ca is ready"))
		Expect(ownedObjects(tb.ns)).To(Equal(expectedObjects(tb.ns, false)))
	})
})

// specVersions maps owned objects to what changes when the operator
// rewrites them: resourceVersion for objects without status written by
// others, generation for workloads and cert-manager objects.
func specVersions(ns string) map[string]string {
	out := map[string]string{}
	add := func(list client.ObjectList, useGeneration bool) {
		Expect(k8sClient.List(suiteCtx, list, client.MatchingLabels(manifests.MeshLabels(meshv1alpha1.MeshName)))).To(Succeed())
		items, _ := meta.ExtractList(list)
		for _, it := range items {
			o := it.(client.Object)
			v := o.GetResourceVersion()
			if useGeneration {
				v = fmt.Sprint(o.GetGeneration())
			}
			out[fmt.Sprintf("%T/%s/%s", o, o.GetNamespace(), o.GetName())] = v
		}
	}
	add(&corev1.ConfigMapList{}, false)
	add(&corev1.ServiceAccountList{}, false)
	add(&corev1.ServiceList{}, false)
	add(&rbacv1.ClusterRoleList{}, false)
	add(&rbacv1.RoleBindingList{}, false)
	add(&appsv1.DeploymentList{}, true)
	add(&appsv1.DaemonSetList{}, true)
	add(&cmv1.CertificateList{}, true)
	add(&cmv1.IssuerList{}, true)
	return out
}

func ztunnelPodOn(ns, node string) *corev1.Pod {
	pods := &corev1.PodList{}
	Expect(k8sClient.List(suiteCtx, pods, client.InNamespace(ns), client.MatchingLabels{manifests.LabelName: manifests.ZTunnelName})).To(Succeed())
	for i := range pods.Items {
		if pods.Items[i].Spec.NodeName == node && pods.Items[i].DeletionTimestamp.IsZero() {
			return &pods.Items[i]
		}
	}
	return nil
}

func deleteZTunnelPodOn(ns, node string) {
	p := ztunnelPodOn(ns, node)
	Expect(p).NotTo(BeNil())
	// No grace period: the pod vanishes, which the fake cluster does not
	// count as the operator's deletion.
	Expect(k8sClient.Delete(suiteCtx, p, client.GracePeriodSeconds(0))).To(Succeed())
}

var _ = Describe("AmbientMesh drift repair", func() {
	It("restores deleted and hand-edited objects and prunes what the spec no longer wants", func() {
		tb := newTestbed()
		tb.install("0.1.0")
		waitReady("0.1.0")

		By("deleting the CNI DaemonSet")
		cni := getObj(&appsv1.DaemonSet{}, tb.ns, manifests.CNIName)
		Expect(k8sClient.Delete(suiteCtx, cni)).To(Succeed())
		Eventually(func() bool {
			ds := &appsv1.DaemonSet{}
			err := k8sClient.Get(suiteCtx, client.ObjectKeyFromObject(cni), ds)
			return err == nil && ds.UID != cni.UID
		}).Should(BeTrue(), "the CNI DaemonSet was not recreated")

		By("editing the ztunnel image by hand")
		zt := getObj(&appsv1.DaemonSet{}, tb.ns, manifests.ZTunnelName)
		zt.Spec.Template.Spec.Containers[0].Image = "attacker.example/ztunnel:evil"
		Expect(k8sClient.Update(suiteCtx, zt)).To(Succeed())
		Eventually(func() string {
			return getObj(&appsv1.DaemonSet{}, tb.ns, manifests.ZTunnelName).Spec.Template.Spec.Containers[0].Image
		}).Should(Equal(versions.Image(versions.ZTunnel, "0.1.0")))

		By("editing the mesh config by hand")
		cm := getObj(&corev1.ConfigMap{}, tb.ns, meshconfig.ConfigMapName)
		want := cm.Data[meshconfig.ConfigMapKey]
		cm.Data[meshconfig.ConfigMapKey] = strings.Replace(want, "backend: iptables", "backend: nftables", 1)
		Expect(k8sClient.Update(suiteCtx, cm)).To(Succeed())
		Eventually(func() string {
			return getObj(&corev1.ConfigMap{}, tb.ns, meshconfig.ConfigMapName).Data[meshconfig.ConfigMapKey]
		}).Should(Equal(want))

		By("widening and deleting a cluster-scoped role (tracked by label)")
		cr := getObj(&rbacv1.ClusterRole{}, "", manifests.CNIName)
		cr.Rules = append(cr.Rules, rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get"}})
		Expect(k8sClient.Update(suiteCtx, cr)).To(Succeed())
		Eventually(func() []rbacv1.PolicyRule { return getObj(&rbacv1.ClusterRole{}, "", manifests.CNIName).Rules }).
			Should(Equal(manifests.CNIClusterRules()))
		Expect(k8sClient.Delete(suiteCtx, cr)).To(Succeed())
		Eventually(func() error {
			return k8sClient.Get(suiteCtx, client.ObjectKey{Name: manifests.CNIName}, &rbacv1.ClusterRole{})
		}).Should(Succeed())

		By("switching to an external ClusterIssuer prunes the operator's chain")
		Expect(k8sClient.Create(suiteCtx, &cmv1.ClusterIssuer{
			ObjectMeta: metav1.ObjectMeta{Name: "lifecycle-corp-ca"},
			Spec:       cmv1.IssuerSpec{IssuerConfig: cmv1.IssuerConfig{SelfSigned: &cmv1.SelfSignedIssuer{}}},
		})).To(Succeed())
		DeferCleanup(func() {
			Expect(k8sClient.Delete(suiteCtx, &cmv1.ClusterIssuer{ObjectMeta: metav1.ObjectMeta{Name: "lifecycle-corp-ca"}})).To(Succeed())
		})
		updateMesh(func(m *meshv1alpha1.AmbientMesh) {
			m.Spec.Identity.IssuerRef = &meshv1alpha1.IssuerReference{Name: "lifecycle-corp-ca", Kind: "ClusterIssuer", Group: "cert-manager.io"}
		})
		Eventually(func() []string {
			return slices.DeleteFunc(ownedObjects(tb.ns), func(s string) bool { return strings.HasPrefix(s, "Secret/") })
		}).Should(Equal(slices.DeleteFunc(expectedObjects(tb.ns, false), func(s string) bool { return strings.HasPrefix(s, "Secret/") })))
		Eventually(conditionFn(meshv1alpha1.MeshConditionIdentityReady)).Should(Equal("True/Ready: ClusterIssuer lifecycle-corp-ca is ready"))
		cert := getObj(&cmv1.Certificate{}, tb.ns, manifests.ControlPlaneTLSName)
		Expect(cert.Spec.IssuerRef).To(Equal(cmmeta.IssuerReference{Name: "lifecycle-corp-ca", Kind: "ClusterIssuer", Group: "cert-manager.io"}))
		waitReady("0.1.0")
	})
})

// statusRecorder samples the mesh status in the background so a test can
// assert on states that last only a moment.
type statusRecorder struct {
	mu       sync.Mutex
	messages []string
	phases   map[meshv1alpha1.MeshPhase]bool
	steps    map[meshv1alpha1.UpgradeComponent]bool
}

func recordStatus(ctx context.Context) *statusRecorder {
	r := &statusRecorder{phases: map[meshv1alpha1.MeshPhase]bool{}, steps: map[meshv1alpha1.UpgradeComponent]bool{}}
	go func() {
		defer GinkgoRecover()
		for ctx.Err() == nil {
			m := &meshv1alpha1.AmbientMesh{}
			if err := k8sClient.Get(ctx, meshKey, m); err == nil {
				r.mu.Lock()
				r.messages = append(r.messages, condition(m, meshv1alpha1.MeshConditionUpgrading).Message)
				r.phases[m.Status.Phase] = true
				if m.Status.Upgrade != nil {
					r.steps[m.Status.Upgrade.Step] = true
				}
				r.mu.Unlock()
			}
			time.Sleep(10 * time.Millisecond) // sampling: often enough to see each step of the upgrade
		}
	}()
	return r
}

func (r *statusRecorder) snapshot() ([]string, map[meshv1alpha1.MeshPhase]bool, map[meshv1alpha1.UpgradeComponent]bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.messages), r.phases, r.steps
}

func expectOldPodsReplacedOnceEach(tb *testbed, from string) {
	deleted := tb.cluster.DeletedByOperator()
	var got []string
	for _, v := range deleted {
		got = append(got, v)
	}
	sort.Strings(got)
	Expect(got).To(Equal([]string{"node-1 " + from, "node-2 " + from, "node-3 " + from}),
		"the operator must delete each old ztunnel pod exactly once and no new one")
	Expect(tb.cluster.MaxTransition()).To(Equal(1), "at most one node in transition")
}

var _ = Describe("AmbientMesh upgrade", func() {
	It("rolls control plane → CNI agent → ztunnel node by node", func() {
		tb := newTestbed()
		tb.install("0.1.0")
		waitReady("0.1.0")
		ctx, cancel := context.WithCancel(suiteCtx)
		DeferCleanup(cancel)
		rec := recordStatus(ctx)

		updateMesh(func(m *meshv1alpha1.AmbientMesh) { m.Spec.Version = "0.2.0" })
		waitReady("0.2.0")
		cancel()

		tl := tb.cluster.Timeline()
		GinkgoWriter.Println("timeline:", strings.Join(tl, "\n  "))
		cpDone := indexOf(tl, "controlplane:0.2.0")
		cniTemplate := indexOf(tl, manifests.CNIName+"-template:0.2.0")
		cniDone := indexOf(tl, manifests.CNIName+":0.2.0")
		ztTemplate := indexOf(tl, manifests.ZTunnelName+"-template:0.2.0")
		firstNode := indexOf(tl, "ztunnel-deleted:")
		Expect(cpDone).To(BeNumerically(">=", 0))
		Expect(cniTemplate).To(BeNumerically(">", cpDone), "the CNI agent moved before the control plane was ready")
		Expect(cniDone).To(BeNumerically(">", cniTemplate))
		Expect(ztTemplate).To(BeNumerically(">", cniDone), "ztunnel moved before the CNI agent was ready")
		Expect(firstNode).To(BeNumerically(">", ztTemplate))

		By("nodes were replaced in order, each after the previous one was ready")
		var order []string
		for _, e := range tl {
			if node, ok := strings.CutPrefix(e, "ztunnel-deleted:"); ok {
				order = append(order, "deleted "+node)
			}
			if rest, ok := strings.CutPrefix(e, manifests.ZTunnelName+"-ready:"); ok && strings.HasSuffix(rest, ":0.2.0") {
				order = append(order, "ready "+strings.TrimSuffix(rest, ":0.2.0"))
			}
		}
		Expect(order).To(Equal([]string{"deleted node-1", "ready node-1", "deleted node-2", "ready node-2", "deleted node-3", "ready node-3"}))
		expectOldPodsReplacedOnceEach(tb, "0.1.0")

		By("status showed the upgrade and its progress")
		msgs, phases, steps := rec.snapshot()
		Expect(phases).To(HaveKey(meshv1alpha1.MeshPhaseUpgrading))
		Expect(steps).To(HaveKey(meshv1alpha1.UpgradeStepZTunnel))
		progress := regexp.MustCompile(`^0\.1\.0 → 0\.2\.0, ztunnel: [0-3]/3 nodes`)
		Expect(slices.ContainsFunc(msgs, progress.MatchString)).To(BeTrue(), "no progress message among %v", slices.Compact(msgs))
		m := getMesh()
		Expect(m.Status.Upgrade).To(BeNil())
		Expect(condition(m, meshv1alpha1.MeshConditionUpgrading).Reason).To(Equal(meshv1alpha1.ReasonUpToDate))
		Expect(m.Status.Components.ZTunnel.Version).To(Equal("0.2.0"))
	})

	It("refuses to skip a minor version", func() {
		tb := newTestbed()
		tb.install("0.1.0")
		waitReady("0.1.0")
		updateMesh(func(m *meshv1alpha1.AmbientMesh) { m.Spec.Version = "0.3.0" })
		Eventually(conditionFn(meshv1alpha1.MeshConditionUpgrading)).Should(Equal(
			"False/VersionSkewTooLarge: version skew too large: from 0.1.0 to 0.3.0 skips a minor version; upgrade one minor version at a time (next: 0.2.0)"))
		m := getMesh()
		Expect(condition(m, meshv1alpha1.MeshConditionReady).Reason).To(Equal(meshv1alpha1.ReasonVersionSkew))
		Expect(m.Status.Version).To(Equal("0.1.0"))
		Consistently(func() string {
			return getObj(&appsv1.Deployment{}, tb.ns, manifests.ControlPlaneName).Spec.Template.Labels[manifests.LabelVersion]
		}, 2*time.Second, 100*time.Millisecond).Should(Equal("0.1.0"))
		Expect(tb.cluster.DeletedByOperator()).To(BeEmpty())
	})

	It("stops at a node whose new ztunnel does not become ready, names it, and resumes once it is", func() {
		tb := newTestbed()
		tb.install("0.1.0", func(m *meshv1alpha1.AmbientMesh) {
			m.Spec.Upgrade.NodeReadyTimeout = &metav1.Duration{Duration: 30 * time.Second}
		})
		waitReady("0.1.0")
		tb.cluster.set(func(f *fakeCluster) { f.broken["node-2"] = true })
		updateMesh(func(m *meshv1alpha1.AmbientMesh) { m.Spec.Version = "0.2.0" })
		Eventually(func() []string { return slices.Collect(mapValues(tb.cluster.DeletedByOperator())) }).
			Should(ConsistOf("node-1 0.1.0", "node-2 0.1.0"))
		Eventually(conditionFn(meshv1alpha1.MeshConditionUpgrading)).Should(HavePrefix("True/UpgradeInProgress: 0.1.0 → 0.2.0, ztunnel: 1/3 nodes (replacing node-2)"))

		By("the node-ready timeout passes")
		tb.clock.Advance(time.Minute)
		poke()
		Eventually(conditionFn(meshv1alpha1.MeshConditionUpgrading)).Should(MatchRegexp(
			`^True/UpgradeFailed: stopped at node node-2: the new ztunnel pod ztunnel-\w+ is not ready after 1m\d+s; fix that node`))
		m := getMesh()
		Expect(m.Status.Phase).To(Equal(meshv1alpha1.MeshPhaseUpgrading))
		Expect(condition(m, meshv1alpha1.MeshConditionReady).Reason).To(Equal(meshv1alpha1.ReasonUpgradeFailed))
		Expect(m.Status.Upgrade.Node).To(Equal("node-2"))
		Consistently(func() int { return len(tb.cluster.DeletedByOperator()) }, 2*time.Second, 100*time.Millisecond).
			Should(Equal(2), "node-3 must not be touched after node-2 failed")

		By("node-2 recovers")
		tb.clock.Advance(-time.Minute)
		tb.cluster.set(func(f *fakeCluster) { delete(f.broken, "node-2") })
		waitReady("0.2.0")
		expectOldPodsReplacedOnceEach(tb, "0.1.0")
	})

	It("resumes after an operator restart mid-upgrade without replacing a node twice", func() {
		tb := newTestbed()
		tb.install("0.1.0")
		waitReady("0.1.0")
		// New ztunnel pods are held unready, so node-1 stays in transition.
		tb.cluster.set(func(f *fakeCluster) { f.holdReady[manifests.ZTunnelName] = true })
		updateMesh(func(m *meshv1alpha1.AmbientMesh) { m.Spec.Version = "0.2.0" })
		Eventually(func() int { return len(tb.cluster.DeletedByOperator()) }).Should(Equal(1))
		Eventually(conditionFn(meshv1alpha1.MeshConditionUpgrading)).Should(HaveSuffix("ztunnel: 0/3 nodes (replacing node-1)"))

		By("restarting the operator while node-1 is in transition")
		tb.restartOperator()
		poke()
		Consistently(func() int { return len(tb.cluster.DeletedByOperator()) }, 3*time.Second, 100*time.Millisecond).Should(Equal(1))
		Expect(conditionFn(meshv1alpha1.MeshConditionUpgrading)()).To(HaveSuffix("ztunnel: 0/3 nodes (replacing node-1)"))

		tb.cluster.set(func(f *fakeCluster) { f.holdReady[manifests.ZTunnelName] = false })
		waitReady("0.2.0")
		expectOldPodsReplacedOnceEach(tb, "0.1.0")
		Expect(ownedObjects(tb.ns)).To(Equal(expectedObjects(tb.ns, true)), "no duplicate objects after the restart")
	})
})

func mapValues[K comparable, V any](m map[K]V) func(func(V) bool) {
	return func(yield func(V) bool) {
		for _, v := range m {
			if !yield(v) {
				return
			}
		}
	}
}

var _ = Describe("AmbientMesh uninstall", func() {
	It("removes the CNI agent, then ztunnel, then the rest, behind a finalizer", func() {
		tb := newTestbed()
		tb.install("0.1.0")
		waitReady("0.1.0")
		tb.cluster.set(func(f *fakeCluster) { f.holdGC = true })
		Expect(k8sClient.Delete(suiteCtx, getMesh())).To(Succeed())

		By("the CNI agent goes first and the rest waits for its pods")
		Eventually(func() int { return indexOf(tb.cluster.Timeline(), "deleted:"+manifests.CNIName) }).Should(BeNumerically(">=", 0))
		Eventually(conditionFn(meshv1alpha1.MeshConditionReady)).Should(Equal(
			"False/Deleting: uninstalling: waiting for 3 CNI agent pod(s) to remove their rules and plugin configuration"))
		Consistently(func(g Gomega) {
			m := getMesh()
			g.Expect(m.Finalizers).To(ContainElement(ambientmesh.Finalizer))
			g.Expect(m.Status.Phase).To(Equal(meshv1alpha1.MeshPhaseDeleting))
			g.Expect(k8sClient.Get(suiteCtx, client.ObjectKey{Namespace: tb.ns, Name: manifests.ZTunnelName}, &appsv1.DaemonSet{})).To(Succeed())
			g.Expect(k8sClient.Get(suiteCtx, client.ObjectKey{Namespace: tb.ns, Name: manifests.ControlPlaneName}, &appsv1.Deployment{})).To(Succeed())
		}, 2*time.Second, 100*time.Millisecond).Should(Succeed())
		cm := getObj(&corev1.ConfigMap{}, tb.ns, meshconfig.ConfigMapName)
		cfg, err := meshconfig.Parse([]byte(cm.Data[meshconfig.ConfigMapKey]))
		Expect(err).NotTo(HaveOccurred())
		Expect(cfg.Uninstalling).To(BeTrue(), "the node agents are told to stop enrolling")

		tb.cluster.set(func(f *fakeCluster) { f.holdGC = false })
		Eventually(func() error { return k8sClient.Get(suiteCtx, meshKey, &meshv1alpha1.AmbientMesh{}) }).Should(Satisfy(apierrors.IsNotFound))
		Eventually(func() int { return indexOf(tb.cluster.Timeline(), "deleted:controlplane") }).Should(BeNumerically(">=", 0))

		tl := tb.cluster.Timeline()
		GinkgoWriter.Println("timeline:", strings.Join(tl, "\n  "))
		steps := []string{"deleted:" + manifests.CNIName, "pods-gone:" + manifests.CNIName,
			"deleted:" + manifests.ZTunnelName, "pods-gone:" + manifests.ZTunnelName, "deleted:controlplane"}
		for i := 1; i < len(steps); i++ {
			Expect(indexOf(tl, steps[i])).To(BeNumerically(">", indexOf(tl, steps[i-1])), "%s must come after %s", steps[i], steps[i-1])
		}
		// The root CA and control plane Secrets are cert-manager's; the
		// namespace deletion removes them (envtest has no namespace controller).
		Eventually(func() []string {
			return slices.DeleteFunc(ownedObjects(tb.ns), func(s string) bool { return strings.HasPrefix(s, "Secret/") })
		}).Should(BeEmpty())
		ns := getObj(&corev1.Namespace{}, "", tb.ns)
		Expect(ns.DeletionTimestamp).NotTo(BeNil(), "the namespace the operator created is deleted")
	})

	It("does not hang when the install namespace is already gone", func() {
		tb := newTestbed()
		tb.install("0.1.0")
		waitReady("0.1.0")
		tb.stopOp()

		By("the namespace is deleted and its contents are gone, as the namespace controller would")
		for _, list := range []client.ObjectList{&appsv1.DaemonSetList{}, &appsv1.DeploymentList{}, &corev1.PodList{}} {
			Expect(k8sClient.List(suiteCtx, list, client.InNamespace(tb.ns))).To(Succeed())
			items, _ := meta.ExtractList(list)
			for _, it := range items {
				Expect(client.IgnoreNotFound(k8sClient.Delete(suiteCtx, it.(client.Object), client.GracePeriodSeconds(0)))).To(Succeed())
			}
		}
		tb.stopClust()
		ns := getObj(&corev1.Namespace{}, "", tb.ns)
		Expect(k8sClient.Delete(suiteCtx, ns)).To(Succeed())
		ns = getObj(&corev1.Namespace{}, "", tb.ns)
		ns.Spec.Finalizers = nil
		_, err := clientset.CoreV1().Namespaces().Finalize(suiteCtx, ns, metav1.UpdateOptions{})
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() error { return k8sClient.Get(suiteCtx, client.ObjectKey{Name: tb.ns}, &corev1.Namespace{}) }).Should(Satisfy(apierrors.IsNotFound))

		Expect(k8sClient.Delete(suiteCtx, getMesh())).To(Succeed())
		tb.stopOp = startOperator(tb.clock)
		Eventually(func() error { return k8sClient.Get(suiteCtx, meshKey, &meshv1alpha1.AmbientMesh{}) }, 30*time.Second).Should(Satisfy(apierrors.IsNotFound))
		Eventually(func() error {
			return k8sClient.Get(suiteCtx, client.ObjectKey{Name: manifests.CNIName}, &rbacv1.ClusterRole{})
		}).
			Should(Satisfy(apierrors.IsNotFound), "cluster-scoped objects are removed too")
	})
})

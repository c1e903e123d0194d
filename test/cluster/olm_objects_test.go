package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	operatorsv1alpha1 "github.com/operator-framework/api/pkg/operators/v1alpha1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/yaml"

	"github.com/ambientmesh/ambient-operator/internal/testwait"
)

const (
	testBundleDir = "../../bundle"
	testNamespace = "olm-test-system"
)

// TestBundleObjects checks, without a cluster, that what the suite installs
// for the bundle is what OLM would: the CSV's RBAC and nothing more, webhooks
// that reach the operator's pods with a certificate they trust.
func TestBundleObjects(t *testing.T) {
	csv, err := readCSV(testBundleDir)
	if err != nil {
		t.Fatal(err)
	}
	serving, err := bundleServingCert(testBundleDir, testNamespace)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := bundleObjects(testBundleDir, testNamespace, serving)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("binds every permission rule of the CSV in exactly one role", func(t *testing.T) {
		checkPermissionsBound(t, csv, objs)
	})
	t.Run("leaves out a cluster permission rule removed from the CSV", func(t *testing.T) {
		testRemovedRuleIsMissing(t, serving)
	})
	t.Run("points every webhook at the generated Service with a CA that verifies its certificate", func(t *testing.T) {
		testWebhooksReachService(t, csv, objs)
	})
	t.Run("mounts the certificate where controller-runtime's webhook server reads it by default", func(t *testing.T) {
		testWebhookServerServesMountedCert(t, csv, objs, serving)
	})
	t.Run("mounts the certificate for generic API servers too, as OLM does", func(t *testing.T) {
		testAPIServiceCertMount(t, csv, objs)
	})
	t.Run("produces only what the CSV declares and the bundle's other objects", func(t *testing.T) {
		testOnlyDeclaredObjects(t, csv, objs)
	})
	t.Run("is stable for the same certificate", func(t *testing.T) {
		again, err := bundleObjects(testBundleDir, testNamespace, serving)
		if err != nil {
			t.Fatal(err)
		}
		if !equality.Semantic.DeepEqual(objs, again) {
			t.Error("two calls with the same certificate produced different objects")
		}
	})
	t.Run("rejects bundles OLM would not install", testRejectsInvalidBundles)
}

// boundRules maps each role bound to the service account to its rules, keyed
// by where the grant applies ("cluster" or the RoleBinding's namespace) and
// the role. Roles the bundle does not define (bootstrap roles) are left out.
func boundRules(objs []client.Object, account, namespace string) map[string][]rbacv1.PolicyRule {
	rules := map[string][]rbacv1.PolicyRule{}
	roleRules := func(kind, ns, name string) ([]rbacv1.PolicyRule, bool) {
		for _, obj := range objs {
			switch r := obj.(type) {
			case *rbacv1.Role:
				if kind == "Role" && r.Namespace == ns && r.Name == name {
					return r.Rules, true
				}
			case *rbacv1.ClusterRole:
				if kind == "ClusterRole" && r.Name == name {
					return r.Rules, true
				}
			}
		}
		return nil, false
	}
	subject := rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: account, Namespace: namespace}
	for _, obj := range objs {
		scope, ref, subjects := "", rbacv1.RoleRef{}, []rbacv1.Subject(nil)
		switch b := obj.(type) {
		case *rbacv1.RoleBinding:
			scope, ref, subjects = b.Namespace, b.RoleRef, b.Subjects
		case *rbacv1.ClusterRoleBinding:
			scope, ref, subjects = "cluster", b.RoleRef, b.Subjects
		default:
			continue
		}
		roleNS := ""
		if ref.Kind == "Role" {
			roleNS = scope
		}
		if r, ok := roleRules(ref.Kind, roleNS, ref.Name); ok && slices.Contains(subjects, subject) {
			rules[scope+": "+ref.Kind+"/"+ref.Name] = r
		}
	}
	return rules
}

// grantsOf lists the bound roles holding rule.
func grantsOf(bound map[string][]rbacv1.PolicyRule, rule rbacv1.PolicyRule) []string {
	var grants []string
	for key, rules := range bound {
		if slices.ContainsFunc(rules, func(r rbacv1.PolicyRule) bool { return equality.Semantic.DeepEqual(r, rule) }) {
			grants = append(grants, key)
		}
	}
	return grants
}

func checkPermissionsBound(t *testing.T, csv *operatorsv1alpha1.ClusterServiceVersion, objs []client.Object) {
	t.Helper()
	strategy := csv.Spec.InstallStrategy.StrategySpec
	for scope, perms := range map[string][]operatorsv1alpha1.StrategyDeploymentPermissions{testNamespace: strategy.Permissions, "cluster": strategy.ClusterPermissions} {
		for _, p := range perms {
			bound := boundRules(objs, p.ServiceAccountName, testNamespace)
			for _, rule := range p.Rules {
				grants := grantsOf(bound, rule)
				if len(grants) != 1 || !strings.HasPrefix(grants[0], scope+": ") {
					t.Errorf("%s rule %v of %s: granted by %v, want one role bound in %s", scope, rule, p.ServiceAccountName, grants, scope)
				}
			}
		}
	}
}

func testRemovedRuleIsMissing(t *testing.T, serving servingCert) {
	dir := copyBundle(t)
	var removed rbacv1.PolicyRule
	var account string
	editCSV(t, dir, func(csv *operatorsv1alpha1.ClusterServiceVersion) {
		p := &csv.Spec.InstallStrategy.StrategySpec.ClusterPermissions[0]
		i := slices.IndexFunc(p.Rules, func(r rbacv1.PolicyRule) bool { return slices.Contains(r.Resources, "nodes") })
		if i < 0 {
			t.Fatal("the CSV's first cluster permission has no rule for nodes")
		}
		removed, account = p.Rules[i], p.ServiceAccountName
		p.Rules = slices.Delete(p.Rules, i, i+1)
	})
	objs, err := bundleObjects(dir, testNamespace, serving)
	if err != nil {
		t.Fatal(err)
	}
	if grants := grantsOf(boundRules(objs, account, testNamespace), removed); len(grants) > 0 {
		t.Errorf("rule %v removed from the CSV is still granted by %v", removed, grants)
	}
	csv, err := readCSV(dir)
	if err != nil {
		t.Fatal(err)
	}
	checkPermissionsBound(t, csv, objs)
}

func testWebhooksReachService(t *testing.T, csv *operatorsv1alpha1.ClusterServiceVersion, objs []client.Object) {
	for _, desc := range csv.Spec.WebhookDefinitions {
		svc := find[*corev1.Service](t, objs, testNamespace, webhookServiceName(desc.DeploymentName))
		secret := find[*corev1.Secret](t, objs, testNamespace, svc.Name+"-cert")
		deployment := find[*appsv1.Deployment](t, objs, testNamespace, desc.DeploymentName)
		webhook := webhookFor(t, objs, desc)
		if want := expectedWebhook(desc); !equality.Semantic.DeepEqual(webhook.fields, want) {
			t.Errorf("webhook %s: got %+v, want the CSV's %+v", desc.GenerateName, webhook.fields, want)
		}
		ref := webhook.service
		if ref == nil || ref.Name != svc.Name || ref.Namespace != testNamespace || ref.Port == nil {
			t.Fatalf("webhook %s calls %+v, not Service %s/%s", desc.GenerateName, ref, testNamespace, svc.Name)
		}
		i := slices.IndexFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Port == *ref.Port })
		if i < 0 {
			t.Fatalf("webhook %s calls port %d, Service %s has %+v", desc.GenerateName, *ref.Port, svc.Name, svc.Spec.Ports)
		}
		if container, _ := containerServing(deployment, svc.Spec.Ports[i]); container == nil {
			t.Errorf("Service %s port %d forwards to %s, which no container of %s exposes", svc.Name, *ref.Port, svc.Spec.Ports[i].TargetPort.String(), deployment.Name)
		}
		if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(deployment.Spec.Template.Labels)) {
			t.Errorf("Service %s selects %v, the pods of %s are labelled %v", svc.Name, svc.Spec.Selector, deployment.Name, deployment.Spec.Template.Labels)
		}
		verifyServingCert(t, webhook.caBundle, secret.Data[corev1.TLSCertKey], svc.Name+"."+testNamespace+".svc")
	}
}

// webhookFields are the fields of a generated webhook the CSV decides
// (exported for equality.Semantic).
type webhookFields struct {
	Type                    operatorsv1alpha1.WebhookAdmissionType
	Rules                   []admissionregistrationv1.RuleWithOperations
	FailurePolicy           *admissionregistrationv1.FailurePolicyType
	MatchPolicy             *admissionregistrationv1.MatchPolicyType
	ObjectSelector          *metav1.LabelSelector
	SideEffects             *admissionregistrationv1.SideEffectClass
	TimeoutSeconds          *int32
	AdmissionReviewVersions []string
	Path                    *string
}

// generatedWebhook is a generated webhook: the fields the CSV decides, and
// where and with which CA the apiserver calls it.
type generatedWebhook struct {
	fields   webhookFields
	service  *admissionregistrationv1.ServiceReference
	caBundle []byte
}

func expectedWebhook(desc operatorsv1alpha1.WebhookDescription) webhookFields {
	return webhookFields{Type: desc.Type, Rules: desc.Rules, FailurePolicy: desc.FailurePolicy, MatchPolicy: desc.MatchPolicy,
		ObjectSelector: desc.ObjectSelector, SideEffects: desc.SideEffects, TimeoutSeconds: desc.TimeoutSeconds,
		AdmissionReviewVersions: desc.AdmissionReviewVersions, Path: desc.WebhookPath}
}

// webhookFor finds the one webhook generated for desc, by type and name.
func webhookFor(t *testing.T, objs []client.Object, desc operatorsv1alpha1.WebhookDescription) generatedWebhook {
	t.Helper()
	var found []generatedWebhook
	for _, obj := range objs {
		switch cfg := obj.(type) {
		case *admissionregistrationv1.ValidatingWebhookConfiguration:
			for _, w := range cfg.Webhooks {
				if w.Name == desc.GenerateName {
					found = append(found, generatedWebhook{webhookFields{operatorsv1alpha1.ValidatingAdmissionWebhook, w.Rules, w.FailurePolicy, w.MatchPolicy,
						w.ObjectSelector, w.SideEffects, w.TimeoutSeconds, w.AdmissionReviewVersions, servicePath(w.ClientConfig)}, w.ClientConfig.Service, w.ClientConfig.CABundle})
				}
			}
		case *admissionregistrationv1.MutatingWebhookConfiguration:
			for _, w := range cfg.Webhooks {
				if w.Name == desc.GenerateName {
					found = append(found, generatedWebhook{webhookFields{operatorsv1alpha1.MutatingAdmissionWebhook, w.Rules, w.FailurePolicy, w.MatchPolicy,
						w.ObjectSelector, w.SideEffects, w.TimeoutSeconds, w.AdmissionReviewVersions, servicePath(w.ClientConfig)}, w.ClientConfig.Service, w.ClientConfig.CABundle})
				}
			}
		}
	}
	if len(found) != 1 {
		t.Fatalf("webhook %s: %d generated, want 1", desc.GenerateName, len(found))
	}
	return found[0]
}

func servicePath(cc admissionregistrationv1.WebhookClientConfig) *string {
	if cc.Service == nil {
		return nil
	}
	return cc.Service.Path
}

func verifyServingCert(t *testing.T, caBundle, certPEM []byte, dnsName string) {
	t.Helper()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caBundle) {
		t.Fatalf("caBundle holds no certificate")
	}
	block, _ := pem.Decode(certPEM)
	if block == nil {
		t.Fatal("the Secret's tls.crt is not PEM")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: dnsName, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Errorf("the caBundle does not verify the Secret's certificate for %s: %v", dnsName, err)
	}
}

// containerServing is the container of d exposing the Service port's
// target, by number or name, and that port's number.
func containerServing(d *appsv1.Deployment, port corev1.ServicePort) (*corev1.Container, int32) {
	for i, c := range d.Spec.Template.Spec.Containers {
		for _, p := range c.Ports {
			if (port.TargetPort.IntVal != 0 && p.ContainerPort == port.TargetPort.IntVal) || (port.TargetPort.StrVal != "" && p.Name == port.TargetPort.StrVal) {
				return &d.Spec.Template.Spec.Containers[i], p.ContainerPort
			}
		}
	}
	return nil, 0
}

// testWebhookServerServesMountedCert lays out the Secret's files under a
// temporary directory as the kubelet would inside the container (its /tmp
// becomes TMPDIR here), starts controller-runtime's webhook server with its
// default options, and checks it serves the Secret's certificate, trusted
// by the webhooks' caBundle for the Service's name.
func testWebhookServerServesMountedCert(t *testing.T, csv *operatorsv1alpha1.ClusterServiceVersion, objs []client.Object, serving servingCert) {
	desc := csv.Spec.WebhookDefinitions[0]
	svc := find[*corev1.Service](t, objs, testNamespace, webhookServiceName(desc.DeploymentName))
	deployment := find[*appsv1.Deployment](t, objs, testNamespace, desc.DeploymentName)
	container, _ := containerServing(deployment, svc.Spec.Ports[0])
	if container == nil {
		t.Fatalf("no container of %s serves Service %s", deployment.Name, svc.Name)
	}
	hostTmp := t.TempDir()
	t.Setenv("TMPDIR", hostTmp)
	materializeMounts(t, objs, deployment.Spec.Template.Spec, container, containerTempDir(container), hostTmp)

	port := freePort(t)
	server := ctrlwebhook.NewServer(ctrlwebhook.Options{Host: "127.0.0.1", Port: port})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- server.Start(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(serving.caPEM)
	host := svc.Name + "." + testNamespace + ".svc"
	err := testwait.Until(10*time.Second, func() error {
		select {
		case err := <-done:
			done <- err
			return fmt.Errorf("webhook server stopped: %w", err)
		default:
		}
		conn, err := tls.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), &tls.Config{RootCAs: roots, ServerName: host, MinVersion: tls.VersionTLS12})
		if err != nil {
			return err
		}
		return conn.Close()
	})
	if err != nil {
		t.Fatalf("controller-runtime's webhook server with default options does not serve the mounted certificate for %s: %v", host, err)
	}
}

// containerTempDir is os.TempDir() inside the container.
func containerTempDir(c *corev1.Container) string {
	for _, env := range c.Env {
		if env.Name == "TMPDIR" && env.Value != "" {
			return env.Value
		}
	}
	return "/tmp"
}

// materializeMounts writes, for each Secret volume the container mounts
// under containerTmp, the Secret's projected files to the same place under
// hostTmp.
func materializeMounts(t *testing.T, objs []client.Object, pod corev1.PodSpec, c *corev1.Container, containerTmp, hostTmp string) {
	t.Helper()
	for _, m := range c.VolumeMounts {
		rel, err := filepath.Rel(containerTmp, m.MountPath)
		if err != nil || strings.HasPrefix(rel, "..") {
			continue
		}
		i := slices.IndexFunc(pod.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name })
		if i < 0 || pod.Volumes[i].Secret == nil {
			continue
		}
		source := pod.Volumes[i].Secret
		secret := find[*corev1.Secret](t, objs, testNamespace, source.SecretName)
		dir := filepath.Join(hostTmp, rel)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		for _, item := range secretItems(source, secret) {
			if err := os.WriteFile(filepath.Join(dir, item.Path), secret.Data[item.Key], 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// secretItems are the files a Secret volume projects: its items, or every
// key under its own name.
func secretItems(source *corev1.SecretVolumeSource, secret *corev1.Secret) []corev1.KeyToPath {
	if len(source.Items) > 0 {
		return source.Items
	}
	var items []corev1.KeyToPath
	for key := range secret.Data {
		items = append(items, corev1.KeyToPath{Key: key, Path: key})
	}
	return items
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func testAPIServiceCertMount(t *testing.T, csv *operatorsv1alpha1.ClusterServiceVersion, objs []client.Object) {
	desc := csv.Spec.WebhookDefinitions[0]
	deployment := find[*appsv1.Deployment](t, objs, testNamespace, desc.DeploymentName)
	secretName := webhookServiceName(desc.DeploymentName) + "-cert"
	pod := deployment.Spec.Template.Spec
	i := slices.IndexFunc(pod.Volumes, func(v corev1.Volume) bool {
		return v.Secret != nil && v.Secret.SecretName == secretName && len(v.Secret.Items) == 2 && v.Secret.Items[0].Path == "apiserver.crt"
	})
	if i < 0 {
		t.Fatalf("no volume projects %s as apiserver.crt/apiserver.key: %+v", secretName, pod.Volumes)
	}
	want := []corev1.KeyToPath{{Key: corev1.TLSCertKey, Path: "apiserver.crt"}, {Key: corev1.TLSPrivateKeyKey, Path: "apiserver.key"}}
	if !reflect.DeepEqual(pod.Volumes[i].Secret.Items, want) {
		t.Errorf("volume %s projects %+v, want %+v", pod.Volumes[i].Name, pod.Volumes[i].Secret.Items, want)
	}
	for _, c := range pod.Containers {
		if !slices.Contains(c.VolumeMounts, corev1.VolumeMount{Name: pod.Volumes[i].Name, MountPath: olmAPIServiceCertDir}) {
			t.Errorf("container %s does not mount %s at %s", c.Name, pod.Volumes[i].Name, olmAPIServiceCertDir)
		}
	}
	if deployment.Spec.Template.Annotations[olmCAHashAnnotation] == "" {
		t.Errorf("pod template has no %s annotation", olmCAHashAnnotation)
	}
}

// testOnlyDeclaredObjects takes inventory: every object is either one of the
// bundle's own manifests or derived from the CSV (labelled with it), and the
// derived ones are exactly what the CSV's sections call for.
func testOnlyDeclaredObjects(t *testing.T, csv *operatorsv1alpha1.ClusterServiceVersion, objs []client.Object) {
	manifests, err := readBundleManifests(testBundleDir)
	if err != nil {
		t.Fatal(err)
	}
	fromBundle := map[string]bool{}
	for _, m := range manifests {
		fromBundle[m.GetKind()+"/"+m.GetName()] = true
	}
	derived := map[string][]string{}
	for _, obj := range objs {
		kind := obj.GetObjectKind().GroupVersionKind().Kind
		switch {
		case fromBundle[kind+"/"+obj.GetName()]:
			delete(fromBundle, kind+"/"+obj.GetName())
		case obj.GetLabels()[olmOwnerLabel] == csv.Name:
			derived[kind] = append(derived[kind], obj.GetNamespace()+"/"+obj.GetName())
		default:
			t.Errorf("%s %s/%s is neither a bundle manifest nor derived from the CSV", kind, obj.GetNamespace(), obj.GetName())
		}
	}
	if len(fromBundle) > 0 {
		t.Errorf("bundle manifests not installed: %v", fromBundle)
	}
	want := expectedDerivedCounts(csv)
	got := map[string]int{}
	for kind, names := range derived {
		got[kind] = len(names)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("objects derived from the CSV by kind: got %v, want %v\n%v", got, want, derived)
	}
	if !slices.Equal(derived["ServiceAccount"], []string{testNamespace + "/" + csv.Spec.InstallStrategy.StrategySpec.DeploymentSpecs[0].Spec.Template.Spec.ServiceAccountName}) {
		t.Errorf("service accounts %v, want the deployment's", derived["ServiceAccount"])
	}
}

// expectedDerivedCounts counts what OLM derives from this CSV, section by
// section (our CSV: one account, webhooks served by one deployment).
func expectedDerivedCounts(csv *operatorsv1alpha1.ClusterServiceVersion) map[string]int {
	s := csv.Spec.InstallStrategy.StrategySpec
	want := map[string]int{
		"ServiceAccount": 1,
		"Role":           len(s.Permissions) + 1, // + read the certificate Secret
		"RoleBinding":    len(s.Permissions) + 2, // + the Secret's, + auth-reader in kube-system
		"ClusterRole":    len(s.ClusterPermissions),
		// + system:auth-delegator for the webhook deployment
		"ClusterRoleBinding": len(s.ClusterPermissions) + 1,
		"Deployment":         len(s.DeploymentSpecs),
		"Service":            1,
		"Secret":             1,
	}
	for _, desc := range csv.Spec.WebhookDefinitions {
		switch desc.Type {
		case operatorsv1alpha1.ValidatingAdmissionWebhook:
			want["ValidatingWebhookConfiguration"]++
		case operatorsv1alpha1.MutatingAdmissionWebhook:
			want["MutatingWebhookConfiguration"]++
		}
	}
	return want
}

func testRejectsInvalidBundles(t *testing.T) {
	for name, tc := range map[string]struct {
		edit func(t *testing.T, dir string)
		want string
	}{
		"a CRD the CSV does not own": {func(t *testing.T, dir string) {
			writeManifest(t, dir, "extra.yaml", &apiextensionsv1.CustomResourceDefinition{
				TypeMeta:   metaType("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
				ObjectMeta: objectMeta("extras.mesh.ambientmesh.dev", "", nil)})
		}, "extras.mesh.ambientmesh.dev is not owned"},
		"an owned CRD without its manifest": {func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, "manifests", "mesh.ambientmesh.dev_waypoints.yaml")); err != nil {
				t.Fatal(err)
			}
		}, "no manifest for it"},
		"a kind OLM does not install from a bundle": {func(t *testing.T, dir string) {
			writeManifest(t, dir, "deployment.yaml", &appsv1.Deployment{TypeMeta: metaType("apps/v1", "Deployment"), ObjectMeta: objectMeta("extra", "", nil)})
		}, "does not install kind Deployment"},
		"a webhook of a deployment the strategy lacks": {func(t *testing.T, dir string) {
			editCSV(t, dir, func(csv *operatorsv1alpha1.ClusterServiceVersion) {
				csv.Spec.WebhookDefinitions[0].DeploymentName = "elsewhere"
			})
		}, `deployment "elsewhere" is not in the install strategy`},
	} {
		t.Run(name, func(t *testing.T) {
			dir := copyBundle(t)
			tc.edit(t, dir)
			_, err := bundleObjects(dir, testNamespace, servingCert{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("bundleObjects: %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

func find[T client.Object](t *testing.T, objs []client.Object, namespace, name string) T {
	t.Helper()
	for _, obj := range objs {
		if typed, ok := obj.(T); ok && obj.GetNamespace() == namespace && obj.GetName() == name {
			return typed
		}
	}
	var zero T
	t.Fatalf("no %T %s/%s among the bundle's objects", zero, namespace, name)
	return zero
}

// copyBundle copies the bundle's manifests into a scratch bundle directory.
func copyBundle(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.CopyFS(filepath.Join(dir, "manifests"), os.DirFS(filepath.Join(testBundleDir, "manifests"))); err != nil {
		t.Fatal(err)
	}
	return dir
}

func editCSV(t *testing.T, dir string, edit func(*operatorsv1alpha1.ClusterServiceVersion)) {
	t.Helper()
	csv, err := readCSV(dir)
	if err != nil {
		t.Fatal(err)
	}
	edit(csv)
	writeManifest(t, dir, bundleCSVFile, csv)
}

func writeManifest(t *testing.T, dir, file string, obj any) {
	t.Helper()
	data, err := yaml.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "manifests", file), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func metaType(apiVersion, kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: apiVersion, Kind: kind}
}

// TestInstallBundle runs installBundle and uninstallBundle against a fake
// API server whose CRDs become Established when first read (the
// apiextensions controller's part): the namespace first, then the CRDs,
// which are waited for before anything else is applied, then every other
// object; and on uninstall, everything gone.
func TestInstallBundle(t *testing.T) {
	var applied []string
	crdsApplied, establishedSeen := 0, map[string]bool{}
	c := fake.NewClientBuilder().WithScheme(olmScheme).WithInterceptorFuncs(interceptor.Funcs{
		Apply: func(ctx context.Context, c client.WithWatch, obj runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
			u := appliedObject(t, obj)
			applied = append(applied, u.GetKind()+"/"+u.GetName())
			switch u.GetKind() {
			case "CustomResourceDefinition":
				crdsApplied++
			case "Namespace":
			default:
				if len(establishedSeen) < crdsApplied || crdsApplied == 0 {
					t.Errorf("%s %s applied before the CRDs were Established", u.GetKind(), u.GetName())
				}
			}
			return c.Apply(ctx, obj, opts...)
		},
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if err := c.Get(ctx, key, obj, opts...); err != nil {
				return err
			}
			if crd, ok := obj.(*apiextensionsv1.CustomResourceDefinition); ok {
				crd.Status.Conditions = []apiextensionsv1.CustomResourceDefinitionCondition{{Type: apiextensionsv1.Established, Status: apiextensionsv1.ConditionTrue}}
				establishedSeen[crd.Name] = true
			}
			return nil
		},
	}).Build()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	if err := installBundle(ctx, c, testBundleDir, testNamespace); err != nil {
		t.Fatal(err)
	}
	objs, err := bundleObjects(testBundleDir, testNamespace, servingCert{})
	if err != nil {
		t.Fatal(err)
	}
	if len(applied) != len(objs)+1 || applied[0] != "Namespace/"+testNamespace {
		t.Errorf("applied %v, want the namespace and the %d bundle objects", applied, len(objs))
	}
	for _, obj := range objs {
		if err := c.Get(ctx, client.ObjectKeyFromObject(obj), obj.DeepCopyObject().(client.Object)); err != nil {
			t.Errorf("%T %s not installed: %v", obj, client.ObjectKeyFromObject(obj), err)
		}
	}
	crds, _ := splitCRDs(objs)
	if len(establishedSeen) != len(crds) {
		t.Errorf("waited for %d CRDs to be Established, the bundle has %d", len(establishedSeen), len(crds))
	}

	if err := uninstallBundle(ctx, c, testBundleDir, testNamespace); err != nil {
		t.Fatal(err)
	}
	for _, obj := range append(objs, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNamespace}}) {
		if err := c.Get(ctx, client.ObjectKeyFromObject(obj), obj.DeepCopyObject().(client.Object)); !apierrors.IsNotFound(err) {
			t.Errorf("%T %s after uninstall: %v", obj, client.ObjectKeyFromObject(obj), err)
		}
	}
}

func appliedObject(t *testing.T, obj runtime.ApplyConfiguration) *unstructured.Unstructured {
	t.Helper()
	data, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(data); err != nil {
		t.Fatal(err)
	}
	return u
}

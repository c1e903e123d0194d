package cluster

// OLM and opm cannot be built here, so the suite installs the bundle the way
// OLM v0 would, from the same files and with nothing of its own: what the
// CSV's install strategy declares (service accounts, roles, deployments),
// what OLM derives from its webhook definitions (a Service, a serving
// certificate, the webhook configurations), the CRDs it owns, and the other
// objects of the bundle. A rule missing from the CSV is then missing on the
// cluster, as it would be under OLM.
//
// Where the objects come from, in OLM:
//   - the catalog operator turns a bundle into InstallPlan steps: every
//     object of bundle/manifests except the CSV (the CRDs, and the extra
//     ClusterRoles and the metrics Service, which OLM applies as they are,
//     namespaced kinds in the install namespace), plus a ServiceAccount,
//     Role/RoleBinding per `permissions` entry and ClusterRole/
//     ClusterRoleBinding per `clusterPermissions` entry;
//   - the olm operator runs the install strategy: the Deployments, and for
//     the webhook definitions of a deployment a Service
//     `<deployment>-service`, a Secret `<service>-cert` signed by a CA it
//     generates, access to that Secret, the auth-delegator and
//     auth-reader bindings, the certificate mounted into the pods, and the
//     webhook configurations (or a CRD's conversion) carrying the CA.
// Our code follows that behaviour; it is written from OLM's documented and
// observable behaviour, not copied.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	operatorsv1alpha1 "github.com/operator-framework/api/pkg/operators/v1alpha1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilrand "k8s.io/apimachinery/pkg/util/rand"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/yaml"

	"github.com/ambientmesh/ambient-operator/internal/applyobj"
	"github.com/ambientmesh/ambient-operator/internal/meshscheme"
	"github.com/ambientmesh/ambient-operator/internal/testwait"
)

const (
	bundleCSVFile = "ambient-operator.clusterserviceversion.yaml"

	// Where OLM mounts a webhook deployment's serving certificate: the
	// directory controller-runtime's webhook server reads tls.crt and
	// tls.key from by default, and the one generic API servers read
	// apiserver.crt and apiserver.key from.
	olmWebhookCertDir    = "/tmp/k8s-webhook-server/serving-certs"
	olmAPIServiceCertDir = "/apiserver.local.config/certificates"

	// OLM's names: the CA's hash on the Secret and the pod template (a new
	// CA rolls the pods), the CA itself in the Secret, the labels that tie
	// generated objects to their CSV and webhook description.
	olmCAHashAnnotation = "olmcahash"
	olmCAKey            = "olmCAKey"
	olmOwnerLabel       = "olm.owner"
	olmOwnerKindLabel   = "olm.owner.kind"
	olmOwnerNSLabel     = "olm.owner.namespace"
	olmWebhookDescLabel = "olm.webhook-description-generate-name"
	olmWebhookHashLabel = "olm.webhook-description-hash"

	// OLM's default for a webhook definition without containerPort (the
	// CSV CRD defaults it; we read the file, not the stored object).
	olmDefaultWebhookPort = 443

	olmFieldOwner    = "olm-bundle-installer"
	olmWaitTimeout   = 3 * time.Minute
	olmCertValidity  = 365 * 24 * time.Hour
	olmMaxNameLength = 63
)

// olmScheme types the bundle's objects; it knows CRDs (apiextensions) too.
var olmScheme = meshscheme.New()

// olmBundleKinds are the kinds besides the CSV and CRDs a registry+v1 bundle
// may carry (operator-registry's supported list), and whether each is
// namespaced. OLM installs them as they are; any other kind makes the
// bundle invalid.
var olmBundleKinds = map[string]bool{
	"ClusterRole": false, "ClusterRoleBinding": false, "PriorityClass": false,
	"VerticalPodAutoscaler": false, "ConsoleYAMLSample": false,
	"Service": true, "ServiceAccount": true, "Role": true, "RoleBinding": true,
	"Secret": true, "ConfigMap": true, "PodDisruptionBudget": true,
	"PrometheusRule": true, "ServiceMonitor": true,
}

// servingCert is a webhook Service's serving certificate and the CA that
// signed it, PEM-encoded.
type servingCert struct{ caPEM, certPEM, keyPEM []byte }

// newServingCert creates a CA and a certificate it signs for host, a
// Service's `<svc>.<ns>.svc` (the name the apiserver verifies), also valid
// for `<svc>.<ns>` and `<svc>.<ns>.svc.cluster.local`. Keys are ECDSA P-256.
func newServingCert(host string) (servingCert, error) {
	if !strings.HasSuffix(host, ".svc") {
		return servingCert{}, fmt.Errorf("serving certificate host %q is not <service>.<namespace>.svc", host)
	}
	caKey, caCert, caDER, err := newCA()
	if err != nil {
		return servingCert{}, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return servingCert{}, err
	}
	template, err := certTemplate(host)
	if err != nil {
		return servingCert{}, err
	}
	template.DNSNames = []string{strings.TrimSuffix(host, ".svc"), host, host + ".cluster.local"}
	template.KeyUsage = x509.KeyUsageDigitalSignature
	template.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	der, err := x509.CreateCertificate(rand.Reader, template, caCert, &key.PublicKey, caKey)
	if err != nil {
		return servingCert{}, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return servingCert{}, err
	}
	return servingCert{caPEM: pemCert(caDER), certPEM: pemCert(der), keyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})}, nil
}

func newCA() (*ecdsa.PrivateKey, *x509.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	template, err := certTemplate("olm-bundle-installer webhook CA")
	if err != nil {
		return nil, nil, nil, err
	}
	template.IsCA = true
	template.BasicConstraintsValid = true
	template.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		return nil, nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return key, cert, der, err
}

func certTemplate(commonName string) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	// Backdated a little: the apiserver's clock and ours may differ.
	return &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: commonName},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(olmCertValidity)}, nil
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// installBundle installs the bundle in bundleDir into namespace as OLM
// would with an AllNamespaces OperatorGroup: the namespace, the CRDs
// (waiting until they are Established), then everything else, by
// server-side apply.
func installBundle(ctx context.Context, c client.Client, bundleDir, namespace string) error {
	serving, err := bundleServingCert(bundleDir, namespace)
	if err != nil {
		return err
	}
	objs, err := bundleObjects(bundleDir, namespace, serving)
	if err != nil {
		return err
	}
	ns := &corev1.Namespace{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"}, ObjectMeta: metav1.ObjectMeta{Name: namespace}}
	if err := olmApply(ctx, c, ns); err != nil {
		return err
	}
	crds, rest := splitCRDs(objs)
	for _, crd := range crds {
		if err := olmApply(ctx, c, crd); err != nil {
			return err
		}
	}
	for _, crd := range crds {
		if err := waitEstablished(ctx, c, crd.GetName()); err != nil {
			return err
		}
	}
	for _, obj := range rest {
		if err := olmApply(ctx, c, obj); err != nil {
			return err
		}
	}
	return nil
}

// uninstallBundle deletes what installBundle created and waits until it is
// gone, the namespace last. OLM itself leaves CRDs (and so the custom
// resources) behind on uninstall; the suite removes them to leave the
// cluster clean, and first, while the operator still runs to release its
// finalizers and serve its webhooks.
func uninstallBundle(ctx context.Context, c client.Client, bundleDir, namespace string) error {
	objs, err := bundleObjects(bundleDir, namespace, servingCert{})
	if err != nil {
		return err
	}
	crds, rest := splitCRDs(objs)
	slices.Reverse(rest)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}
	for _, group := range [][]client.Object{crds, rest, {ns}} {
		if err := deleteAndWait(ctx, c, group); err != nil {
			return err
		}
	}
	return nil
}

// bundleServingCert creates the serving certificate for the webhook Service
// of the bundle's CSV, or none when it declares no webhooks.
func bundleServingCert(bundleDir, namespace string) (servingCert, error) {
	csv, err := readCSV(bundleDir)
	if err != nil {
		return servingCert{}, err
	}
	var deployments []string
	for _, desc := range csv.Spec.WebhookDefinitions {
		if !slices.Contains(deployments, desc.DeploymentName) {
			deployments = append(deployments, desc.DeploymentName)
		}
	}
	switch len(deployments) {
	case 0:
		return servingCert{}, nil
	case 1:
		return newServingCert(webhookServiceName(deployments[0]) + "." + namespace + ".svc")
	default:
		return servingCert{}, fmt.Errorf("webhooks served by %d deployments %v: one serving certificate covers one", len(deployments), deployments)
	}
}

func olmApply(ctx context.Context, c client.Client, obj client.Object) error {
	u, err := applyobj.From(obj)
	if err != nil {
		return err
	}
	if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(olmFieldOwner), client.ForceOwnership); err != nil {
		return fmt.Errorf("apply %s %s: %w", u.GetKind(), client.ObjectKeyFromObject(obj), err)
	}
	return nil
}

func waitEstablished(ctx context.Context, c client.Client, name string) error {
	err := testwait.UntilContext(ctx, olmWaitTimeout, func() error {
		var crd apiextensionsv1.CustomResourceDefinition
		if err := c.Get(ctx, client.ObjectKey{Name: name}, &crd); err != nil {
			return err
		}
		for _, cond := range crd.Status.Conditions {
			if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
				return nil
			}
		}
		return errors.New("no Established=True condition")
	})
	if err != nil {
		return fmt.Errorf("CRD %s not Established: %w", name, err)
	}
	return nil
}

// deleteAndWait deletes objs and waits until none of them exists.
func deleteAndWait(ctx context.Context, c client.Client, objs []client.Object) error {
	for _, obj := range objs {
		if err := c.Delete(ctx, obj); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("delete %T %s: %w", obj, client.ObjectKeyFromObject(obj), err)
		}
	}
	for _, obj := range objs {
		err := testwait.UntilContext(ctx, olmWaitTimeout, func() error {
			err := c.Get(ctx, client.ObjectKeyFromObject(obj), obj.DeepCopyObject().(client.Object))
			switch {
			case apierrors.IsNotFound(err):
				return nil
			case err == nil:
				return errors.New("found")
			default:
				return err
			}
		})
		if err != nil {
			return fmt.Errorf("%T %s still there: %w", obj, client.ObjectKeyFromObject(obj), err)
		}
	}
	return nil
}

func splitCRDs(objs []client.Object) (crds, rest []client.Object) {
	for _, obj := range objs {
		if _, ok := obj.(*apiextensionsv1.CustomResourceDefinition); ok {
			crds = append(crds, obj)
		} else {
			rest = append(rest, obj)
		}
	}
	return crds, rest
}

// bundleObjects returns what OLM would create for the bundle in bundleDir
// installed into namespace, in the order to apply them: the owned CRDs, the
// service accounts and RBAC of the install strategy, the bundle's other
// objects, the webhook Service with its certificate Secret and access to
// it, the Deployments, and last the webhook configurations. serving is the
// webhook Service's certificate (newServingCert). It reads files only.
func bundleObjects(bundleDir, namespace string, serving servingCert) ([]client.Object, error) {
	csv, err := readCSV(bundleDir)
	if err != nil {
		return nil, err
	}
	if err := checkInstallable(csv); err != nil {
		return nil, err
	}
	manifests, err := readBundleManifests(bundleDir)
	if err != nil {
		return nil, err
	}
	crds, extras, err := splitBundleManifests(csv, manifests, namespace)
	if err != nil {
		return nil, err
	}
	deployments := strategyDeployments(csv, namespace)
	webhooks, err := webhookObjects(csv, namespace, serving, deployments, crds)
	if err != nil {
		return nil, err
	}
	var objs []client.Object
	for _, crd := range crds {
		objs = append(objs, crd)
	}
	objs = append(objs, permissionObjects(csv, namespace)...)
	objs = append(objs, extras...)
	objs = append(objs, webhooks.support...)
	for _, d := range deployments {
		objs = append(objs, d)
	}
	objs = append(objs, webhooks.configurations...)
	return objs, setKinds(objs)
}

func readCSV(bundleDir string) (*operatorsv1alpha1.ClusterServiceVersion, error) {
	data, err := os.ReadFile(filepath.Join(bundleDir, "manifests", bundleCSVFile))
	if err != nil {
		return nil, err
	}
	var csv operatorsv1alpha1.ClusterServiceVersion
	if err := yaml.UnmarshalStrict(data, &csv); err != nil {
		return nil, fmt.Errorf("%s: %w", bundleCSVFile, err)
	}
	return &csv, nil
}

// checkInstallable refuses what this installer does not do, rather than
// install less than OLM would: another install strategy, owned
// APIServices, or a CSV OLM would not install with an AllNamespaces
// OperatorGroup.
func checkInstallable(csv *operatorsv1alpha1.ClusterServiceVersion) error {
	if csv.Spec.InstallStrategy.StrategyName != operatorsv1alpha1.InstallStrategyNameDeployment {
		return fmt.Errorf("install strategy %q: only %q is supported", csv.Spec.InstallStrategy.StrategyName, operatorsv1alpha1.InstallStrategyNameDeployment)
	}
	if len(csv.Spec.APIServiceDefinitions.Owned) > 0 {
		return errors.New("owned APIServices are not supported by this installer")
	}
	for _, mode := range csv.Spec.InstallModes {
		if mode.Type == operatorsv1alpha1.InstallModeTypeAllNamespaces && mode.Supported {
			return nil
		}
	}
	return errors.New("the CSV does not support the AllNamespaces install mode")
}

// readBundleManifests decodes every manifest of the bundle except the CSV.
func readBundleManifests(bundleDir string) ([]*unstructured.Unstructured, error) {
	dir := filepath.Join(bundleDir, "manifests")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var objs []*unstructured.Unstructured
	for _, entry := range entries {
		if entry.IsDir() || entry.Name() == bundleCSVFile {
			continue
		}
		decoded, err := decodeManifestFile(filepath.Join(dir, entry.Name()))
		if err != nil {
			return nil, err
		}
		objs = append(objs, decoded...)
	}
	return objs, nil
}

func decodeManifestFile(path string) ([]*unstructured.Unstructured, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	dec := utilyaml.NewYAMLOrJSONDecoder(f, 4096)
	var objs []*unstructured.Unstructured
	for {
		u := &unstructured.Unstructured{}
		err := dec.Decode(&u.Object)
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if len(u.Object) > 0 {
			objs = append(objs, u)
		}
	}
}

// splitBundleManifests types the bundle's objects: the CRDs the CSV owns,
// and the other objects of kinds OLM installs from a bundle, namespaced ones
// moved into namespace. An owned CRD without a file, a CRD the CSV does
// not own, or another kind make the bundle invalid (the bundle validator
// rejects them), so they are errors here too.
func splitBundleManifests(csv *operatorsv1alpha1.ClusterServiceVersion, manifests []*unstructured.Unstructured, namespace string) ([]*apiextensionsv1.CustomResourceDefinition, []client.Object, error) {
	owned := map[string]bool{}
	for _, desc := range csv.Spec.CustomResourceDefinitions.Owned {
		owned[desc.Name] = false
	}
	var crds []*apiextensionsv1.CustomResourceDefinition
	var extras []client.Object
	for _, u := range manifests {
		kind := u.GetKind()
		if kind == "CustomResourceDefinition" {
			crd, err := ownedCRD(u, owned)
			if err != nil {
				return nil, nil, err
			}
			crds = append(crds, crd)
			continue
		}
		namespaced, supported := olmBundleKinds[kind]
		if !supported {
			return nil, nil, fmt.Errorf("bundle object %s %s: OLM does not install kind %s from a bundle", kind, u.GetName(), kind)
		}
		if namespaced {
			u.SetNamespace(namespace)
		}
		obj, err := typedObject(u)
		if err != nil {
			return nil, nil, err
		}
		extras = append(extras, obj)
	}
	for name, found := range owned {
		if !found {
			return nil, nil, fmt.Errorf("the CSV owns CRD %s but the bundle has no manifest for it", name)
		}
	}
	return crds, extras, nil
}

func ownedCRD(u *unstructured.Unstructured, owned map[string]bool) (*apiextensionsv1.CustomResourceDefinition, error) {
	if _, ok := owned[u.GetName()]; !ok {
		return nil, fmt.Errorf("bundle CRD %s is not owned by the CSV", u.GetName())
	}
	if u.GetAPIVersion() != apiextensionsv1.SchemeGroupVersion.String() {
		return nil, fmt.Errorf("CRD %s is %s, not %s", u.GetName(), u.GetAPIVersion(), apiextensionsv1.SchemeGroupVersion)
	}
	owned[u.GetName()] = true
	var crd apiextensionsv1.CustomResourceDefinition
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &crd); err != nil {
		return nil, fmt.Errorf("CRD %s: %w", u.GetName(), err)
	}
	return &crd, nil
}

// typedObject converts u to its Go type when the scheme knows it, so the
// suite and the tests can read it; other kinds stay unstructured.
func typedObject(u *unstructured.Unstructured) (client.Object, error) {
	obj, err := olmScheme.New(u.GroupVersionKind())
	if runtime.IsNotRegisteredError(err) {
		return u, nil
	}
	if err != nil {
		return nil, err
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, obj); err != nil {
		return nil, fmt.Errorf("%s %s: %w", u.GetKind(), u.GetName(), err)
	}
	return obj.(client.Object), nil
}

// permissionObjects is the RBAC OLM creates for the install strategy: a
// ServiceAccount per account named, a Role and RoleBinding in namespace per
// `permissions` entry, a ClusterRole and ClusterRoleBinding per
// `clusterPermissions` entry. Names are OLM's: the CSV's name and a hash of
// the entry, so they are stable for a given CSV.
func permissionObjects(csv *operatorsv1alpha1.ClusterServiceVersion, namespace string) []client.Object {
	strategy := csv.Spec.InstallStrategy.StrategySpec
	labels := ownerLabels(csv, namespace)
	var accounts, roles, bindings []client.Object
	addAccount := func(name string) {
		// OLM does not create (or own) the namespace's default account.
		if name == "default" || slices.ContainsFunc(accounts, func(o client.Object) bool { return o.GetName() == name }) {
			return
		}
		accounts = append(accounts, &corev1.ServiceAccount{ObjectMeta: objectMeta(name, namespace, labels)})
	}
	for _, p := range strategy.Permissions {
		addAccount(p.ServiceAccountName)
		name := hashedName(csv.Name+"-"+p.ServiceAccountName, csv.Name, p)
		roles = append(roles, &rbacv1.Role{ObjectMeta: objectMeta(name, namespace, labels), Rules: p.Rules})
		bindings = append(bindings, &rbacv1.RoleBinding{ObjectMeta: objectMeta(name, namespace, labels),
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name}, Subjects: accountSubject(p.ServiceAccountName, namespace)})
	}
	for _, p := range strategy.ClusterPermissions {
		addAccount(p.ServiceAccountName)
		name := hashedName(csv.Name, csv.Name, namespace, p)
		roles = append(roles, &rbacv1.ClusterRole{ObjectMeta: objectMeta(name, "", labels), Rules: p.Rules})
		bindings = append(bindings, &rbacv1.ClusterRoleBinding{ObjectMeta: objectMeta(name, "", labels),
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name}, Subjects: accountSubject(p.ServiceAccountName, namespace)})
	}
	return slices.Concat(accounts, roles, bindings)
}

// strategyDeployments are the install strategy's Deployments as OLM creates
// them: the declared name, labels and spec in namespace, with what OLM
// itself adds to every one (the OPERATOR_CONDITION_NAME variable, one old
// ReplicaSet kept). OLM also copies OperatorGroup annotations into the pod
// template; our operator reads none of them, so they are left out.
func strategyDeployments(csv *operatorsv1alpha1.ClusterServiceVersion, namespace string) []*appsv1.Deployment {
	var deployments []*appsv1.Deployment
	for _, spec := range csv.Spec.InstallStrategy.StrategySpec.DeploymentSpecs {
		labels := ownerLabels(csv, namespace)
		for k, v := range spec.Label {
			labels[k] = v
		}
		d := &appsv1.Deployment{ObjectMeta: objectMeta(spec.Name, namespace, labels), Spec: *spec.Spec.DeepCopy()}
		d.Spec.RevisionHistoryLimit = ptr.To[int32](1)
		for i := range d.Spec.Template.Spec.Containers {
			setEnv(&d.Spec.Template.Spec.Containers[i], corev1.EnvVar{Name: "OPERATOR_CONDITION_NAME", Value: csv.Name})
		}
		deployments = append(deployments, d)
	}
	return deployments
}

func setEnv(c *corev1.Container, v corev1.EnvVar) {
	for i := range c.Env {
		if c.Env[i].Name == v.Name {
			c.Env[i] = v
			return
		}
	}
	c.Env = append(c.Env, v)
}

// webhookResources is what OLM derives from the CSV's webhook definitions:
// support (Secret, its RBAC, Service) applied before the Deployments, and
// the configurations applied after them.
type webhookResources struct{ support, configurations []client.Object }

// webhookObjects builds, for every deployment that serves webhooks, OLM's
// Service, certificate Secret and RBAC, and mounts the certificate into the
// deployment; then one webhook configuration per definition (or, for a
// conversion webhook, the owned CRDs' conversion).
func webhookObjects(csv *operatorsv1alpha1.ClusterServiceVersion, namespace string, serving servingCert, deployments []*appsv1.Deployment, crds []*apiextensionsv1.CustomResourceDefinition) (webhookResources, error) {
	var res webhookResources
	descs := make([]operatorsv1alpha1.WebhookDescription, len(csv.Spec.WebhookDefinitions))
	for i, desc := range csv.Spec.WebhookDefinitions {
		descs[i] = *desc.DeepCopy()
		if descs[i].ContainerPort == 0 {
			descs[i].ContainerPort = olmDefaultWebhookPort
		}
		if !slices.ContainsFunc(deployments, func(d *appsv1.Deployment) bool { return d.Name == desc.DeploymentName }) {
			return res, fmt.Errorf("webhook %s: deployment %q is not in the install strategy", desc.GenerateName, desc.DeploymentName)
		}
	}
	for _, d := range deployments {
		var served []operatorsv1alpha1.WebhookDescription
		for _, desc := range descs {
			if desc.DeploymentName == d.Name {
				served = append(served, desc)
			}
		}
		if len(served) > 0 {
			res.support = append(res.support, webhookSupport(csv, namespace, d, served, serving)...)
		}
	}
	for i := range descs {
		cfg, err := webhookConfiguration(csv, namespace, &descs[i], serving.caPEM, crds)
		if err != nil {
			return res, err
		}
		if cfg != nil {
			res.configurations = append(res.configurations, cfg)
		}
	}
	return res, nil
}

func webhookServiceName(deployment string) string { return deployment + "-service" }

// webhookSupport is OLM's per-deployment webhook plumbing: the Service in
// front of its pods, the Secret with the serving certificate, a Role to read
// that Secret, the system:auth-delegator and extension-apiserver-
// authentication-reader bindings OLM grants to every webhook or APIService
// deployment, and the certificate mounted into the pod template.
func webhookSupport(csv *operatorsv1alpha1.ClusterServiceVersion, namespace string, d *appsv1.Deployment, descs []operatorsv1alpha1.WebhookDescription, serving servingCert) []client.Object {
	labels := ownerLabels(csv, namespace)
	service := webhookService(d, descs, namespace, labels)
	secretName := service.Name + "-cert"
	caHash := sha256.Sum256(serving.caPEM)
	secret := &corev1.Secret{ObjectMeta: objectMeta(secretName, namespace, labels), Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: serving.certPEM, corev1.TLSPrivateKeyKey: serving.keyPEM, olmCAKey: serving.caPEM}}
	secret.Annotations = map[string]string{olmCAHashAnnotation: hex.EncodeToString(caHash[:])}
	account := d.Spec.Template.Spec.ServiceAccountName
	if account == "" {
		account = "default"
	}
	secretRole := &rbacv1.Role{ObjectMeta: objectMeta(secretName, namespace, labels),
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{secretName}, Verbs: []string{"get"}}}}
	secretBinding := &rbacv1.RoleBinding{ObjectMeta: objectMeta(secretName, namespace, labels),
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: secretName}, Subjects: accountSubject(account, namespace)}
	authDelegator := &rbacv1.ClusterRoleBinding{ObjectMeta: objectMeta(service.Name+"-system:auth-delegator", "", labels),
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:auth-delegator"}, Subjects: accountSubject(account, namespace)}
	authReader := &rbacv1.RoleBinding{ObjectMeta: objectMeta(service.Name+"-auth-reader", metav1.NamespaceSystem, labels),
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "extension-apiserver-authentication-reader"}, Subjects: accountSubject(account, namespace)}
	mountServingCert(&d.Spec.Template, secretName, hex.EncodeToString(caHash[:]))
	return []client.Object{secret, secretRole, secretBinding, authDelegator, authReader, service}
}

// webhookService selects the deployment's pods; one port per distinct
// containerPort (the port webhook clients call), forwarded to targetPort
// (containerPort when the definition has none).
func webhookService(d *appsv1.Deployment, descs []operatorsv1alpha1.WebhookDescription, namespace string, labels map[string]string) *corev1.Service {
	svc := &corev1.Service{ObjectMeta: objectMeta(webhookServiceName(d.Name), namespace, labels),
		Spec: corev1.ServiceSpec{Selector: d.Spec.Selector.MatchLabels}}
	for _, desc := range descs {
		target := intstr.FromInt32(desc.ContainerPort)
		if desc.TargetPort != nil {
			target = *desc.TargetPort
		}
		port := corev1.ServicePort{Name: strconv.Itoa(int(desc.ContainerPort)), Port: desc.ContainerPort, TargetPort: target}
		if !slices.Contains(svc.Spec.Ports, port) {
			svc.Spec.Ports = append(svc.Spec.Ports, port)
		}
	}
	return svc
}

// mountServingCert mounts the Secret into every container twice, as OLM
// does: tls.crt/tls.key where controller-runtime's webhook server looks,
// and as apiserver.crt/apiserver.key for generic API servers. The CA's hash
// on the pod template rolls the pods when the CA changes.
func mountServingCert(template *corev1.PodTemplateSpec, secretName, caHash string) {
	mountSecret(&template.Spec, "apiservice-cert", olmAPIServiceCertDir, secretName, map[string]string{corev1.TLSCertKey: "apiserver.crt", corev1.TLSPrivateKeyKey: "apiserver.key"})
	mountSecret(&template.Spec, "webhook-cert", olmWebhookCertDir, secretName, map[string]string{corev1.TLSCertKey: corev1.TLSCertKey, corev1.TLSPrivateKeyKey: corev1.TLSPrivateKeyKey})
	if template.Annotations == nil {
		template.Annotations = map[string]string{}
	}
	template.Annotations[olmCAHashAnnotation] = caHash
}

// mountSecret adds (or replaces, by name) the volume, and mounts it in every
// container unless the container already mounts that volume; a mount of
// another volume at the same path is replaced.
func mountSecret(pod *corev1.PodSpec, volumeName, path, secretName string, items map[string]string) {
	volume := corev1.Volume{Name: volumeName, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: secretName}}}
	for _, key := range []string{corev1.TLSCertKey, corev1.TLSPrivateKeyKey} {
		volume.Secret.Items = append(volume.Secret.Items, corev1.KeyToPath{Key: key, Path: items[key]})
	}
	if i := slices.IndexFunc(pod.Volumes, func(v corev1.Volume) bool { return v.Name == volumeName }); i >= 0 {
		pod.Volumes[i] = volume
	} else {
		pod.Volumes = append(pod.Volumes, volume)
	}
	mount := corev1.VolumeMount{Name: volumeName, MountPath: path}
	for i := range pod.Containers {
		c := &pod.Containers[i]
		if slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == volumeName }) {
			continue
		}
		if j := slices.IndexFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == path }); j >= 0 {
			c.VolumeMounts[j] = mount
		} else {
			c.VolumeMounts = append(c.VolumeMounts, mount)
		}
	}
}

// webhookConfiguration is the Validating/MutatingWebhookConfiguration OLM
// creates for desc: one webhook, built by operator-framework/api from the
// definition (rules, policies, selectors, path, the Service's port) with
// the serving CA. Its namespaceSelector is the OperatorGroup's, none for
// AllNamespaces. OLM gives it a generated name; ours ends in the
// definition's hash instead, so it is stable. A conversion webhook patches
// the owned CRDs instead and returns nil.
func webhookConfiguration(csv *operatorsv1alpha1.ClusterServiceVersion, namespace string, desc *operatorsv1alpha1.WebhookDescription, caPEM []byte, crds []*apiextensionsv1.CustomResourceDefinition) (client.Object, error) {
	hash := shortHash(desc)
	labels := ownerLabels(csv, namespace)
	labels[olmWebhookDescLabel] = desc.GenerateName
	labels[olmWebhookHashLabel] = hash
	meta := objectMeta(truncatedName(desc.GenerateName, hash), "", labels)
	switch desc.Type {
	case operatorsv1alpha1.ValidatingAdmissionWebhook:
		return &admissionregistrationv1.ValidatingWebhookConfiguration{ObjectMeta: meta,
			Webhooks: []admissionregistrationv1.ValidatingWebhook{desc.GetValidatingWebhook(namespace, nil, caPEM)}}, nil
	case operatorsv1alpha1.MutatingAdmissionWebhook:
		return &admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: meta,
			Webhooks: []admissionregistrationv1.MutatingWebhook{desc.GetMutatingWebhook(namespace, nil, caPEM)}}, nil
	case operatorsv1alpha1.ConversionWebhook:
		return nil, setConversion(csv, namespace, desc, caPEM, crds)
	default:
		return nil, fmt.Errorf("webhook %s: unknown type %q", desc.GenerateName, desc.Type)
	}
}

// setConversion points the conversion of the CRDs desc names at the webhook
// Service, as OLM does; it only accepts CRDs the CSV owns, and CSVs that
// install only for all namespaces.
func setConversion(csv *operatorsv1alpha1.ClusterServiceVersion, namespace string, desc *operatorsv1alpha1.WebhookDescription, caPEM []byte, crds []*apiextensionsv1.CustomResourceDefinition) error {
	for _, mode := range csv.Spec.InstallModes {
		if mode.Supported != (mode.Type == operatorsv1alpha1.InstallModeTypeAllNamespaces) {
			return fmt.Errorf("conversion webhook %s: the CSV must support AllNamespaces only", desc.GenerateName)
		}
	}
	if len(desc.ConversionCRDs) == 0 {
		return fmt.Errorf("conversion webhook %s names no CRD", desc.GenerateName)
	}
	path := "/"
	if desc.WebhookPath != nil {
		path = *desc.WebhookPath
	}
	for _, name := range desc.ConversionCRDs {
		i := slices.IndexFunc(crds, func(c *apiextensionsv1.CustomResourceDefinition) bool { return c.Name == name })
		if i < 0 {
			return fmt.Errorf("conversion webhook %s: CRD %s is not owned by the CSV", desc.GenerateName, name)
		}
		if crds[i].Spec.PreserveUnknownFields {
			return fmt.Errorf("conversion webhook %s: CRD %s preserves unknown fields", desc.GenerateName, name)
		}
		crds[i].Spec.Conversion = &apiextensionsv1.CustomResourceConversion{Strategy: apiextensionsv1.WebhookConverter,
			Webhook: &apiextensionsv1.WebhookConversion{ConversionReviewVersions: desc.AdmissionReviewVersions,
				ClientConfig: &apiextensionsv1.WebhookClientConfig{CABundle: caPEM, Service: &apiextensionsv1.ServiceReference{
					Namespace: namespace, Name: desc.DomainName() + "-service", Path: ptr.To(path), Port: ptr.To(desc.ContainerPort)}}}}
	}
	return nil
}

// ownerLabels are the labels OLM puts on what it generates for a CSV.
func ownerLabels(csv *operatorsv1alpha1.ClusterServiceVersion, namespace string) map[string]string {
	return map[string]string{olmOwnerLabel: csv.Name, olmOwnerKindLabel: operatorsv1alpha1.ClusterServiceVersionKind, olmOwnerNSLabel: namespace}
}

func objectMeta(name, namespace string, labels map[string]string) metav1.ObjectMeta {
	copied := make(map[string]string, len(labels))
	for k, v := range labels {
		copied[k] = v
	}
	return metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: copied}
}

func accountSubject(name, namespace string) []rbacv1.Subject {
	return []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: namespace}}
}

// hashedName is base, cut to fit, and a short hash of parts: OLM's scheme
// for the names of the RBAC it generates.
func hashedName(base string, parts ...any) string {
	return truncatedName(base, shortHash(parts))
}

func truncatedName(base, hash string) string {
	if len(base)+1+len(hash) > olmMaxNameLength {
		base = base[:olmMaxNameLength-1-len(hash)]
	}
	return base + "-" + hash
}

func shortHash(v any) string {
	data, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("hash %T: %v", v, err)) // only API types, which always encode, are hashed
	}
	h := fnv.New32a()
	h.Write(data)
	return utilrand.SafeEncodeString(fmt.Sprint(h.Sum32()))
}

// setKinds fills in apiVersion and kind, which typed objects leave empty
// and server-side apply needs.
func setKinds(objs []client.Object) error {
	for _, obj := range objs {
		gvk, err := apiutil.GVKForObject(obj, olmScheme)
		if err != nil {
			return err
		}
		obj.GetObjectKind().SetGroupVersionKind(gvk)
	}
	return nil
}

// Package generate turns the rendered config/manifests into an OLM
// registry+v1 bundle. See hack/bundle for why it exists.
package generate

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	operatorsv1alpha1 "github.com/operator-framework/api/pkg/operators/v1alpha1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilversion "k8s.io/apimachinery/pkg/util/version"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/internal/versions"
)

// Package is the OLM package name; the CSV is named <Package>.v<version>.
const Package = "ambient-operator"

// DefaultChannel follows OLM's channel naming convention for a release that
// is not yet stable.
const DefaultChannel = "candidate"

// webhookCertVolume is the volume the kustomize deploy mounts cert-manager's
// serving certificate from. OLM mounts its own certificate at the same path
// under the same volume name, so the bundle's Deployment must not carry it.
const webhookCertVolume = "webhook-cert"

// Options are the generator's inputs besides the rendered manifests.
type Options struct {
	Version        string
	Image          string
	Channels       string
	DefaultChannel string
}

// Bundle is the generated bundle, ready to be written.
type Bundle struct {
	CSV         *operatorsv1alpha1.ClusterServiceVersion
	Objects     []*unstructured.Unstructured // CRDs and other objects shipped as files
	Annotations map[string]string            // metadata/annotations.yaml, also the image labels
}

// inputs sorts the rendered objects by what the bundle does with them.
type inputs struct {
	base        *operatorsv1alpha1.ClusterServiceVersion
	deployments []appsv1.Deployment
	roles       map[string]*rbacv1.Role
	clusterRole map[string]*rbacv1.ClusterRole
	bindings    []rbacv1.RoleBinding
	clusterBind []rbacv1.ClusterRoleBinding
	mutating    []admissionregistrationv1.MutatingWebhookConfiguration
	validating  []admissionregistrationv1.ValidatingWebhookConfiguration
	services    []corev1.Service
	samples     []*unstructured.Unstructured
	shipped     []*unstructured.Unstructured
}

// Build reads the rendered config/manifests and assembles the bundle.
func Build(opts Options, rendered io.Reader) (*Bundle, error) {
	if _, err := utilversion.ParseSemantic(opts.Version); err != nil || strings.HasPrefix(opts.Version, "v") {
		return nil, fmt.Errorf("--version %q: want a semantic version such as 0.1.0", opts.Version)
	}
	if opts.Channels == "" {
		opts.Channels = DefaultChannel
	}
	if opts.DefaultChannel == "" {
		opts.DefaultChannel = strings.Split(opts.Channels, ",")[0]
	}
	in, err := readInputs(rendered)
	if err != nil {
		return nil, err
	}
	if in.base == nil {
		return nil, errors.New("no ClusterServiceVersion base in the input (config/manifests/bases)")
	}
	if len(in.deployments) != 1 {
		return nil, fmt.Errorf("want exactly one Deployment (the operator), found %d", len(in.deployments))
	}
	csv := in.base.DeepCopy()
	if err := fillCSV(csv, opts, in); err != nil {
		return nil, err
	}
	return &Bundle{CSV: csv, Objects: in.shipped, Annotations: annotations(opts)}, nil
}

func readInputs(r io.Reader) (*inputs, error) {
	in := &inputs{roles: map[string]*rbacv1.Role{}, clusterRole: map[string]*rbacv1.ClusterRole{}}
	dec := utilyaml.NewYAMLOrJSONDecoder(r, 4096)
	for {
		obj := &unstructured.Unstructured{}
		if err := dec.Decode(&obj.Object); err == io.EOF {
			break
		} else if err != nil {
			return nil, fmt.Errorf("reading rendered manifests: %w", err)
		}
		if len(obj.Object) == 0 {
			continue
		}
		if err := in.add(obj); err != nil {
			return nil, err
		}
	}
	if err := in.shipNonWebhookServices(); err != nil {
		return nil, err
	}
	return in, nil
}

// add files one object; an unknown kind is an error so that nothing new in
// config/ silently goes missing from the bundle.
func (in *inputs) add(obj *unstructured.Unstructured) error {
	gvk := obj.GroupVersionKind()
	if gvk.Group == meshv1alpha1.GroupVersion.Group {
		in.samples = append(in.samples, obj)
		return nil
	}
	switch gvk.Kind {
	case "ClusterServiceVersion":
		in.base = &operatorsv1alpha1.ClusterServiceVersion{}
		return convert(obj, in.base)
	case "CustomResourceDefinition":
		in.shipped = append(in.shipped, obj)
	case "Deployment":
		var d appsv1.Deployment
		in.deployments = append(in.deployments, d)
		return convert(obj, &in.deployments[len(in.deployments)-1])
	case "Role":
		r := &rbacv1.Role{}
		in.roles[obj.GetName()] = r
		return convert(obj, r)
	case "ClusterRole":
		r := &rbacv1.ClusterRole{}
		in.clusterRole[obj.GetName()] = r
		return convert(obj, r)
	case "RoleBinding":
		in.bindings = append(in.bindings, rbacv1.RoleBinding{})
		return convert(obj, &in.bindings[len(in.bindings)-1])
	case "ClusterRoleBinding":
		in.clusterBind = append(in.clusterBind, rbacv1.ClusterRoleBinding{})
		return convert(obj, &in.clusterBind[len(in.clusterBind)-1])
	case "MutatingWebhookConfiguration":
		in.mutating = append(in.mutating, admissionregistrationv1.MutatingWebhookConfiguration{})
		return convert(obj, &in.mutating[len(in.mutating)-1])
	case "ValidatingWebhookConfiguration":
		in.validating = append(in.validating, admissionregistrationv1.ValidatingWebhookConfiguration{})
		return convert(obj, &in.validating[len(in.validating)-1])
	case "Service":
		in.services = append(in.services, corev1.Service{})
		return convert(obj, &in.services[len(in.services)-1])
	case "Namespace", "ServiceAccount", "Issuer", "Certificate":
		// OLM creates the namespace (OperatorGroup) and the service account
		// (from the CSV), and serves the webhooks with its own certificate.
	default:
		return fmt.Errorf("%s %s: no place for this kind in the bundle; teach hack/bundle about it", gvk.Kind, obj.GetName())
	}
	return nil
}

// shipNonWebhookServices ships the Services other than those the webhook
// configurations point at (OLM creates its own for webhooks), e.g. metrics.
func (in *inputs) shipNonWebhookServices() error {
	webhookServices := map[string]bool{}
	for _, m := range in.mutating {
		for _, w := range m.Webhooks {
			if w.ClientConfig.Service != nil {
				webhookServices[w.ClientConfig.Service.Name] = true
			}
		}
	}
	for _, v := range in.validating {
		for _, w := range v.Webhooks {
			if w.ClientConfig.Service != nil {
				webhookServices[w.ClientConfig.Service.Name] = true
			}
		}
	}
	for i := range in.services {
		svc := &in.services[i]
		if webhookServices[svc.Name] {
			continue
		}
		u, err := toUnstructured(svc, "v1", "Service")
		if err != nil {
			return err
		}
		in.shipped = append(in.shipped, u)
	}
	return nil
}

func fillCSV(csv *operatorsv1alpha1.ClusterServiceVersion, opts Options, in *inputs) error {
	deploy := in.deployments[0]
	if err := setImage(&deploy, opts.Image); err != nil {
		return err
	}
	dropWebhookCert(&deploy.Spec.Template.Spec)
	image := deploy.Spec.Template.Spec.Containers[0].Image

	csv.Name = Package + ".v" + opts.Version
	if err := json.Unmarshal([]byte(`"`+opts.Version+`"`), &csv.Spec.Version); err != nil {
		return fmt.Errorf("version %q: %w", opts.Version, err)
	}
	if csv.Annotations == nil {
		csv.Annotations = map[string]string{}
	}
	examples, err := almExamples(in.samples)
	if err != nil {
		return err
	}
	csv.Annotations["alm-examples"] = examples
	init, err := initializationResource(in.samples)
	if err != nil {
		return err
	}
	csv.Annotations["operatorframework.io/initialization-resource"] = init
	csv.Annotations["containerImage"] = image
	delete(csv.Annotations, "createdAt") // would make every run differ

	sa := deploy.Spec.Template.Spec.ServiceAccountName
	perms, clusterPerms, shippedRoles, err := permissions(in, sa)
	if err != nil {
		return err
	}
	in.shipped = append(in.shipped, shippedRoles...)
	csv.Spec.InstallStrategy = operatorsv1alpha1.NamedInstallStrategy{
		StrategyName: operatorsv1alpha1.InstallStrategyNameDeployment,
		StrategySpec: operatorsv1alpha1.StrategyDetailsDeployment{
			DeploymentSpecs:    []operatorsv1alpha1.StrategyDeploymentSpec{{Name: deploy.Name, Label: deploy.Labels, Spec: deploy.Spec}},
			Permissions:        perms,
			ClusterPermissions: clusterPerms,
		},
	}
	defs, err := webhookDefinitions(in, &deploy)
	if err != nil {
		return err
	}
	csv.Spec.WebhookDefinitions = defs
	csv.Spec.RelatedImages = relatedImages(image)
	return nil
}

// setImage points the operator container at image (when given).
func setImage(d *appsv1.Deployment, image string) error {
	if len(d.Spec.Template.Spec.Containers) == 0 {
		return fmt.Errorf("deployment %s has no container", d.Name)
	}
	if image != "" {
		d.Spec.Template.Spec.Containers[0].Image = image
	}
	return nil
}

func dropWebhookCert(pod *corev1.PodSpec) {
	pod.Volumes = slices.DeleteFunc(pod.Volumes, func(v corev1.Volume) bool { return v.Name == webhookCertVolume })
	for i := range pod.Containers {
		c := &pod.Containers[i]
		c.VolumeMounts = slices.DeleteFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == webhookCertVolume })
	}
	if len(pod.Volumes) == 0 {
		pod.Volumes = nil
	}
}

// almExamples is the JSON list of samples the console offers as templates,
// one per kind and name, sorted so the output is stable.
func almExamples(samples []*unstructured.Unstructured) (string, error) {
	sort.Slice(samples, func(i, j int) bool {
		a, b := samples[i], samples[j]
		if a.GetKind() != b.GetKind() {
			return a.GetKind() < b.GetKind()
		}
		return a.GetName() < b.GetName()
	})
	objs := make([]map[string]any, 0, len(samples))
	for _, s := range samples {
		objs = append(objs, s.Object)
	}
	out, err := json.MarshalIndent(objs, "", "  ")
	if err != nil {
		return "", err
	}
	return string(out), nil
}

// initializationResource is the AmbientMesh sample, which the console offers
// to create right after the install: the operator does nothing until it exists.
func initializationResource(samples []*unstructured.Unstructured) (string, error) {
	for _, s := range samples {
		if s.GetKind() == "AmbientMesh" {
			out, err := json.Marshal(s.Object)
			return string(out), err
		}
	}
	return "", errors.New("no AmbientMesh among the samples: the CSV needs one as its initialization resource")
}

// Dependencies is metadata/dependencies.yaml: cert-manager signs every
// certificate of the mesh, so OLM installs its OperatorHub package first.
const Dependencies = `dependencies:
- type: olm.package
  value:
    packageName: cert-manager
    version: ">=1.16.0 <2.0.0"
`

// permissions moves the rules bound to the operator's service account into
// the CSV (OLM creates and binds them); unbound ClusterRoles (the roles for
// people) ship as files.
func permissions(in *inputs, sa string) (perms, clusterPerms []operatorsv1alpha1.StrategyDeploymentPermissions, shipped []*unstructured.Unstructured, err error) {
	var rules, clusterRules []rbacv1.PolicyRule
	boundClusterRoles := map[string]bool{}
	for _, b := range in.bindings {
		if !bindsTo(b.Subjects, sa) {
			continue
		}
		role, ok := in.roles[b.RoleRef.Name]
		if b.RoleRef.Kind != "Role" || !ok {
			return nil, nil, nil, fmt.Errorf("RoleBinding %s refers to %s %s, which is not in the input", b.Name, b.RoleRef.Kind, b.RoleRef.Name)
		}
		rules = append(rules, role.Rules...)
	}
	for _, b := range in.clusterBind {
		if !bindsTo(b.Subjects, sa) {
			continue
		}
		role, ok := in.clusterRole[b.RoleRef.Name]
		if !ok {
			return nil, nil, nil, fmt.Errorf("ClusterRoleBinding %s refers to ClusterRole %s, which is not in the input", b.Name, b.RoleRef.Name)
		}
		boundClusterRoles[role.Name] = true
		clusterRules = append(clusterRules, role.Rules...)
	}
	if len(rules) > 0 {
		perms = []operatorsv1alpha1.StrategyDeploymentPermissions{{ServiceAccountName: sa, Rules: rules}}
	}
	if len(clusterRules) > 0 {
		clusterPerms = []operatorsv1alpha1.StrategyDeploymentPermissions{{ServiceAccountName: sa, Rules: clusterRules}}
	}
	for _, name := range slices.Sorted(maps.Keys(in.clusterRole)) {
		if !boundClusterRoles[name] {
			u, err := toUnstructured(in.clusterRole[name], "rbac.authorization.k8s.io/v1", "ClusterRole")
			if err != nil {
				return nil, nil, nil, err
			}
			shipped = append(shipped, u)
		}
	}
	return perms, clusterPerms, shipped, nil
}

func bindsTo(subjects []rbacv1.Subject, sa string) bool {
	for _, s := range subjects {
		if s.Kind == rbacv1.ServiceAccountKind && s.Name == sa {
			return true
		}
	}
	return false
}

// webhookDefinitions describes each webhook for OLM, which creates the
// configurations, the Service and the serving certificate itself.
func webhookDefinitions(in *inputs, deploy *appsv1.Deployment) ([]operatorsv1alpha1.WebhookDescription, error) {
	var defs []operatorsv1alpha1.WebhookDescription
	add := func(typ operatorsv1alpha1.WebhookAdmissionType, name string, cc admissionregistrationv1.WebhookClientConfig, common operatorsv1alpha1.WebhookDescription) error {
		if cc.Service == nil || cc.Service.Path == nil {
			return fmt.Errorf("webhook %s: want a service reference with a path", name)
		}
		port, target, err := webhookPorts(in.services, cc.Service.Name, deploy)
		if err != nil {
			return fmt.Errorf("webhook %s: %w", name, err)
		}
		common.Type, common.GenerateName, common.DeploymentName = typ, name, deploy.Name
		common.ContainerPort, common.TargetPort, common.WebhookPath = port, &target, cc.Service.Path
		defs = append(defs, common)
		return nil
	}
	for _, cfg := range in.mutating {
		for _, w := range cfg.Webhooks {
			if err := add(operatorsv1alpha1.MutatingAdmissionWebhook, w.Name, w.ClientConfig, operatorsv1alpha1.WebhookDescription{
				Rules: w.Rules, FailurePolicy: w.FailurePolicy, MatchPolicy: w.MatchPolicy, ObjectSelector: w.ObjectSelector,
				SideEffects: w.SideEffects, TimeoutSeconds: w.TimeoutSeconds, AdmissionReviewVersions: w.AdmissionReviewVersions,
				ReinvocationPolicy: w.ReinvocationPolicy,
			}); err != nil {
				return nil, err
			}
		}
	}
	for _, cfg := range in.validating {
		for _, w := range cfg.Webhooks {
			if err := add(operatorsv1alpha1.ValidatingAdmissionWebhook, w.Name, w.ClientConfig, operatorsv1alpha1.WebhookDescription{
				Rules: w.Rules, FailurePolicy: w.FailurePolicy, MatchPolicy: w.MatchPolicy, ObjectSelector: w.ObjectSelector,
				SideEffects: w.SideEffects, TimeoutSeconds: w.TimeoutSeconds, AdmissionReviewVersions: w.AdmissionReviewVersions,
			}); err != nil {
				return nil, err
			}
		}
	}
	sort.Slice(defs, func(i, j int) bool { return defs[i].GenerateName < defs[j].GenerateName })
	return defs, nil
}

// webhookPorts resolves the webhook Service's port and its target port (a
// container port name in the kustomize deploy) to the numbers OLM wants.
func webhookPorts(services []corev1.Service, name string, deploy *appsv1.Deployment) (int32, intstr.IntOrString, error) {
	for _, svc := range services {
		if svc.Name != name || len(svc.Spec.Ports) == 0 {
			continue
		}
		p := svc.Spec.Ports[0]
		if p.TargetPort.Type == intstr.Int {
			return p.Port, p.TargetPort, nil
		}
		for _, c := range deploy.Spec.Template.Spec.Containers {
			for _, cp := range c.Ports {
				if cp.Name == p.TargetPort.StrVal {
					return p.Port, intstr.FromInt32(cp.ContainerPort), nil
				}
			}
		}
		return 0, intstr.IntOrString{}, fmt.Errorf("service %s targets port %q, which no container of %s declares", name, p.TargetPort.StrVal, deploy.Name)
	}
	return 0, intstr.IntOrString{}, fmt.Errorf("service %s not found in the input", name)
}

// relatedImages lists the images this release builds (`make images
// IMAGE_TAG=<default version>`), so that disconnected installs can mirror
// them: the operator's and each component's at the mesh version the operator
// installs by default. Other versions the operator could move a mesh to are
// left out: their images come with their own releases, and a list naming
// images that do not exist breaks mirroring.
func relatedImages(operatorImage string) []operatorsv1alpha1.RelatedImage {
	images := []operatorsv1alpha1.RelatedImage{{Name: "operator", Image: operatorImage}}
	for _, c := range []versions.Component{versions.ControlPlane, versions.ZTunnel, versions.CNIAgent, versions.Waypoint} {
		images = append(images, operatorsv1alpha1.RelatedImage{Name: string(c), Image: versions.Image(c, versions.Default)})
	}
	return images
}

func annotations(opts Options) map[string]string {
	return map[string]string{
		"operators.operatorframework.io.bundle.mediatype.v1":       "registry+v1",
		"operators.operatorframework.io.bundle.manifests.v1":       "manifests/",
		"operators.operatorframework.io.bundle.metadata.v1":        "metadata/",
		"operators.operatorframework.io.bundle.package.v1":         Package,
		"operators.operatorframework.io.bundle.channels.v1":        opts.Channels,
		"operators.operatorframework.io.bundle.channel.default.v1": opts.DefaultChannel,
		"operators.operatorframework.io.metrics.builder":           "hack/bundle",
		"operators.operatorframework.io.metrics.mediatype.v1":      "metrics+v1",
		"operators.operatorframework.io.metrics.project_layout":    "go.kubebuilder.io/v4",
	}
}

// Write replaces outDir/manifests and outDir/metadata and writes the bundle
// image's Dockerfile, whose labels repeat the annotations (OLM reads either).
func (b *Bundle) Write(outDir, dockerfile string) error {
	manifests, metadata := filepath.Join(outDir, "manifests"), filepath.Join(outDir, "metadata")
	for _, dir := range []string{manifests, metadata} {
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	csv, err := marshal(b.CSV)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(manifests, Package+".clusterserviceversion.yaml"), csv, 0o644); err != nil {
		return err
	}
	for _, obj := range b.Objects {
		data, err := marshal(obj.Object)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(manifests, FileName(obj)), data, 0o644); err != nil {
			return err
		}
	}
	ann, err := yaml.Marshal(map[string]any{"annotations": b.Annotations})
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(metadata, "annotations.yaml"), ann, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(metadata, "dependencies.yaml"), []byte(Dependencies), 0o644); err != nil {
		return err
	}
	// The image is built with the Dockerfile's directory as context.
	rel, err := filepath.Rel(filepath.Dir(dockerfile), outDir)
	if err != nil {
		return err
	}
	return os.WriteFile(dockerfile, []byte(b.Dockerfile(filepath.ToSlash(rel))), 0o644)
}

// Dockerfile is the bundle image's Dockerfile; bundleDir is the bundle's
// path in the build context.
func (b *Bundle) Dockerfile(bundleDir string) string {
	var s strings.Builder
	s.WriteString("# Generated by `make bundle` (hack/bundle); do not edit.\nFROM scratch\n\n")
	s.WriteString("# Labels repeat bundle/metadata/annotations.yaml.\n")
	for _, k := range slices.Sorted(maps.Keys(b.Annotations)) {
		fmt.Fprintf(&s, "LABEL %s=%s\n", k, b.Annotations[k])
	}
	fmt.Fprintf(&s, "\nCOPY %s/manifests /manifests/\nCOPY %s/metadata /metadata/\n", bundleDir, bundleDir)
	return s.String()
}

// FileName follows operator-sdk's naming: <group>_<plural>.yaml for CRDs,
// <name>_<group>_<version>_<kind>.yaml for the rest.
func FileName(obj *unstructured.Unstructured) string {
	gvk := obj.GroupVersionKind()
	if gvk.Kind == "CustomResourceDefinition" {
		return obj.GetName()[strings.Index(obj.GetName(), ".")+1:] + "_" + obj.GetName()[:strings.Index(obj.GetName(), ".")] + ".yaml"
	}
	group := gvk.Group
	if group != "" {
		group += "_"
	}
	return strings.ToLower(fmt.Sprintf("%s_%s%s_%s.yaml", obj.GetName(), group, gvk.Version, gvk.Kind))
}

// marshal writes YAML without the null fields Go types leave behind
// (creationTimestamp: null and the like). Empty maps stay: some mean
// something (emptyDir: {}).
func marshal(obj any) ([]byte, error) {
	data, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	var generic any
	if err := json.Unmarshal(data, &generic); err != nil {
		return nil, err
	}
	return yaml.Marshal(dropEmpty(generic))
}

func dropEmpty(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, val := range t {
			val = dropEmpty(val)
			if val == nil {
				delete(t, k)
				continue
			}
			t[k] = val
		}
	case []any:
		for i := range t {
			t[i] = dropEmpty(t[i])
		}
	}
	return v
}

func convert(obj *unstructured.Unstructured, into any) error {
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(obj.Object, into, true); err != nil {
		return fmt.Errorf("%s %s: %w", obj.GetKind(), obj.GetName(), err)
	}
	return nil
}

// toUnstructured converts a typed object back for shipping, without its
// status (a bundle carries desired state only).
func toUnstructured(obj any, apiVersion, kind string) (*unstructured.Unstructured, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, fmt.Errorf("converting %s: %w", kind, err)
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetAPIVersion(apiVersion)
	u.SetKind(kind)
	delete(u.Object, "status")
	// OLM creates namespaced objects in the namespace it installs into.
	u.SetNamespace("")
	return u, nil
}

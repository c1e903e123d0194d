package deploy

import (
	"bytes"
	"encoding/json"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/blang/semver/v4"
	"github.com/operator-framework/api/pkg/manifests"
	operatorsv1alpha1 "github.com/operator-framework/api/pkg/operators/v1alpha1"
	"github.com/operator-framework/api/pkg/validation"
	"github.com/operator-framework/api/pkg/validation/errors"
	"golang.org/x/mod/modfile"
	"sigs.k8s.io/yaml"

	"github.com/ambientmesh/ambient-operator/internal/versions"
)

// TestBundleIsReproducibleAndCurrent regenerates the bundle twice with
// `make bundle` into scratch directories: both runs must produce exactly the
// committed bundle (so a rerun changes nothing, and the committed bundle is
// not stale).
func TestBundleIsReproducibleAndCurrent(t *testing.T) {
	root := repoRoot(t)
	kustomize(t)
	committed := readTree(t, root, "bundle", "bundle.Dockerfile")
	for run := 1; run <= 2; run++ {
		tmp := t.TempDir()
		cmd := exec.Command("make", "-s", "bundle", "BUNDLE_DIR="+filepath.Join(tmp, "bundle"), "BUNDLE_DOCKERFILE="+filepath.Join(tmp, "bundle.Dockerfile"))
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make bundle: %v\n%s", err, out)
		}
		generated := readTree(t, tmp, "bundle", "bundle.Dockerfile")
		for _, name := range sortedUnion(committed, generated) {
			if !bytes.Equal(committed[name], generated[name]) {
				t.Errorf("run %d: %s differs from the committed bundle: run `make bundle` and commit", run, name)
			}
		}
	}
}

func readTree(t *testing.T, base string, paths ...string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	for _, p := range paths {
		err := filepath.Walk(filepath.Join(base, p), func(path string, info os.FileInfo, err error) error {
			if err != nil || info.IsDir() {
				return err
			}
			rel, _ := filepath.Rel(base, path)
			files[rel], err = os.ReadFile(path)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return files
}

func sortedUnion(a, b map[string][]byte) []string {
	var names []string
	for k := range a {
		names = append(names, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	return names
}

// explainedWarnings are the validator warnings we accept, each with why.
var explainedWarnings = []struct {
	why     string
	matches func(msg string) bool
}{{
	why: "RBAC rules name resources without an API version, so the deprecated-API validator warns about every rule on " +
		"events.k8s.io/events, policy/poddisruptionbudgets or discovery.k8s.io/endpointslices (their v1beta1 versions went " +
		"in 1.25). The operator and the components use the v1 APIs (k8s.io/api v0.35); only the RBAC rules are reported.",
	matches: func(msg string) bool {
		if !strings.Contains(msg, "deprecated and removed in v1.25") {
			return false
		}
		// Every reported location must be an RBAC rule, never a manifest.
		locations := regexp.MustCompile(`\(\[(.*?)\]\)`).FindAllStringSubmatch(msg, -1)
		for _, loc := range locations {
			for _, l := range strings.Split(loc[1], ",") {
				if !regexp.MustCompile(`^"ClusterServiceVersion\.Spec\.InstallStrategy\.StrategySpec\.(Cluster)?Permissions\[\d+\]\.Rules\[\d+\]"$`).MatchString(l) {
					return false
				}
			}
		}
		return len(locations) > 0
	},
}}

// TestBundleValidates runs operator-framework/api's validators the way
// `operator-sdk bundle validate --select-optional suite=operatorframework`
// does: the default bundle validators plus OperatorHub v2, good practices,
// capabilities, categories and the deprecated-API check for the newest
// Kubernetes we support.
func TestBundleValidates(t *testing.T) {
	bundle, err := manifests.GetBundleFromDir(filepath.Join(repoRoot(t), "bundle"))
	if err != nil {
		t.Fatalf("loading bundle/: %v", err)
	}
	validators := validation.DefaultBundleValidators.WithValidators(
		validation.OperatorHubV2Validator,
		validation.GoodPracticesValidator,
		validation.StandardCapabilitiesValidator,
		validation.StandardCategoriesValidator,
		validation.AlphaDeprecatedAPIsValidator,
	)
	objs := append(bundle.ObjectsToValidate(), map[string]string{"k8s-version": "1.35"})
	results := validators.Validate(objs...)
	if len(results) == 0 {
		t.Fatal("the validators returned no result: nothing was validated")
	}
	for _, result := range results {
		for _, e := range result.Errors {
			t.Errorf("%s: error: %s", result.Name, e.Error())
		}
		for _, w := range result.Warnings {
			if !explained(w) {
				t.Errorf("%s: unexplained warning: %s", result.Name, w.Error())
			}
		}
	}
}

func explained(w errors.Error) bool {
	for _, e := range explainedWarnings {
		if e.matches(w.Error()) {
			return true
		}
	}
	return false
}

func loadCSV(t *testing.T) *operatorsv1alpha1.ClusterServiceVersion {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "bundle", "manifests", "ambient-operator.clusterserviceversion.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var csv operatorsv1alpha1.ClusterServiceVersion
	if err := yaml.UnmarshalStrict(data, &csv); err != nil {
		t.Fatal(err)
	}
	return &csv
}

// TestBundleCSV checks what OperatorHub shows and what OLM installs.
func TestBundleCSV(t *testing.T) {
	csv := loadCSV(t)
	if want := "ambient-operator.v" + csv.Spec.Version.String(); csv.Name != want {
		t.Errorf("CSV name %q, want %q", csv.Name, want)
	}
	if csv.Spec.Maturity != "alpha" || csv.Spec.MinKubeVersion == "" || len(csv.Spec.Icon) != 1 || len(csv.Spec.Keywords) == 0 ||
		len(csv.Spec.Links) == 0 || len(csv.Spec.Maintainers) == 0 || csv.Spec.Provider.Name == "" || csv.Spec.DisplayName == "" {
		t.Errorf("CSV is missing OperatorHub metadata: maturity %q, minKubeVersion %q, %d icons, %d keywords, %d links, %d maintainers, provider %q",
			csv.Spec.Maturity, csv.Spec.MinKubeVersion, len(csv.Spec.Icon), len(csv.Spec.Keywords), len(csv.Spec.Links), len(csv.Spec.Maintainers), csv.Spec.Provider.Name)
	}
	if _, ok := csv.Annotations["createdAt"]; ok {
		t.Error("createdAt makes every `make bundle` differ; leave it out")
	}
	for _, m := range csv.Spec.InstallModes {
		if m.Supported != (m.Type == operatorsv1alpha1.InstallModeTypeAllNamespaces) {
			t.Errorf("install mode %s supported=%v; only AllNamespaces is supported (AmbientMesh is cluster-scoped)", m.Type, m.Supported)
		}
	}

	// alm-examples are exactly the samples.
	var examples []map[string]any
	if err := json.Unmarshal([]byte(csv.Annotations["alm-examples"]), &examples); err != nil {
		t.Fatalf("alm-examples: %v", err)
	}
	var got, want []string
	for _, e := range examples {
		meta := e["metadata"].(map[string]any)
		got = append(got, e["kind"].(string)+"/"+meta["name"].(string))
	}
	for _, s := range render(t, "config/samples") {
		want = append(want, s.GetKind()+"/"+s.GetName())
	}
	sort.Strings(got)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Errorf("alm-examples %v, want the samples %v", got, want)
	}

	// Every CRD is owned and described, with spec and status descriptors.
	if n := len(csv.Spec.CustomResourceDefinitions.Owned); n != 3 {
		t.Errorf("%d owned CRDs, want 3", n)
	}
	for _, crd := range csv.Spec.CustomResourceDefinitions.Owned {
		if crd.Description == "" || crd.DisplayName == "" || len(crd.SpecDescriptors) == 0 || len(crd.StatusDescriptors) == 0 {
			t.Errorf("owned CRD %s lacks a description or descriptors", crd.Name)
		}
	}

	// The operator Deployment runs the image the CSV advertises, without the
	// kustomize deploy's cert-manager volume (OLM mounts its own certificate).
	deploys := csv.Spec.InstallStrategy.StrategySpec.DeploymentSpecs
	if len(deploys) != 1 {
		t.Fatalf("%d deployments, want 1", len(deploys))
	}
	pod := deploys[0].Spec.Template.Spec
	if img := pod.Containers[0].Image; img != csv.Annotations["containerImage"] || !slices.ContainsFunc(csv.Spec.RelatedImages, func(r operatorsv1alpha1.RelatedImage) bool { return r.Image == img }) {
		t.Errorf("operator image %s: not the containerImage annotation %s or not in relatedImages", img, csv.Annotations["containerImage"])
	}
	if len(pod.Volumes) != 0 || len(pod.Containers[0].VolumeMounts) != 0 {
		t.Errorf("the bundle's Deployment mounts volumes %v: OLM injects the webhook certificate itself", pod.Volumes)
	}
	if len(csv.Spec.InstallStrategy.StrategySpec.ClusterPermissions) == 0 || len(csv.Spec.InstallStrategy.StrategySpec.Permissions) == 0 {
		t.Error("the CSV carries no RBAC for the operator")
	}

	// One webhook definition per generated webhook, same paths, served by
	// the operator Deployment on its webhook port.
	var webhooks []map[string]any
	for _, o := range render(t, "config/webhook") {
		if hooks, ok := o.Object["webhooks"].([]any); ok {
			for _, h := range hooks {
				webhooks = append(webhooks, h.(map[string]any))
			}
		}
	}
	if len(webhooks) != 6 || len(csv.Spec.WebhookDefinitions) != len(webhooks) {
		t.Fatalf("%d webhook definitions for %d webhooks, want 6 each", len(csv.Spec.WebhookDefinitions), len(webhooks))
	}
	for _, def := range csv.Spec.WebhookDefinitions {
		if def.DeploymentName != deploys[0].Name || def.TargetPort == nil || def.TargetPort.IntValue() != 9443 || def.WebhookPath == nil {
			t.Errorf("webhook %s: deployment %q, target port %v, path %v", def.GenerateName, def.DeploymentName, def.TargetPort, def.WebhookPath)
		}
	}
}

// TestBundleImageLabels: the bundle image's labels repeat
// metadata/annotations.yaml, which OLM reads when the labels are absent.
// What OperatorHub and the console read beyond the CSV's spec: cert-manager
// as a dependency OLM installs first, the namespace to suggest, and the
// AmbientMesh to offer right after the install.
func TestBundleOLMMetadata(t *testing.T) {
	root := repoRoot(t)
	data, err := os.ReadFile(filepath.Join(root, "bundle", "metadata", "dependencies.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var deps struct {
		Dependencies []olmDependency `json:"dependencies"`
	}
	if err := yaml.UnmarshalStrict(data, &deps); err != nil {
		t.Fatal(err)
	}
	// The cert-manager this module builds and tests against must be in the range.
	certManager := semver.MustParse(strings.TrimPrefix(requiredVersion(t, "github.com/cert-manager/cert-manager"), "v"))
	if !slices.ContainsFunc(deps.Dependencies, func(d olmDependency) bool {
		inRange, err := semver.ParseRange(d.Value.Version)
		return d.Type == "olm.package" && d.Value.PackageName == "cert-manager" && err == nil && inRange(certManager)
	}) {
		t.Errorf("metadata/dependencies.yaml does not declare the cert-manager package with a range including %s: %+v", certManager, deps)
	}
	csv := loadCSV(t)
	kustomization, err := os.ReadFile(filepath.Join(root, "config", "default", "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	ns := csv.Annotations["operatorframework.io/suggested-namespace"]
	if ns == "" || !strings.Contains(string(kustomization), "\nnamespace: "+ns+"\n") {
		t.Errorf("suggested-namespace %q is not the namespace `make deploy` installs into (config/default)", ns)
	}
	var init struct {
		Kind     string `json:"kind"`
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal([]byte(csv.Annotations["operatorframework.io/initialization-resource"]), &init); err != nil ||
		init.Kind != "AmbientMesh" || init.Metadata.Name != "default" {
		t.Errorf("initialization-resource: want the AmbientMesh named default, got %+v (%v)", init, err)
	}
}

// olmDependency is an entry of metadata/dependencies.yaml of type olm.package.
type olmDependency struct {
	Type  string `json:"type"`
	Value struct {
		PackageName string `json:"packageName"`
		Version     string `json:"version"`
	} `json:"value"`
}

// requiredVersion is the version go.mod requires of module.
func requiredVersion(t *testing.T, module string) string {
	t.Helper()
	gomod, err := os.ReadFile(filepath.Join(repoRoot(t), "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := modfile.ParseLax("go.mod", gomod, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range f.Require {
		if r.Mod.Path == module {
			return r.Mod.Version
		}
	}
	t.Fatalf("go.mod does not require %s", module)
	return ""
}

// relatedImages must be exactly what `make images` builds for a release (the
// Dockerfile's targets, each tagged with the default mesh version) plus the
// operator: a disconnected install mirrors this list, and an image in it that
// is never built breaks the mirroring.
func TestBundleRelatedImagesAreTheBuiltImages(t *testing.T) {
	csv := loadCSV(t)
	df := parseDockerfile(t, filepath.Join(repoRoot(t), "Dockerfile"))
	want := map[string]bool{csv.Annotations["containerImage"]: true}
	for _, st := range df.stages {
		if st.name != "build" && st.name != "operator" {
			want[versions.Registry+"/"+st.name+":"+versions.Default] = true
		}
	}
	got := map[string]bool{}
	for _, r := range csv.Spec.RelatedImages {
		got[r.Image] = true
	}
	if !maps.Equal(got, want) {
		t.Errorf("relatedImages %v, want the operator's image and the Dockerfile's component targets at version %s: %v",
			slices.Sorted(maps.Keys(got)), versions.Default, slices.Sorted(maps.Keys(want)))
	}
}

func TestBundleImageLabels(t *testing.T) {
	root := repoRoot(t)
	data, err := os.ReadFile(filepath.Join(root, "bundle", "metadata", "annotations.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var ann struct {
		Annotations map[string]string `json:"annotations"`
	}
	if err := yaml.UnmarshalStrict(data, &ann); err != nil {
		t.Fatal(err)
	}
	dockerfile, err := os.ReadFile(filepath.Join(root, "bundle.Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^LABEL (\S+)=(\S+)$`).FindAllStringSubmatch(string(dockerfile), -1) {
		labels[m[1]] = m[2]
	}
	if len(labels) == 0 || !mapsEqual(labels, ann.Annotations) {
		t.Errorf("bundle.Dockerfile labels %v differ from annotations.yaml %v", labels, ann.Annotations)
	}
	if ann.Annotations["operators.operatorframework.io.bundle.package.v1"] != "ambient-operator" {
		t.Errorf("package %q", ann.Annotations["operators.operatorframework.io.bundle.package.v1"])
	}
	for _, src := range regexp.MustCompile(`(?m)^COPY (\S+) `).FindAllStringSubmatch(string(dockerfile), -1) {
		if _, err := os.Stat(filepath.Join(root, src[1])); err != nil {
			t.Errorf("bundle.Dockerfile copies %s, which does not exist", src[1])
		}
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

package deploy

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	operatorsv1alpha1 "github.com/operator-framework/api/pkg/operators/v1alpha1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"
)

// Every field of our kinds' spec and status, one level down (spec.ztunnel's
// own fields, say), has a descriptor, so the console shows and edits it with a
// label and a description.
func TestBundleDescribesEveryField(t *testing.T) {
	csv := loadCSV(t)
	crds := map[string]*apiextensionsv1.CustomResourceDefinition{}
	entries, err := os.ReadDir(filepath.Join(repoRoot(t), "bundle", "manifests"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(repoRoot(t), "bundle", "manifests", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if yaml.Unmarshal(data, crd) == nil && crd.Kind == "CustomResourceDefinition" {
			crds[crd.Spec.Names.Kind] = crd
		}
	}
	for _, owned := range csv.Spec.CustomResourceDefinitions.Owned {
		crd := crds[owned.Kind]
		if crd == nil {
			t.Errorf("owned kind %s has no CRD in the bundle", owned.Kind)
			continue
		}
		schema := crd.Spec.Versions[0].Schema.OpenAPIV3Schema
		for section, described := range map[string][]string{
			"spec":   pathsOf(owned.SpecDescriptors),
			"status": pathsOf(owned.StatusDescriptors),
		} {
			for _, field := range fieldsTwoDeep(schema.Properties[section]) {
				if field == "observedGeneration" {
					continue // bookkeeping, not for people
				}
				if !slices.ContainsFunc(described, func(p string) bool {
					return p == field || strings.HasPrefix(field, p+".") || strings.HasPrefix(p, field+".")
				}) {
					t.Errorf("%s %s.%s has no %s descriptor", owned.Kind, section, field, section)
				}
			}
		}
	}
}

func pathsOf[D interface {
	operatorsv1alpha1.SpecDescriptor | operatorsv1alpha1.StatusDescriptor
}](ds []D) []string {
	var out []string
	for _, d := range ds {
		switch d := any(d).(type) {
		case operatorsv1alpha1.SpecDescriptor:
			out = append(out, d.Path)
		case operatorsv1alpha1.StatusDescriptor:
			out = append(out, d.Path)
		}
	}
	return out
}

// fieldsTwoDeep lists a schema's properties, and for an object property its
// own properties instead ("ztunnel.drainPeriod").
func fieldsTwoDeep(s apiextensionsv1.JSONSchemaProps) []string {
	var out []string
	for name, p := range s.Properties {
		if len(p.Properties) == 0 {
			out = append(out, name)
			continue
		}
		for sub := range p.Properties {
			out = append(out, name+"."+sub)
		}
	}
	slices.Sort(out)
	return out
}

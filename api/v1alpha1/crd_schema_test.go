/*
Copyright 2026 The ambient-operator Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

package v1alpha1_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
)

// These tests read the CRDs controller-gen generated from this package and
// check that they say what the Go side assumes: the defaults the CRD applies
// equal the constants the operator falls back on, and every field carries
// the documentation `kubectl explain` shows.

func loadCRD(t *testing.T, plural string) *apiextensionsv1.CustomResourceDefinition {
	t.Helper()
	path := filepath.Join("..", "..", "config", "crd", "bases", "mesh.ambientmesh.dev_"+plural+".yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read generated CRD (run `make manifests`): %v", err)
	}
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := yaml.UnmarshalStrict(data, crd); err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	return crd
}

func schemaOf(t *testing.T, plural string) *apiextensionsv1.JSONSchemaProps {
	t.Helper()
	crd := loadCRD(t, plural)
	if len(crd.Spec.Versions) != 1 || crd.Spec.Versions[0].Name != "v1alpha1" {
		t.Fatalf("%s: want exactly version v1alpha1", plural)
	}
	return crd.Spec.Versions[0].Schema.OpenAPIV3Schema
}

// property walks a dotted path of properties, e.g. "spec.identity.workloadCertTTL".
func property(t *testing.T, root *apiextensionsv1.JSONSchemaProps, path string) *apiextensionsv1.JSONSchemaProps {
	t.Helper()
	s := root
	for name := range strings.SplitSeq(path, ".") {
		next, ok := s.Properties[name]
		if !ok {
			t.Fatalf("no property %q in schema (path %s)", name, path)
		}
		s = &next
	}
	return s
}

func defaultOf(t *testing.T, root *apiextensionsv1.JSONSchemaProps, path string) any {
	t.Helper()
	p := property(t, root, path)
	if p.Default == nil {
		t.Fatalf("%s has no default in the CRD", path)
	}
	var v any
	if err := json.Unmarshal(p.Default.Raw, &v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return v
}

func TestCRDDefaultsMatchGoConstants(t *testing.T) {
	mesh := schemaOf(t, "ambientmeshes")
	durationDefault := func(path string) time.Duration {
		s, _ := defaultOf(t, mesh, path).(string)
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("%s default %q: %v", path, s, err)
		}
		return d
	}
	checks := []struct {
		path      string
		got, want any
	}{
		{"spec.version", defaultOf(t, mesh, "spec.version"), meshv1.DefaultVersion},
		{"spec.namespace", defaultOf(t, mesh, "spec.namespace"), meshv1.DefaultNamespace},
		{"spec.trustDomain", defaultOf(t, mesh, "spec.trustDomain"), meshv1.DefaultTrustDomain},
		{"spec.identity.workloadCertTTL", durationDefault("spec.identity.workloadCertTTL"), meshv1.DefaultWorkloadCertTTL},
		{"spec.identity.rootCATTL", durationDefault("spec.identity.rootCATTL"), meshv1.DefaultRootCATTL},
		{"spec.ztunnel.drainPeriod", durationDefault("spec.ztunnel.drainPeriod"), meshv1.DefaultDrainPeriod},
		{"spec.ztunnel.updateStrategy", defaultOf(t, mesh, "spec.ztunnel.updateStrategy"), string(meshv1.UpdateNodeByNode)},
		{"spec.cni.binDir", defaultOf(t, mesh, "spec.cni.binDir"), meshv1.DefaultCNIBinDir},
		{"spec.cni.confDir", defaultOf(t, mesh, "spec.cni.confDir"), meshv1.DefaultCNIConfDir},
		{"spec.cni.chained", defaultOf(t, mesh, "spec.cni.chained"), true},
		{"spec.cni.redirection", defaultOf(t, mesh, "spec.cni.redirection"), string(meshv1.RedirectionNFTables)},
		{"spec.upgrade.nodeReadyTimeout", durationDefault("spec.upgrade.nodeReadyTimeout"), meshv1.DefaultNodeReadyTimeout},
		{"spec.controlPlane.logLevel", defaultOf(t, mesh, "spec.controlPlane.logLevel"), string(meshv1.LogLevelInfo)},
		{"waypoint spec.for", defaultOf(t, schemaOf(t, "waypoints"), "spec.for"), string(meshv1.WaypointForService)},
		{"meshpolicy spec.action", defaultOf(t, schemaOf(t, "meshpolicies"), "spec.action"), string(meshv1.ActionAllow)},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: CRD default %v, Go constant %v", c.path, c.got, c.want)
		}
	}
}

func TestCRDSPIFFERuleUsesGoPattern(t *testing.T) {
	principals := property(t, schemaOf(t, "meshpolicies"), "spec.rules").Items.Schema
	principals = property(t, principals, "from").Items.Schema
	item := property(t, principals, "principals").Items.Schema
	if len(item.XValidations) != 1 {
		t.Fatalf("principals items: want one CEL rule, got %d", len(item.XValidations))
	}
	want := "self.matches('" + meshv1.SPIFFEIDPattern + "')"
	if got := item.XValidations[0].Rule; got != want {
		t.Errorf("principal CEL rule\n got %s\nwant %s", got, want)
	}
}

// TestEveryFieldIsDocumented is what `kubectl explain` relies on: no
// property of any of our kinds may lack a description.
func TestEveryFieldIsDocumented(t *testing.T) {
	for _, plural := range []string{"ambientmeshes", "waypoints", "meshpolicies"} {
		root := schemaOf(t, plural)
		if root.Description == "" {
			t.Errorf("%s: the kind has no description", plural)
		}
		var undocumented []string
		walkSchema(plural, root, func(path string, s *apiextensionsv1.JSONSchemaProps) {
			if s.Description == "" && path != plural+".metadata" {
				undocumented = append(undocumented, path)
			}
		})
		slices.Sort(undocumented)
		for _, p := range undocumented {
			t.Errorf("undocumented field %s", p)
		}
	}
}

func walkSchema(path string, s *apiextensionsv1.JSONSchemaProps, visit func(string, *apiextensionsv1.JSONSchemaProps)) {
	for name, child := range s.Properties {
		childPath := path + "." + name
		visit(childPath, &child)
		walkSchema(childPath, &child, visit)
	}
	if s.Items != nil && s.Items.Schema != nil {
		walkSchema(path+"[]", s.Items.Schema, visit)
	}
	if s.AdditionalProperties != nil && s.AdditionalProperties.Schema != nil {
		walkSchema(path+"{}", s.AdditionalProperties.Schema, visit)
	}
}

func TestPrinterColumns(t *testing.T) {
	want := map[string][]string{
		"ambientmeshes": {"Version", "Phase", "Ready", "Namespace", "Target", "Age"},
		"waypoints":     {"For", "Address", "Programmed", "Ready", "Age"},
		"meshpolicies":  {"Action", "Enforced-By", "Accepted", "Enforced", "Age"},
	}
	for plural, names := range want {
		var got []string
		for _, c := range loadCRD(t, plural).Spec.Versions[0].AdditionalPrinterColumns {
			got = append(got, c.Name)
		}
		if !slices.Equal(got, names) {
			t.Errorf("%s printer columns = %v, want %v", plural, got, names)
		}
	}
}

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
	"context"
	"strings"
	"testing"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
)

// The CEL limits the apiserver applies (k8s.io/apiserver/pkg/apis/cel:
// PerCallLimit and RuntimeCELCostBudget).
const (
	celPerCallLimit = 1_000_000
	celCostBudget   = 10_000_000
)

// meshCELValidator evaluates the generated AmbientMesh CRD's CEL rules in
// process, as the apiserver does, so that the rules themselves are what the
// table tests exercise.
func meshCELValidator(t *testing.T) *cel.Validator {
	t.Helper()
	var internal apiextensions.JSONSchemaProps
	if err := apiextensionsv1.Convert_v1_JSONSchemaProps_To_apiextensions_JSONSchemaProps(schemaOf(t, "ambientmeshes"), &internal, nil); err != nil {
		t.Fatal(err)
	}
	structural, err := structuralschema.NewStructural(&internal)
	if err != nil {
		t.Fatal(err)
	}
	v := cel.NewValidator(structural, true, celPerCallLimit)
	if v == nil {
		t.Fatal("the AmbientMesh CRD has no CEL rules")
	}
	return v
}

// TestCNIHostPathRules: binDir and confDir are mounted read-write into the
// privileged CNI agent on every node. The table lists the CNI locations of
// common platforms (accepted) and paths that would let the agent write into
// the host's root, kernel file systems or system directories (refused).
func TestCNIHostPathRules(t *testing.T) {
	validator := meshCELValidator(t)
	const (
		notRoot   = "must not be the host's root directory"
		notClean  = "must be a clean absolute path"
		notKernel = "must not be in /proc, /sys, /dev or /boot"
		notSystem = "must not be a system directory itself"
	)
	for _, tc := range []struct {
		path, wantMessage string // "" when accepted
	}{
		{"/opt/cni/bin", ""},
		{"/etc/cni/net.d", ""},
		{"/home/kubernetes/bin", ""},                  // GKE
		{"/var/lib/cni/bin", ""},                      // OpenShift
		{"/etc/kubernetes/cni/net.d", ""},             // OpenShift with Multus
		{"/usr/lib/cni", ""},                          // Debian's containernetworking-plugins
		{"/usr/libexec/cni", ""},                      // Fedora and RHEL
		{"/var/lib/rancher/k3s/data/current/bin", ""}, // k3s
		{"/var/snap/microk8s/current/args/cni-network", ""},
		{"/devices/cni", ""}, // only /dev itself and what is under it is refused
		{"/opt/.cni", ""},
		{"/", notRoot},
		{"/etc", notSystem},
		{"/usr", notSystem},
		{"/usr/bin", notSystem},
		{"/usr/local/bin", notSystem},
		{"/bin", notSystem},
		{"/var/lib", notSystem},
		{"/opt", notSystem},
		{"/root", notSystem},
		{"/proc", notKernel},
		{"/proc/1/root/etc", notKernel},
		{"/sys/fs/cgroup", notKernel},
		{"/dev", notKernel},
		{"/dev/shm", notKernel},
		{"/boot/efi", notKernel},
		{"/opt/cni/../../etc", notClean},
		{"/opt/cni/bin/..", notClean},
		{"/..", notClean},
		{"/opt/./cni/bin", notClean},
		{"/opt//cni/bin", notClean},
		{"/opt/cni/bin/", notClean},
		{"/etc/", notClean},
	} {
		for _, field := range []string{"binDir", "confDir"} {
			t.Run(field+"="+tc.path, func(t *testing.T) {
				cni := map[string]any{"binDir": "/opt/cni/bin", "confDir": "/etc/cni/net.d"}
				cni[field] = tc.path
				mesh := map[string]any{
					"apiVersion": "mesh.ambientmesh.dev/v1alpha1",
					"kind":       "AmbientMesh",
					"metadata":   map[string]any{"name": "default"},
					"spec":       map[string]any{"cni": cni},
				}
				errs, _ := validator.Validate(context.Background(), nil, nil, mesh, nil, celCostBudget)
				if tc.wantMessage == "" {
					if len(errs) != 0 {
						t.Fatalf("refused: %v", errs)
					}
					return
				}
				if len(errs) != 1 {
					t.Fatalf("want one error containing %q, got %v", tc.wantMessage, errs)
				}
				if errs[0].Field != "spec.cni."+field || !strings.Contains(errs[0].Detail, tc.wantMessage) {
					t.Errorf("got %q on %s, want %q on spec.cni.%s", errs[0].Detail, errs[0].Field, tc.wantMessage, field)
				}
			})
		}
	}
}

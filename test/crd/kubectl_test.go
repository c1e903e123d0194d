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

package crd

import (
	"os"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
)

// What a user types, run with the kubectl built next to the envtest
// apiserver.
var _ = Describe("kubectl", func() {
	It("applies config/samples/ and lists them with the printer columns", func() {
		ns := newNamespace()
		DeferCleanup(func() {
			mesh := &meshv1.AmbientMesh{}
			mesh.Name = meshv1.MeshName
			Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, mesh))).To(Succeed())
		})

		out, err := runKubectl("apply", "-n", ns, "-f", filepath.Join(repoRoot, "config", "samples")+"/")
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(out).To(ContainSubstring("ambientmesh.mesh.ambientmesh.dev/default created"))
		Expect(out).To(ContainSubstring("waypoint.mesh.ambientmesh.dev/waypoint created"))
		Expect(out).To(ContainSubstring("meshpolicy.mesh.ambientmesh.dev/deny-legacy created"))

		// A second apply of unchanged files changes nothing.
		out, err = runKubectl("apply", "-n", ns, "-f", filepath.Join(repoRoot, "config", "samples")+"/")
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(out).NotTo(ContainSubstring("created"))
		Expect(out).To(ContainSubstring("ambientmesh.mesh.ambientmesh.dev/default unchanged"))

		out, err = runKubectl("get", "ambientmesh")
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(strings.Fields(firstLine(out))).To(Equal([]string{"NAME", "VERSION", "PHASE", "READY", "AGE"}))
		Expect(out).To(MatchRegexp(`(?m)^default\s`))

		// The category lists every kind of the mesh at once.
		out, err = runKubectl("get", "ambient", "-A")
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(out).To(ContainSubstring("ambientmesh.mesh.ambientmesh.dev/default"))
		Expect(out).To(ContainSubstring("waypoint.mesh.ambientmesh.dev/waypoint"))
		Expect(out).To(ContainSubstring("meshpolicy.mesh.ambientmesh.dev/deny-legacy"))

		out, err = runKubectl("get", "meshpolicies", "-n", ns)
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(strings.Fields(firstLine(out))).To(Equal([]string{"NAME", "ACTION", "ENFORCED-BY", "ACCEPTED", "AGE"}))
		Expect(out).To(MatchRegexp(`deny-legacy\s+DENY`))

		out, err = runKubectl("get", "wp", "-n", ns, "-o", "wide")
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(strings.Fields(firstLine(out))).To(Equal([]string{"NAME", "FOR", "ADDRESS", "PROGRAMMED", "READY", "AGE"}))
		Expect(out).To(MatchRegexp(`waypoint\s+service`))
	})

	It("shows the field and the reason when it refuses an object", func() {
		ns := newNamespace()
		file := filepath.Join(GinkgoT().TempDir(), "bad-policy.yaml")
		Expect(os.WriteFile(file, []byte(policyWith(`{rules: [{from: [{principals: ["spiffe://cluster.local/shop/frontend"]}]}]}`)), 0o600)).To(Succeed())
		out, err := runKubectl("apply", "-n", ns, "-f", file)
		Expect(err).To(HaveOccurred(), out)
		Expect(out).To(ContainSubstring(`The MeshPolicy "policy" is invalid: spec.rules[0].from[0].principals[0]: Invalid value: "spiffe://cluster.local/shop/frontend": ` +
			"must be a SPIFFE id of the form spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>"))
	})

	It("renders the samples with kustomize", func() {
		out, err := runKubectl("kustomize", filepath.Join(repoRoot, "config", "samples"))
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(strings.Count(out, "kind: MeshPolicy")).To(Equal(3))
		Expect(out).To(ContainSubstring("kind: AmbientMesh"))
		Expect(out).To(ContainSubstring("kind: Waypoint"))
	})

	DescribeTable("explain shows the field documentation",
		func(field string, want ...string) {
			// The apiserver publishes a new CRD's OpenAPI a moment after
			// the CRD is established.
			Eventually(func(g Gomega) {
				out, err := runKubectl("explain", field)
				g.Expect(err).NotTo(HaveOccurred(), out)
				for _, w := range want {
					g.Expect(out).To(ContainSubstring(w))
				}
			}).WithTimeout(30 * time.Second).WithPolling(250 * time.Millisecond).Should(Succeed())
		},
		Entry("the kind", "ambientmesh",
			"KIND:       AmbientMesh", "AmbientMesh installs and runs the ambient mesh"),
		Entry("ambientmesh.spec", "ambientmesh.spec",
			"spec is the desired installation",
			"version of the mesh components to install",
			"namespace the mesh components are installed in",
			"trustDomain is the trust domain of every workload identity"),
		Entry("ambientmesh.spec.identity.issuerRef", "ambientmesh.spec.identity.issuerRef",
			"names an existing cert-manager issuer",
			"kind of the issuer: Issuer (in spec.namespace) or ClusterIssuer"),
		Entry("ambientmesh.spec.cni.redirection", "ambientmesh.spec.cni.redirection",
			"redirection is the packet filter", "ENUM:", "iptables", "nftables"),
		Entry("waypoint.spec.autoscaling", "waypoint.spec.autoscaling",
			"autoscaling scales the waypoint proxy", "maxReplicas"),
		Entry("meshpolicy.spec.rules.from.principals", "meshpolicy.spec.rules.from.principals",
			"principals are peer identities as SPIFFE ids"),
	)
})

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

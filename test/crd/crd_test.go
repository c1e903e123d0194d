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
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
)

var _ = Describe("CRD installation", func() {
	It("installs the three kinds, established, with their scope and short names", func() {
		want := map[string]struct {
			scope     apiextensionsv1.ResourceScope
			shortName string
		}{
			"ambientmeshes.mesh.ambientmesh.dev": {apiextensionsv1.ClusterScoped, "am"},
			"waypoints.mesh.ambientmesh.dev":     {apiextensionsv1.NamespaceScoped, "wp"},
			"meshpolicies.mesh.ambientmesh.dev":  {apiextensionsv1.NamespaceScoped, "mp"},
		}
		for name, w := range want {
			crd := &apiextensionsv1.CustomResourceDefinition{}
			Expect(k8sClient.Get(ctx, client.ObjectKey{Name: name}, crd)).To(Succeed(), name)
			Expect(crd.Spec.Scope).To(Equal(w.scope), name)
			Expect(crd.Spec.Names.ShortNames).To(ConsistOf(w.shortName), name)
			Expect(crd.Status.Conditions).To(ContainElement(And(
				HaveField("Type", apiextensionsv1.Established),
				HaveField("Status", apiextensionsv1.ConditionTrue),
			)), name)
		}
	})
})

var _ = Describe("Samples", func() {
	It("accepts every object in config/samples and covers every kind", func() {
		ns := newNamespace()
		kinds := map[string]int{}
		for _, file := range sampleFiles() {
			for _, obj := range readObjects(file) {
				Expect(create(obj, ns)).To(Succeed(), "sample %s (%s %s) was refused", file, obj.GetKind(), obj.GetName())
				kinds[obj.GetKind()]++
			}
		}
		Expect(kinds).To(HaveKeyWithValue("AmbientMesh", 1))
		Expect(kinds).To(HaveKeyWithValue("Waypoint", BeNumerically(">=", 1)))
		// An L4 ALLOW, a DENY and an L7 policy.
		Expect(kinds).To(HaveKeyWithValue("MeshPolicy", BeNumerically(">=", 3)))

		policies := &meshv1.MeshPolicyList{}
		Expect(k8sClient.List(ctx, policies, client.InNamespace(ns))).To(Succeed())
		var actions []meshv1.PolicyAction
		var l7 int
		for _, p := range policies.Items {
			actions = append(actions, p.Spec.Action)
			if p.HasL7Rules() {
				l7++
			}
		}
		Expect(actions).To(ContainElements(meshv1.ActionAllow, meshv1.ActionDeny))
		Expect(l7).To(BeNumerically(">=", 1), "no sample shows an L7 policy")
	})
})

var _ = Describe("Defaults", func() {
	It("fills an AmbientMesh written with no spec at all", func() {
		Expect(create(fromYAML(`
apiVersion: mesh.ambientmesh.dev/v1alpha1
kind: AmbientMesh
metadata: {name: default}
`), "")).To(Succeed())
		spec := getMesh().Spec
		Expect(spec.Version).To(Equal(meshv1.DefaultVersion))
		Expect(spec.Namespace).To(Equal("ambient-system"))
		Expect(spec.TrustDomain).To(Equal("cluster.local"))
		Expect(spec.Identity.IssuerRef).To(BeNil(), "no issuerRef means the operator manages the CA")
		Expect(spec.Identity.WorkloadCertTTL).NotTo(BeNil())
		Expect(spec.Identity.WorkloadCertTTL.Duration).To(Equal(24 * time.Hour))
		Expect(spec.Identity.RootCATTL.Duration).To(Equal(87600 * time.Hour))
		Expect(spec.ZTunnel.DrainPeriod.Duration).To(Equal(30 * time.Second))
		Expect(spec.ZTunnel.UpdateStrategy).To(Equal(meshv1.UpdateNodeByNode))
		Expect(spec.ZTunnel.LogLevel).To(Equal(meshv1.LogLevelInfo))
		Expect(spec.ControlPlane.LogLevel).To(Equal(meshv1.LogLevelInfo))
		Expect(*spec.ControlPlane.Replicas).To(BeEquivalentTo(1))
		Expect(spec.CNI.BinDir).To(Equal("/opt/cni/bin"))
		Expect(spec.CNI.ConfDir).To(Equal("/etc/cni/net.d"))
		Expect(spec.CNI.Chained).To(HaveValue(BeTrue()))
		Expect(spec.CNI.Redirection).To(Equal(meshv1.RedirectionNFTables))
		Expect(spec.Upgrade.Paused).To(HaveValue(BeFalse()))
		Expect(spec.Upgrade.NodeReadyTimeout.Duration).To(Equal(5 * time.Minute))
	})

	It("defaults an issuerRef to a cert-manager Issuer", func() {
		Expect(create(fromYAML(`
apiVersion: mesh.ambientmesh.dev/v1alpha1
kind: AmbientMesh
metadata: {name: default}
spec:
  identity:
    issuerRef: {name: mesh-ca}
`), "")).To(Succeed())
		ref := getMesh().Spec.Identity.IssuerRef
		Expect(ref).To(HaveValue(Equal(meshv1.IssuerReference{Name: "mesh-ca", Kind: "Issuer", Group: "cert-manager.io"})))
	})

	It("defaults a Waypoint to service traffic and autoscaling bounds", func() {
		ns := newNamespace()
		Expect(create(fromYAML(`
apiVersion: mesh.ambientmesh.dev/v1alpha1
kind: Waypoint
metadata: {name: plain}
`), ns)).To(Succeed())
		Expect(create(fromYAML(`
apiVersion: mesh.ambientmesh.dev/v1alpha1
kind: Waypoint
metadata: {name: scaled}
spec:
  autoscaling: {maxReplicas: 4}
`), ns)).To(Succeed())
		plain, scaled := &meshv1.Waypoint{}, &meshv1.Waypoint{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "plain"}, plain)).To(Succeed())
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "scaled"}, scaled)).To(Succeed())
		Expect(plain.Spec.For).To(Equal(meshv1.WaypointForService))
		Expect(plain.Spec.Replicas).To(BeNil(), "replicas has no CRD default: it would clash with autoscaling")
		Expect(plain.Spec.FixedReplicas()).To(BeEquivalentTo(1))
		Expect(scaled.Spec.Autoscaling.MinReplicas).To(HaveValue(BeEquivalentTo(1)))
		Expect(scaled.Spec.Autoscaling.TargetCPUUtilizationPercentage).To(HaveValue(BeEquivalentTo(80)))
	})

	It("defaults a MeshPolicy's action to ALLOW", func() {
		ns := newNamespace()
		Expect(create(fromYAML(`
apiVersion: mesh.ambientmesh.dev/v1alpha1
kind: MeshPolicy
metadata: {name: p}
spec:
  rules: [{from: [{namespaces: [shop]}]}]
`), ns)).To(Succeed())
		p := &meshv1.MeshPolicy{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "p"}, p)).To(Succeed())
		Expect(p.Spec.Action).To(Equal(meshv1.ActionAllow))
	})
})

var _ = Describe("Validation", func() {
	DescribeTable("refuses invalid objects with a field-level error",
		func(doc, field, message string) {
			expectFieldError(create(fromYAML(doc), newNamespace()), field, message)
		},
		// AmbientMesh
		Entry("an AmbientMesh not named default", `
apiVersion: mesh.ambientmesh.dev/v1alpha1
kind: AmbientMesh
metadata: {name: mesh}
`, "<nil>", "AmbientMesh is a singleton: its name must be 'default'"), // a rule on the whole object: the API server names no field
		Entry("an unknown redirection backend", meshWith(`{cni: {redirection: ebpf}}`),
			"spec.cni.redirection", `Unsupported value: "ebpf"`),
		Entry("an unknown log level", meshWith(`{ztunnel: {logLevel: verbose}}`),
			"spec.ztunnel.logLevel", `Unsupported value: "verbose"`),
		Entry("an unknown ztunnel update strategy", meshWith(`{ztunnel: {updateStrategy: OnDelete}}`),
			"spec.ztunnel.updateStrategy", `Unsupported value: "OnDelete"`),
		Entry("a version that is not semver", meshWith(`{version: latest}`),
			"spec.version", "should match"),
		Entry("a namespace that is not a DNS label", meshWith(`{namespace: Ambient_System}`),
			"spec.namespace", "should match"),
		Entry("a trust domain with a path", meshWith(`{trustDomain: "example.org/x"}`),
			"spec.trustDomain", "should match"),
		Entry("a workload certificate TTL under 1h", meshWith(`{identity: {workloadCertTTL: 10m}}`),
			"spec.identity.workloadCertTTL", "workloadCertTTL must be between 1h and 720h"),
		Entry("a workload certificate TTL over 30 days", meshWith(`{identity: {workloadCertTTL: 721h}}`),
			"spec.identity.workloadCertTTL", "workloadCertTTL must be between 1h and 720h"),
		Entry("a TTL that is not a duration", meshWith(`{identity: {workloadCertTTL: "one day"}}`),
			"spec.identity.workloadCertTTL", "should match"),
		Entry("a root CA that does not outlive two workload certificates", meshWith(`{identity: {workloadCertTTL: 24h, rootCATTL: 36h}}`),
			"spec.identity.rootCATTL", "rootCATTL must be at least twice workloadCertTTL"),
		Entry("a cert-manager issuer kind that does not exist", meshWith(`{identity: {issuerRef: {name: ca, kind: VaultIssuer}}}`),
			"spec.identity.issuerRef.kind", "kind must be Issuer or ClusterIssuer for group cert-manager.io"),
		Entry("an issuerRef without a name", meshWith(`{identity: {issuerRef: {kind: ClusterIssuer}}}`),
			"spec.identity.issuerRef.name", "Required value"),
		Entry("a relative CNI bin dir", meshWith(`{cni: {binDir: opt/cni/bin}}`),
			"spec.cni.binDir", "should match"),
		Entry("a drain period over 1h", meshWith(`{ztunnel: {drainPeriod: 2h}}`),
			"spec.ztunnel.drainPeriod", "drainPeriod must be at most 1h"),
		Entry("a node ready timeout under 30s", meshWith(`{upgrade: {nodeReadyTimeout: 5s}}`),
			"spec.upgrade.nodeReadyTimeout", "nodeReadyTimeout must be between 30s and 1h"),
		Entry("zero control plane replicas", meshWith(`{controlPlane: {replicas: 0}}`),
			"spec.controlPlane.replicas", "should be greater than or equal to 1"),

		// Waypoint
		Entry("an unknown waypoint traffic type", waypointWith(`{for: ingress}`),
			"spec.for", `Unsupported value: "ingress"`),
		Entry("replicas and autoscaling together", waypointWith(`{replicas: 2, autoscaling: {maxReplicas: 3}}`),
			"spec.autoscaling", "set replicas or autoscaling, not both"),
		Entry("autoscaling with min above max", waypointWith(`{autoscaling: {minReplicas: 5, maxReplicas: 2}}`),
			"spec.autoscaling.minReplicas", "minReplicas must not exceed maxReplicas"),
		Entry("autoscaling without maxReplicas", waypointWith(`{autoscaling: {minReplicas: 2}}`),
			"spec.autoscaling.maxReplicas", "Required value"),

		// MeshPolicy
		Entry("a principal that is not a SPIFFE id", policyWith(`{rules: [{from: [{principals: ["cluster.local/ns/shop/sa/frontend"]}]}]}`),
			"spec.rules[0].from[0].principals[0]", "must be a SPIFFE id of the form spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>"),
		Entry("a SPIFFE id without a service account", policyWith(`{rules: [{from: [{principals: ["spiffe://cluster.local/ns/shop"]}]}]}`),
			"spec.rules[0].from[0].principals[0]", "must be a SPIFFE id"),
		Entry("a service account without a namespace", policyWith(`{rules: [{from: [{serviceAccounts: [frontend]}]}]}`),
			"spec.rules[0].from[0].serviceAccounts[0]", "must be a service account as <namespace>/<name>"),
		Entry("a CIDR with a prefix too long", policyWith(`{rules: [{from: [{ipBlocks: ["10.0.0.0/33"]}]}]}`),
			"spec.rules[0].from[0].ipBlocks[0]", "must be an IP address or a CIDR"),
		Entry("an ipBlock that is a hostname", policyWith(`{rules: [{from: [{ipBlocks: ["example.com"]}]}]}`),
			"spec.rules[0].from[0].ipBlocks[0]", "must be an IP address or a CIDR"),
		Entry("a selector and targetRefs together", policyWith(`{selector: {matchLabels: {app: a}}, targetRefs: [{kind: Service, name: a}], rules: [{}]}`),
			"spec.targetRefs", "set selector or targetRefs, not both"),
		Entry("an unknown action", policyWith(`{action: REJECT, rules: [{}]}`),
			"spec.action", `Unsupported value: "REJECT"`),
		Entry("a path with both exact and prefix", policyWith(`{rules: [{to: [{paths: [{exact: /a, prefix: /b}]}]}]}`),
			"spec.rules[0].to[0].paths[0]", "set exactly one of exact or prefix"),
		Entry("a path with neither exact nor prefix", policyWith(`{rules: [{to: [{paths: [{}]}]}]}`),
			"spec.rules[0].to[0].paths[0]", "set exactly one of exact or prefix"),
		Entry("a relative path", policyWith(`{rules: [{to: [{paths: [{prefix: api/}]}]}]}`),
			"spec.rules[0].to[0].paths[0].prefix", "should match"),
		Entry("a port out of range", policyWith(`{rules: [{to: [{ports: [70000]}]}]}`),
			"spec.rules[0].to[0].ports[0]", "should be less than or equal to 65535"),
		Entry("a lower-case HTTP method", policyWith(`{rules: [{to: [{methods: [get]}]}]}`),
			"spec.rules[0].to[0].methods[0]", "should match"),
		Entry("a Waypoint target with the core group", policyWith(`{targetRefs: [{group: "", kind: Waypoint, name: wp}], rules: [{}]}`),
			"spec.targetRefs[0].group", "group must be mesh.ambientmesh.dev for a Waypoint"),
		Entry("a target kind a policy cannot attach to", policyWith(`{targetRefs: [{kind: Deployment, name: d}], rules: [{}]}`),
			"spec.targetRefs[0].kind", `Unsupported value: "Deployment"`),
		Entry("mtls on a targetRef policy", policyWith(`{targetRefs: [{kind: Service, name: a}], mtls: {mode: STRICT}}`),
			"spec.mtls", "mtls applies to workloads"),
		Entry("an unknown mtls mode", policyWith(`{mtls: {mode: DISABLE}}`),
			"spec.mtls.mode", `Unsupported value: "DISABLE"`),
		Entry("a policy with neither rules nor mtls", policyWith(`{action: DENY}`),
			"spec", "set rules, mtls, or both"),
		Entry("an empty source", policyWith(`{rules: [{from: [{}]}]}`),
			"spec.rules[0].from[0]", "set at least one of principals, serviceAccounts, namespaces or ipBlocks"),
		Entry("an empty destination", policyWith(`{rules: [{to: [{}]}]}`),
			"spec.rules[0].to[0]", "set at least one of ports, methods, paths or hosts"),
		Entry("a condition on a header and a claim at once", policyWith(`{rules: [{when: [{header: x-a, claim: sub, values: [a]}]}]}`),
			"spec.rules[0].when[0]", "set exactly one of header or claim"),
		Entry("a condition without values", policyWith(`{rules: [{when: [{header: x-a}]}]}`),
			"spec.rules[0].when[0].values", "Required value"),
	)

	DescribeTable("accepts valid edge cases",
		func(doc string) {
			Expect(create(fromYAML(doc), newNamespace())).To(Succeed())
		},
		Entry("IPv6 CIDRs and plain addresses", policyWith(`{action: DENY, rules: [{from: [{ipBlocks: ["fd00::/8", "192.168.1.10", "2001:db8::1", "10.0.0.0/8"]}]}]}`)),
		Entry("a deny-all policy (one empty rule)", policyWith(`{action: DENY, rules: [{}]}`)),
		Entry("a peer-authentication-only policy", policyWith(`{mtls: {mode: PERMISSIVE}}`)),
		Entry("targets with explicit groups", policyWith(`{targetRefs: [{group: mesh.ambientmesh.dev, kind: Waypoint, name: wp}, {group: "", kind: Service, name: s}, {kind: Namespace, name: ns}], rules: [{}]}`)),
		Entry("an AUDIT policy with L7 conditions", policyWith(`{action: AUDIT, rules: [{to: [{hosts: ["*.example.com", "api.example.com:8080"]}], when: [{claim: realm.roles, values: [admin]}]}]}`)),
		Entry("a waypoint scaled to zero", waypointWith(`{replicas: 0}`)),
		Entry("an external cert-manager issuer", meshWith(`{identity: {issuerRef: {group: awspca.cert-manager.io, kind: AWSPCAClusterIssuer, name: pca}}}`)),
		Entry("a zero drain period and a v-prefixed version", meshWith(`{version: v0.1.0, ztunnel: {drainPeriod: 0s}}`)),
		Entry("a root CA exactly twice the workload TTL", meshWith(`{identity: {workloadCertTTL: 720h, rootCATTL: 1440h}}`)),
	)
})

var _ = Describe("Immutable fields", func() {
	BeforeEach(func() {
		Expect(create(fromYAML(meshWith(`{namespace: mesh-a, trustDomain: a.example}`)), "")).To(Succeed())
	})

	It("refuses a change of namespace", func() {
		mesh := getMesh()
		mesh.Spec.Namespace = "mesh-b"
		expectFieldError(k8sClient.Update(ctx, mesh), "spec.namespace", "namespace is immutable")
	})

	It("refuses dropping namespace, which would default it to another value", func() {
		mesh := getMesh()
		mesh.Spec.Namespace = ""
		expectFieldError(k8sClient.Update(ctx, mesh), "spec.namespace", "namespace is immutable")
	})

	It("refuses a change of trust domain", func() {
		mesh := getMesh()
		mesh.Spec.TrustDomain = "b.example"
		expectFieldError(k8sClient.Update(ctx, mesh), "spec.trustDomain", "trustDomain is immutable")
	})

	It("accepts a change of version (an upgrade)", func() {
		mesh := getMesh()
		mesh.Spec.Version = "0.2.0"
		Expect(k8sClient.Update(ctx, mesh)).To(Succeed())
		Expect(getMesh().Spec.Version).To(Equal("0.2.0"))
	})
})

func meshWith(spec string) string {
	return `
apiVersion: mesh.ambientmesh.dev/v1alpha1
kind: AmbientMesh
metadata: {name: default}
spec: ` + spec
}

func waypointWith(spec string) string {
	return `
apiVersion: mesh.ambientmesh.dev/v1alpha1
kind: Waypoint
metadata: {name: wp}
spec: ` + spec
}

func policyWith(spec string) string {
	return `
apiVersion: mesh.ambientmesh.dev/v1alpha1
kind: MeshPolicy
metadata: {name: policy}
spec: ` + spec
}

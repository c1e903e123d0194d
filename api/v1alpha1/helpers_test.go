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
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
)

func TestSPIFFEIdentity(t *testing.T) {
	got := meshv1.SPIFFEIdentity("cluster.local", "shop", "frontend")
	if want := "spiffe://cluster.local/ns/shop/sa/frontend"; got != want {
		t.Errorf("SPIFFEIdentity = %q, want %q", got, want)
	}
}

func TestServiceAccountRef(t *testing.T) {
	ref := meshv1.ServiceAccountRef("shop/frontend")
	ns, name := ref.Split()
	if ns != "shop" || name != "frontend" {
		t.Errorf("Split = (%q, %q), want (shop, frontend)", ns, name)
	}
	if got, want := ref.Identity("example.org"), "spiffe://example.org/ns/shop/sa/frontend"; got != want {
		t.Errorf("Identity = %q, want %q", got, want)
	}
}

func TestHasL7Rules(t *testing.T) {
	l4 := meshv1.Rule{
		From: []meshv1.Source{{Namespaces: []string{"shop"}}},
		To:   []meshv1.Destination{{Ports: []int32{8080}}},
	}
	tests := []struct {
		name  string
		rules []meshv1.Rule
		want  bool
	}{
		{"no rules (mtls only)", nil, false},
		{"empty rule matches everything at L4", []meshv1.Rule{{}}, false},
		{"ports and sources only", []meshv1.Rule{l4}, false},
		{"methods", []meshv1.Rule{l4, {To: []meshv1.Destination{{Methods: []string{"GET"}}}}}, true},
		{"paths", []meshv1.Rule{{To: []meshv1.Destination{{Paths: []meshv1.PathMatch{{Prefix: "/api/"}}}}}}, true},
		{"hosts", []meshv1.Rule{{To: []meshv1.Destination{{Ports: []int32{80}}, {Hosts: []string{"a.example"}}}}}, true},
		{"when header", []meshv1.Rule{{When: []meshv1.RequestCondition{{Header: "x-tenant", Values: []string{"a"}}}}}, true},
		{"when claim", []meshv1.Rule{{When: []meshv1.RequestCondition{{Claim: "sub", Values: []string{"a"}}}}}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := &meshv1.MeshPolicy{Spec: meshv1.MeshPolicySpec{Rules: tc.rules}}
			if got := p.HasL7Rules(); got != tc.want {
				t.Errorf("HasL7Rules = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestEffectiveGroupInfersFromKind(t *testing.T) {
	tests := []struct {
		ref  meshv1.PolicyTargetReference
		want string
	}{
		{meshv1.PolicyTargetReference{Kind: meshv1.TargetKindService, Name: "a"}, ""},
		{meshv1.PolicyTargetReference{Kind: meshv1.TargetKindNamespace, Name: "a"}, ""},
		{meshv1.PolicyTargetReference{Kind: meshv1.TargetKindWaypoint, Name: "a"}, "mesh.ambientmesh.dev"},
		{meshv1.PolicyTargetReference{Group: "mesh.ambientmesh.dev", Kind: meshv1.TargetKindWaypoint, Name: "a"}, "mesh.ambientmesh.dev"},
	}
	for _, tc := range tests {
		if got := tc.ref.EffectiveGroup(); got != tc.want {
			t.Errorf("%s: EffectiveGroup = %q, want %q", tc.ref.Kind, got, tc.want)
		}
	}
}

// Objects built in Go (fake clients, unit tests) skip API-server defaulting;
// the accessors must give the same answers the CRD defaults would.
func TestAccessorsOnUnsetFieldsReturnDefaults(t *testing.T) {
	var mesh meshv1.AmbientMeshSpec
	checks := []struct {
		name      string
		got, want any
	}{
		{"namespace", mesh.InstallNamespace(), "ambient-system"},
		{"trustDomain", mesh.EffectiveTrustDomain(), "cluster.local"},
		{"version", mesh.EffectiveVersion(), meshv1.DefaultVersion},
		{"workloadCertTTL", mesh.Identity.EffectiveWorkloadCertTTL(), 24 * time.Hour},
		{"rootCATTL", mesh.Identity.EffectiveRootCATTL(), 87600 * time.Hour},
		{"drainPeriod", mesh.ZTunnel.EffectiveDrainPeriod(), 30 * time.Second},
		{"updateStrategy", mesh.ZTunnel.EffectiveUpdateStrategy(), meshv1.UpdateNodeByNode},
		{"binDir", mesh.CNI.EffectiveBinDir(), "/opt/cni/bin"},
		{"confDir", mesh.CNI.EffectiveConfDir(), "/etc/cni/net.d"},
		{"chained", mesh.CNI.IsChained(), true},
		{"redirection", mesh.CNI.EffectiveRedirection(), meshv1.RedirectionNFTables},
		{"logLevel", mesh.ZTunnel.EffectiveLogLevel(), meshv1.LogLevelInfo},
		{"paused", mesh.Upgrade.IsPaused(), false},
		{"nodeReadyTimeout", mesh.Upgrade.EffectiveNodeReadyTimeout(), 5 * time.Minute},
		{"waypoint for", (&meshv1.WaypointSpec{}).EffectiveFor(), meshv1.WaypointForService},
		{"waypoint replicas", (&meshv1.WaypointSpec{}).FixedReplicas(), int32(1)},
		{"policy action", (&meshv1.MeshPolicySpec{}).EffectiveAction(), meshv1.ActionAllow},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestAccessorsReturnSetValues(t *testing.T) {
	mesh := meshv1.AmbientMeshSpec{
		Namespace: "mesh", TrustDomain: "example.org", Version: "1.2.3",
		Identity: meshv1.IdentitySpec{WorkloadCertTTL: &metav1.Duration{Duration: time.Hour}},
		ZTunnel:  meshv1.ZTunnelSpec{DrainPeriod: &metav1.Duration{Duration: 0}},
		CNI:      meshv1.CNISpec{Chained: ptr.To(false), Redirection: meshv1.RedirectionIPTables},
		Upgrade:  meshv1.UpgradePolicy{Paused: ptr.To(true)},
	}
	if mesh.InstallNamespace() != "mesh" || mesh.EffectiveTrustDomain() != "example.org" || mesh.EffectiveVersion() != "1.2.3" {
		t.Errorf("string accessors ignored set values: %q %q %q", mesh.InstallNamespace(), mesh.EffectiveTrustDomain(), mesh.EffectiveVersion())
	}
	if got := mesh.Identity.EffectiveWorkloadCertTTL(); got != time.Hour {
		t.Errorf("workloadCertTTL = %v, want 1h", got)
	}
	// A drain period of zero is a valid choice (stop at once), not "unset".
	if got := mesh.ZTunnel.EffectiveDrainPeriod(); got != 0 {
		t.Errorf("drainPeriod = %v, want 0", got)
	}
	if mesh.CNI.IsChained() || mesh.CNI.EffectiveRedirection() != meshv1.RedirectionIPTables || !mesh.Upgrade.IsPaused() {
		t.Errorf("cni/upgrade accessors ignored set values")
	}
	if got := (&meshv1.WaypointSpec{Replicas: ptr.To[int32](0)}).FixedReplicas(); got != 0 {
		t.Errorf("FixedReplicas = %d, want 0 (scaled to zero)", got)
	}
}

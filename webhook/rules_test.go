package webhook

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
)

// Unit tests of the pure rules. The envtest suite (suite_test.go) runs the
// same rules through a real apiserver and the webhook server.

func onlyError(t *testing.T, errs field.ErrorList, wantField, wantDetail string) {
	t.Helper()
	if wantField == "" {
		if len(errs) != 0 {
			t.Fatalf("want no error, got %v", errs)
		}
		return
	}
	if len(errs) != 1 {
		t.Fatalf("want one error on %s, got %v", wantField, errs)
	}
	if errs[0].Field != wantField || !strings.Contains(errs[0].Error(), wantDetail) {
		t.Fatalf("want error on %s containing %q, got %q on %s", wantField, wantDetail, errs[0].Error(), errs[0].Field)
	}
}

// The version rules use the operator's real table (internal/versions):
// 0.1.0, 0.1.1, 0.2.0, 0.3.0.
func TestValidateVersionChange(t *testing.T) {
	path := field.NewPath("spec", "version")
	for _, tc := range []struct {
		installed, target, wantDetail string
	}{
		{"", "0.1.0", ""},
		{"", "v0.3.0", ""},
		{"", "9.9.9", `Unsupported value: "9.9.9": supported values: "0.1.0", "0.1.1", "0.2.0", "0.3.0"`},
		{"0.1.0", "0.2.0", ""},
		{"0.1.0", "0.1.1", ""},
		{"v0.2.0", "0.2.0", ""},
		{"0.2.0", "0.1.1", "downgrade not supported: from 0.2.0 to 0.1.1"},
		{"0.1.0", "0.3.0", "skips a minor version; upgrade one minor version at a time (next: 0.2.0)"},
		{"0.1.0", "0.4.0", "Unsupported value"},
	} {
		want := ""
		if tc.wantDetail != "" {
			want = "spec.version"
		}
		onlyError(t, validateVersionChange(path, tc.installed, tc.target), want, tc.wantDetail)
	}
}

func TestValidateIssuerKind(t *testing.T) {
	path := field.NewPath("spec", "identity", "issuerRef")
	for _, tc := range []struct {
		ref       *meshv1alpha1.IssuerReference
		wantField string
	}{
		{nil, ""},
		{&meshv1alpha1.IssuerReference{Name: "ca", Kind: "Issuer", Group: certManagerGroup}, ""},
		{&meshv1alpha1.IssuerReference{Name: "ca", Kind: "ClusterIssuer"}, ""},
		{&meshv1alpha1.IssuerReference{Name: "ca"}, ""},
		{&meshv1alpha1.IssuerReference{Name: "ca", Kind: "Certificate", Group: certManagerGroup}, "spec.identity.issuerRef.kind"},
		{&meshv1alpha1.IssuerReference{Name: "ca", Kind: "AWSPCAIssuer", Group: "awspca.cert-manager.io"}, ""},
	} {
		onlyError(t, validateIssuerKind(path, tc.ref), tc.wantField, "supported values")
	}
}

func TestAmbientMeshValidatorVersion(t *testing.T) {
	v := &AmbientMeshValidator{}
	mesh := func(version, status string) *meshv1alpha1.AmbientMesh {
		m := &meshv1alpha1.AmbientMesh{ObjectMeta: metav1.ObjectMeta{Name: "default"}}
		m.Spec.Version = version
		m.Status.Version = status
		return m
	}
	ctx := context.Background()
	// The installed version (status) counts, not only the old spec: during
	// an upgrade to 0.2.0 status still says 0.1.0, and going back is allowed.
	if _, err := v.ValidateUpdate(ctx, mesh("0.2.0", "0.1.0"), mesh("0.1.0", "0.1.0")); err != nil {
		t.Fatalf("rollback of a running upgrade refused: %v", err)
	}
	if _, err := v.ValidateUpdate(ctx, mesh("0.2.0", "0.2.0"), mesh("0.1.0", "")); err == nil || !strings.Contains(err.Error(), "downgrade not supported") {
		t.Fatalf("downgrade: got %v", err)
	}
	// An unchanged version that this operator no longer installs does not
	// block other edits.
	if _, err := v.ValidateUpdate(ctx, mesh("0.0.1", "0.0.1"), mesh("v0.0.1", "0.0.1")); err != nil {
		t.Fatalf("unchanged old version refused: %v", err)
	}
}

func TestValidateImmutable(t *testing.T) {
	v := &AmbientMeshValidator{}
	old := &meshv1alpha1.AmbientMesh{ObjectMeta: metav1.ObjectMeta{Name: "default"}}
	changed := old.DeepCopy()
	changed.Spec.TrustDomain = "example.org"
	changed.Spec.Namespace = "mesh"
	_, err := v.ValidateUpdate(context.Background(), old, changed)
	if err == nil || !strings.Contains(err.Error(), `spec.namespace: Forbidden: is immutable (was "ambient-system")`) ||
		!strings.Contains(err.Error(), `spec.trustDomain: Forbidden: is immutable (was "cluster.local")`) {
		t.Fatalf("want both immutable fields refused, got %v", err)
	}
}

func TestValidateAllowedNamespaces(t *testing.T) {
	path := field.NewPath("spec", "allowedNamespaces")
	for _, tc := range []struct {
		name       string
		allowed    *meshv1alpha1.WaypointAllowedNamespaces
		wantField  string
		wantDetail string
	}{
		{"unset", nil, "", ""},
		{"All", &meshv1alpha1.WaypointAllowedNamespaces{From: meshv1alpha1.NamespacesFromAll}, "", ""},
		{"a valid selector", &meshv1alpha1.WaypointAllowedNamespaces{From: meshv1alpha1.NamespacesFromSelector,
			Selector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "team", Operator: metav1.LabelSelectorOpIn, Values: []string{"shop", "books"}}}}}, "", ""},
		{"an unknown operator", &meshv1alpha1.WaypointAllowedNamespaces{From: meshv1alpha1.NamespacesFromSelector,
			Selector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "team", Operator: "Near"}}}},
			"spec.allowedNamespaces.selector.matchExpressions[0].operator", `not a valid selector operator`},
		{"In without values", &meshv1alpha1.WaypointAllowedNamespaces{From: meshv1alpha1.NamespacesFromSelector,
			Selector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "team", Operator: metav1.LabelSelectorOpIn}}}},
			"spec.allowedNamespaces.selector.matchExpressions[0].values", "must be specified"},
		{"an invalid label value", &meshv1alpha1.WaypointAllowedNamespaces{From: meshv1alpha1.NamespacesFromSelector,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "a/b"}}},
			"spec.allowedNamespaces.selector.matchLabels", "a valid label must be"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			onlyError(t, validateAllowedNamespaces(path, tc.allowed), tc.wantField, tc.wantDetail)
		})
	}
}

func TestValidateRuleIdentities(t *testing.T) {
	rules := func(principal meshv1alpha1.SPIFFEID, sa meshv1alpha1.ServiceAccountRef) []meshv1alpha1.Rule {
		return []meshv1alpha1.Rule{{From: []meshv1alpha1.Source{{Namespaces: []string{"x"}}, {
			Principals:      []meshv1alpha1.SPIFFEID{"spiffe://cluster.local/ns/a/sa/b", principal},
			ServiceAccounts: []meshv1alpha1.ServiceAccountRef{sa},
		}}}}
	}
	path := field.NewPath("spec", "rules")
	long := strings.Repeat("n", 64)
	for _, tc := range []struct {
		principal  meshv1alpha1.SPIFFEID
		sa         meshv1alpha1.ServiceAccountRef
		wantField  string
		wantDetail string
	}{
		{"spiffe://cluster.local/ns/shop/sa/frontend", "shop/frontend", "", ""},
		{"spiffe://cluster.local/ns/shop/sa/front..end", "shop/frontend", "spec.rules[0].from[1].principals[1]", "service account"},
		{meshv1alpha1.SPIFFEID("spiffe://cluster.local/ns/" + long + "/sa/x"), "shop/frontend", "spec.rules[0].from[1].principals[1]", "namespace: longer than 63"},
		{"spiffe://cluster.local/ns/shop/sa/frontend", meshv1alpha1.ServiceAccountRef(long + "/x"), "spec.rules[0].from[1].serviceAccounts[0]", "namespace:"},
		{"spiffe://cluster.local/ns/shop/sa/frontend", "shop/a..b", "spec.rules[0].from[1].serviceAccounts[0]", "name:"},
	} {
		onlyError(t, validateRuleIdentities(path, rules(tc.principal, tc.sa)), tc.wantField, tc.wantDetail)
	}
}

func TestValidatePolicyTargets(t *testing.T) {
	policy := &meshv1alpha1.MeshPolicy{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "shop"}}
	path := field.NewPath("spec", "targetRefs")
	policy.Spec.TargetRefs = []meshv1alpha1.PolicyTargetReference{{Kind: "Namespace", Name: "shop"}, {Kind: "Service", Name: "orders"}}
	onlyError(t, validatePolicyTargets(path, policy), "", "")

	policy.Spec.TargetRefs = []meshv1alpha1.PolicyTargetReference{{Kind: "Namespace", Name: "other"}}
	onlyError(t, validatePolicyTargets(path, policy), "spec.targetRefs[0].name", `policy's own namespace "shop"`)

	policy.Spec.TargetRefs = []meshv1alpha1.PolicyTargetReference{{Kind: "Waypoint", Name: "w"}, {Kind: "Waypoint", Group: "mesh.ambientmesh.dev", Name: "w"}}
	onlyError(t, validatePolicyTargets(path, policy), "spec.targetRefs[1]", "Duplicate value")
}

func TestUsesWaypoint(t *testing.T) {
	use := map[string]string{meshv1alpha1.LabelUseWaypoint: "wp"}
	none := map[string]string{meshv1alpha1.LabelUseWaypoint: "none"}
	for _, tc := range []struct {
		ns, obj map[string]string
		want    bool
	}{
		{nil, nil, false},
		{use, nil, true},
		{nil, use, true},
		{use, none, false},
		{none, nil, false},
	} {
		if got := usesWaypoint(tc.ns, tc.obj); got != tc.want {
			t.Errorf("usesWaypoint(%v, %v) = %v, want %v", tc.ns, tc.obj, got, tc.want)
		}
	}
}

func TestDefaulters(t *testing.T) {
	ctx := context.Background()
	wp := &meshv1alpha1.Waypoint{}
	_ = (&WaypointDefaulter{}).Default(ctx, wp)
	if wp.Spec.Replicas == nil || *wp.Spec.Replicas != 1 {
		t.Fatalf("replicas not defaulted to 1: %v", wp.Spec.Replicas)
	}
	scaled := &meshv1alpha1.Waypoint{Spec: meshv1alpha1.WaypointSpec{Autoscaling: &meshv1alpha1.WaypointAutoscaling{MaxReplicas: 3}}}
	_ = (&WaypointDefaulter{}).Default(ctx, scaled)
	if scaled.Spec.Replicas != nil {
		t.Fatalf("replicas set next to autoscaling: %v", *scaled.Spec.Replicas)
	}

	policy := &meshv1alpha1.MeshPolicy{Spec: meshv1alpha1.MeshPolicySpec{TargetRefs: []meshv1alpha1.PolicyTargetReference{
		{Kind: "Waypoint", Name: "w"}, {Kind: "Service", Name: "s"}}}}
	_ = (&MeshPolicyDefaulter{}).Default(ctx, policy)
	if g := policy.Spec.TargetRefs[0].Group; g != "mesh.ambientmesh.dev" {
		t.Fatalf("Waypoint target group = %q", g)
	}
	if g := policy.Spec.TargetRefs[1].Group; g != "" {
		t.Fatalf("Service target group = %q", g)
	}

	mesh := &meshv1alpha1.AmbientMesh{Spec: meshv1alpha1.AmbientMeshSpec{Version: "v0.2.0"}}
	_ = (&AmbientMeshDefaulter{}).Default(ctx, mesh)
	if mesh.Spec.Version != "0.2.0" {
		t.Fatalf("version not canonical: %q", mesh.Spec.Version)
	}
}

// Objects being deleted must stay deletable (their finalizer removed) even
// when they break a rule, e.g. created before the webhook was installed.
func TestUpdatesOfObjectsBeingDeletedPass(t *testing.T) {
	ctx := context.Background()
	now := metav1.Now()
	mesh := &meshv1alpha1.AmbientMesh{ObjectMeta: metav1.ObjectMeta{Name: "default", DeletionTimestamp: &now}}
	mesh.Spec.Version = "9.9.9"
	old := mesh.DeepCopy()
	old.Spec.Version = "0.1.0"
	old.Spec.TrustDomain = "other.example"
	if _, err := (&AmbientMeshValidator{}).ValidateUpdate(ctx, old, mesh); err != nil {
		t.Fatalf("finalizer removal of a mesh being deleted refused: %v", err)
	}
	policy := &meshv1alpha1.MeshPolicy{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "shop", DeletionTimestamp: &now}}
	policy.Spec.TargetRefs = []meshv1alpha1.PolicyTargetReference{{Kind: "Namespace", Name: "elsewhere"}}
	// A nil Reader would panic if the validator looked anything up.
	if _, err := (&MeshPolicyValidator{}).ValidateUpdate(ctx, policy, policy); err != nil {
		t.Fatalf("finalizer removal of a policy being deleted refused: %v", err)
	}
	wp := &meshv1alpha1.Waypoint{ObjectMeta: metav1.ObjectMeta{Name: "w", Namespace: "shop", DeletionTimestamp: &now}}
	wp.Spec.AllowedNamespaces = &meshv1alpha1.WaypointAllowedNamespaces{From: meshv1alpha1.NamespacesFromSelector,
		Selector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "team", Operator: "Near"}}}}
	oldWp := wp.DeepCopy()
	if _, err := (&WaypointValidator{}).ValidateUpdate(ctx, oldWp, wp); err != nil {
		t.Fatalf("finalizer removal of a waypoint being deleted refused: %v", err)
	}
}

func TestValidateJWT(t *testing.T) {
	const publicKey = `{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}`
	const privateKey = `{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","d":"jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI"}]}`
	path := field.NewPath("spec", "jwt")
	for _, tc := range []struct {
		name                  string
		jwt                   meshv1alpha1.JWTSettings
		wantField, wantDetail string
	}{
		{"inline keys", meshv1alpha1.JWTSettings{Issuer: "https://a.example.com", JWKS: publicKey}, "", ""},
		{"https URI", meshv1alpha1.JWTSettings{Issuer: "a", JWKSURI: "https://a.example.com/keys"}, "", ""},
		{"http on localhost", meshv1alpha1.JWTSettings{Issuer: "a", JWKSURI: "http://127.0.0.1:8080/keys"}, "", ""},
		{"blank issuer", meshv1alpha1.JWTSettings{Issuer: "  ", JWKS: publicKey}, "spec.jwt.issuer", "Required value"},
		{"not JSON", meshv1alpha1.JWTSettings{Issuer: "a", JWKS: `{"keys": [`}, "spec.jwt.jwks", "not a JSON Web Key Set"},
		{"unknown key type", meshv1alpha1.JWTSettings{Issuer: "a", JWKS: `{"keys":[{"kty":"XYZ"}]}`}, "spec.jwt.jwks", "not a JSON Web Key Set"},
		{"no keys", meshv1alpha1.JWTSettings{Issuer: "a", JWKS: `{"keys":[]}`}, "spec.jwt.jwks", "no keys"},
		{"private key", meshv1alpha1.JWTSettings{Issuer: "a", JWKS: privateKey}, "spec.jwt.jwks", "keys[0] is a private key"},
		{"plain http", meshv1alpha1.JWTSettings{Issuer: "a", JWKSURI: "http://a.example.com/keys"}, "spec.jwt.jwksUri", "must use https"},
		{"relative URI", meshv1alpha1.JWTSettings{Issuer: "a", JWKSURI: "/keys"}, "spec.jwt.jwksUri", "absolute URL"},
		{"bad port", meshv1alpha1.JWTSettings{Issuer: "a", JWKSURI: "https://a.example.com:99999/keys"}, "spec.jwt.jwksUri", "1-65535"},
		{"neither", meshv1alpha1.JWTSettings{Issuer: "a"}, "spec.jwt.jwks", "Required value"},
		{"bad header", meshv1alpha1.JWTSettings{Issuer: "a", JWKS: publicKey, FromHeaders: []meshv1alpha1.JWTHeader{{Name: "x auth"}}},
			"spec.jwt.fromHeaders[0].name", "Invalid value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			onlyError(t, validateJWT(path, &tc.jwt), tc.wantField, tc.wantDetail)
		})
	}
}

func TestValidateResources(t *testing.T) {
	path := field.NewPath("spec", "resources")
	list := func(kv ...string) corev1.ResourceList {
		l := corev1.ResourceList{}
		for i := 0; i < len(kv); i += 2 {
			l[corev1.ResourceName(kv[i])] = resource.MustParse(kv[i+1])
		}
		return l
	}
	for _, tc := range []struct {
		name                  string
		resources             *corev1.ResourceRequirements
		wantField, wantDetail string
	}{
		{"unset", nil, "", ""},
		{"requests only", &corev1.ResourceRequirements{Requests: list("cpu", "1", "memory", "1Gi")}, "", ""},
		{"request equal to limit", &corev1.ResourceRequirements{Requests: list("memory", "1Gi"), Limits: list("memory", "1024Mi")}, "", ""},
		{"limit without request", &corev1.ResourceRequirements{Limits: list("memory", "512Mi")}, "", ""},
		{"memory request above limit", &corev1.ResourceRequirements{Requests: list("memory", "2Gi"), Limits: list("memory", "1Gi")},
			"spec.resources.requests[memory]", "must be less than or equal to the memory limit 1Gi"},
		{"cpu request above limit", &corev1.ResourceRequirements{Requests: list("cpu", "1500m"), Limits: list("cpu", "1")},
			"spec.resources.requests[cpu]", `Invalid value: "1500m"`},
		{"negative limit", &corev1.ResourceRequirements{Limits: list("memory", "-1Mi")},
			"spec.resources.limits[memory]", "must be greater than or equal to 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			onlyError(t, validateResources(path, tc.resources), tc.wantField, tc.wantDetail)
		})
	}
}

func TestValidateComponents(t *testing.T) {
	for _, tc := range []struct {
		name                  string
		mutate                func(*meshv1alpha1.AmbientMesh)
		wantField, wantDetail string
	}{
		{"defaults", func(*meshv1alpha1.AmbientMesh) {}, "", ""},
		{"valid node selectors", func(m *meshv1alpha1.AmbientMesh) {
			m.Spec.ZTunnel.NodeSelector = map[string]string{"node.kubernetes.io/pool": "mesh-1", "empty": ""}
		}, "", ""},
		{"invalid value", func(m *meshv1alpha1.AmbientMesh) {
			m.Spec.CNI.NodeSelector = map[string]string{"pool": "bad value!"}
		}, "spec.cni.nodeSelector", `Invalid value: "bad value!"`},
		{"invalid key", func(m *meshv1alpha1.AmbientMesh) {
			m.Spec.ControlPlane.NodeSelector = map[string]string{"-pool": "a"}
		}, "spec.controlPlane.nodeSelector", `Invalid value: "-pool"`},
		{"waypoint defaults' resources", func(m *meshv1alpha1.AmbientMesh) {
			m.Spec.Waypoint.Resources = &corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")},
				Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("512Mi")},
			}
		}, "spec.waypoint.resources.requests[memory]", "less than or equal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mesh := &meshv1alpha1.AmbientMesh{}
			tc.mutate(mesh)
			onlyError(t, validateComponents(mesh), tc.wantField, tc.wantDetail)
		})
	}
}

func TestNoMemoryLimitWarning(t *testing.T) {
	path := field.NewPath("spec", "ztunnel", "resources")
	if w := noMemoryLimitWarning(path, nil); w != "" {
		t.Errorf("unset resources (the defaults, with a limit) warned: %s", w)
	}
	withLimit := &corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")}}
	if w := noMemoryLimitWarning(path, withLimit); w != "" {
		t.Errorf("resources with a memory limit warned: %s", w)
	}
	requestsOnly := &corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")}}
	if w := noMemoryLimitWarning(path, requestsOnly); !strings.HasPrefix(w, "spec.ztunnel.resources: no limits.memory") {
		t.Errorf("requests without a memory limit: warning %q", w)
	}
}

func TestValidateMeshPolicySelector(t *testing.T) {
	path := field.NewPath("spec", "selector")
	for _, tc := range []struct {
		name                  string
		selector              *metav1.LabelSelector
		wantField, wantDetail string
	}{
		{"unset", nil, "", ""},
		{"match labels", &metav1.LabelSelector{MatchLabels: map[string]string{"app": "orders"}}, "", ""},
		{"invalid value", &metav1.LabelSelector{MatchLabels: map[string]string{"app": "bad value!"}},
			"spec.selector.matchLabels", `Invalid value: "bad value!"`},
		{"unknown operator", &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: "Near", Values: []string{"x"}}}},
			"spec.selector.matchExpressions[0].operator", `Invalid value: "Near"`},
		{"Exists with values", &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: metav1.LabelSelectorOpExists, Values: []string{"x"}}}},
			"spec.selector.matchExpressions[0].values", "may not be specified"},
		{"invalid expression value", &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: metav1.LabelSelectorOpIn, Values: []string{"a b"}}}},
			"spec.selector.matchExpressions[0].values[0]", `Invalid value: "a b"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			onlyError(t, validateLabelSelector(path, tc.selector), tc.wantField, tc.wantDetail)
		})
	}
}

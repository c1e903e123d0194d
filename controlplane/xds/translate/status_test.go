package translate

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
)

var (
	synced     = ProxySync{Connected: 1, Synced: true}
	readyTrue  = &metav1.Condition{Type: meshv1.WaypointConditionReady, Status: metav1.ConditionTrue, Reason: meshv1.ReasonReady}
	readyFalse = &metav1.Condition{Type: meshv1.WaypointConditionReady, Status: metav1.ConditionFalse,
		Reason: meshv1.ReasonNoReadyReplicas, Message: "0/1 replicas available"}
)

func l7Policy(action meshv1.PolicyAction, refs ...meshv1.PolicyTargetReference) *meshv1.MeshPolicy {
	return &meshv1.MeshPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "get-only", Generation: 2},
		Spec: meshv1.MeshPolicySpec{TargetRefs: refs, Action: action,
			Rules: []meshv1.Rule{{To: []meshv1.Destination{{Methods: []string{"GET"}}}}}},
	}
}

func l4Policy(rules []meshv1.Rule) *meshv1.MeshPolicy {
	return &meshv1.MeshPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "allow-frontend", Generation: 1},
		Spec:       meshv1.MeshPolicySpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}, Rules: rules},
	}
}

var (
	serviceWeb = meshv1.PolicyTargetReference{Kind: meshv1.TargetKindService, Name: "web"}
	serviceAPI = meshv1.PolicyTargetReference{Kind: meshv1.TargetKindService, Name: "api"}
	fromShop   = []meshv1.Rule{{From: []meshv1.Source{{Namespaces: []string{"shop"}}}}}
)

// served: the target exists and waypoint (a name in shop, or <namespace>/<name>, or "")
// carries its traffic.
func served(ref meshv1.PolicyTargetReference, waypoint string) TargetState {
	return TargetState{Ref: ref, Exists: true, Waypoint: waypointRef(waypoint)}
}

func waypointRef(s string) types.NamespacedName {
	if s == "" {
		return types.NamespacedName{}
	}
	if ns, name, ok := strings.Cut(s, "/"); ok {
		return types.NamespacedName{Namespace: ns, Name: name}
	}
	return types.NamespacedName{Namespace: "shop", Name: s}
}

func wp(name string, ready *metav1.Condition, sent bool, proxies ProxySync) WaypointEnforcement {
	return WaypointEnforcement{Waypoint: waypointRef(name), Kind: "Waypoint", Ready: ready, Sent: sent, Proxies: proxies}
}

func gatewayWaypoint(w WaypointEnforcement) WaypointEnforcement {
	w.Kind = "Gateway"
	return w
}

func node(name string, sent bool, proxies ProxySync) NodeEnforcement {
	return NodeEnforcement{Node: name, Sent: sent, Proxies: proxies}
}

func TestEnforcedCondition(t *testing.T) {
	manyNodes := Enforcement{Workloads: 7}
	for i := range 7 {
		manyNodes.Nodes = append(manyNodes.Nodes, node(fmt.Sprintf("node-%d", i), true, ProxySync{}))
	}
	for _, tc := range []struct {
		name       string
		policy     *meshv1.MeshPolicy
		targets    []TargetState
		enf        Enforcement
		wantStatus metav1.ConditionStatus
		wantReason string
		wantIn     []string // substrings of the message
		wantBy     []meshv1.EnforcementPoint
	}{
		{
			name: "waypoint Ready and every proxy ACKed", policy: l7Policy("", serviceWeb),
			targets: []TargetState{served(serviceWeb, "wp")}, enf: Enforcement{Waypoints: []WaypointEnforcement{wp("wp", readyTrue, true, synced)}},
			wantStatus: metav1.ConditionTrue, wantReason: meshv1.ReasonEnforced, wantIn: []string{`Waypoint "wp"`},
			wantBy: []meshv1.EnforcementPoint{meshv1.EnforcedByWaypoint},
		},
		{
			name: "waypoint not Ready, though its proxy ACKed", policy: l7Policy("", serviceWeb),
			targets: []TargetState{served(serviceWeb, "wp")}, enf: Enforcement{Waypoints: []WaypointEnforcement{wp("wp", readyFalse, true, synced)}},
			wantStatus: metav1.ConditionFalse, wantReason: meshv1.ReasonWaypointNotReady,
			wantIn: []string{`Waypoint "wp" is not Ready`, "NoReadyReplicas: 0/1 replicas available"},
		},
		{
			name: "waypoint without a Ready condition", policy: l7Policy("", serviceWeb),
			targets: []TargetState{served(serviceWeb, "wp")}, enf: Enforcement{Waypoints: []WaypointEnforcement{wp("wp", nil, true, synced)}},
			wantStatus: metav1.ConditionFalse, wantReason: meshv1.ReasonWaypointNotReady, wantIn: []string{"no Ready condition"},
		},
		{
			name: "configuration not yet built from this generation", policy: l7Policy("", serviceWeb),
			targets: []TargetState{served(serviceWeb, "wp")}, enf: Enforcement{Waypoints: []WaypointEnforcement{wp("wp", readyTrue, false, synced)}},
			wantStatus: metav1.ConditionFalse, wantReason: meshv1.ReasonPending, wantIn: []string{"has not been sent this generation"},
		},
		{
			name: "no proxy connected", policy: l7Policy("", serviceWeb),
			targets: []TargetState{served(serviceWeb, "wp")}, enf: Enforcement{Waypoints: []WaypointEnforcement{wp("wp", readyTrue, true, ProxySync{})}},
			wantStatus: metav1.ConditionFalse, wantReason: meshv1.ReasonPending, wantIn: []string{`no proxy of Waypoint "wp" is connected`},
		},
		{
			name: "proxy NACKed", policy: l7Policy("", serviceWeb),
			targets:    []TargetState{served(serviceWeb, "wp")},
			enf:        Enforcement{Waypoints: []WaypointEnforcement{wp("wp", readyTrue, true, ProxySync{Connected: 1, LastNack: "rbac: bad regex"})}},
			wantStatus: metav1.ConditionFalse, wantReason: meshv1.ReasonPending, wantIn: []string{`rejected its configuration: "rbac: bad regex"`},
		},
		{
			name: "proxy connected, not ACKed yet", policy: l7Policy("", serviceWeb),
			targets: []TargetState{served(serviceWeb, "wp")}, enf: Enforcement{Waypoints: []WaypointEnforcement{wp("wp", readyTrue, true, ProxySync{Connected: 2})}},
			wantStatus: metav1.ConditionFalse, wantReason: meshv1.ReasonPending, wantIn: []string{`Waypoint "wp" has not ACKed`},
		},
		{
			name: "one waypoint enforces, the other is not Ready", policy: l7Policy("", serviceWeb, serviceAPI),
			targets:    []TargetState{served(serviceWeb, "wp"), served(serviceAPI, "api-wp")},
			enf:        Enforcement{Waypoints: []WaypointEnforcement{wp("wp", readyTrue, true, synced), wp("api-wp", readyFalse, true, ProxySync{Connected: 1})}},
			wantStatus: metav1.ConditionFalse, wantReason: meshv1.ReasonWaypointNotReady, wantIn: []string{`Waypoint "api-wp" is not Ready`},
			wantBy: []meshv1.EnforcementPoint{meshv1.EnforcedByWaypoint},
		},
		{
			name: "a target no waypoint serves", policy: l7Policy("", serviceWeb, serviceAPI),
			targets:    []TargetState{served(serviceWeb, "wp"), served(serviceAPI, "")},
			enf:        Enforcement{Waypoints: []WaypointEnforcement{wp("wp", readyTrue, true, synced)}},
			wantStatus: metav1.ConditionFalse, wantReason: meshv1.ReasonNoWaypoint, wantIn: []string{`Service "api"`},
			wantBy: []meshv1.EnforcementPoint{meshv1.EnforcedByWaypoint},
		},
		{
			name: "a waypoint of another namespace is named with its namespace", policy: l7Policy("", serviceWeb),
			targets: []TargetState{served(serviceWeb, "infra/shared")}, enf: Enforcement{Waypoints: []WaypointEnforcement{wp("infra/shared", readyTrue, true, ProxySync{})}},
			wantStatus: metav1.ConditionFalse, wantReason: meshv1.ReasonPending, wantIn: []string{`no proxy of Waypoint "infra/shared" is connected`},
		},
		{
			name: "a Gateway waypoint not Programmed", policy: l7Policy("", serviceWeb),
			targets:    []TargetState{served(serviceWeb, "gw")},
			enf:        Enforcement{Waypoints: []WaypointEnforcement{gatewayWaypoint(wp("gw", readyFalse, true, synced))}},
			wantStatus: metav1.ConditionFalse, wantReason: meshv1.ReasonWaypointNotReady, wantIn: []string{`Gateway "gw" is not Programmed`},
		},
		{
			name: "a Gateway waypoint enforces", policy: l7Policy("", serviceWeb),
			targets:    []TargetState{served(serviceWeb, "infra/gw")},
			enf:        Enforcement{Waypoints: []WaypointEnforcement{gatewayWaypoint(wp("infra/gw", readyTrue, true, synced))}},
			wantStatus: metav1.ConditionTrue, wantReason: meshv1.ReasonEnforced, wantIn: []string{`enforced by Gateway "infra/gw"`},
			wantBy: []meshv1.EnforcementPoint{meshv1.EnforcedByWaypoint},
		},
		{
			name: "AUDIT at a waypoint", policy: l7Policy(meshv1.ActionAudit, serviceWeb),
			targets: []TargetState{served(serviceWeb, "wp")}, enf: Enforcement{Waypoints: []WaypointEnforcement{wp("wp", readyTrue, true, synced)}},
			wantStatus: metav1.ConditionFalse, wantReason: meshv1.ReasonUnsupported, wantIn: []string{"AUDIT"},
		},
		{
			name: "ztunnel: every node ACKed", policy: l4Policy(fromShop),
			enf:        Enforcement{Workloads: 3, Nodes: []NodeEnforcement{node("node-a", true, synced), node("node-b", true, synced)}},
			wantStatus: metav1.ConditionTrue, wantReason: meshv1.ReasonEnforced, wantIn: []string{"2 node(s) running the 3 selected workload(s)"},
			wantBy: []meshv1.EnforcementPoint{meshv1.EnforcedByZTunnel},
		},
		{
			name: "ztunnel: one node not connected", policy: l4Policy(fromShop),
			enf:        Enforcement{Workloads: 2, Nodes: []NodeEnforcement{node("node-a", true, synced), node("node-b", true, ProxySync{})}},
			wantStatus: metav1.ConditionFalse, wantReason: meshv1.ReasonPending, wantIn: []string{"1 of the 2 node(s)", "node node-b: its ztunnel is not connected"},
			wantBy: []meshv1.EnforcementPoint{meshv1.EnforcedByZTunnel},
		},
		{
			name: "ztunnel: NACK quoted, configuration of another node not published", policy: l4Policy(fromShop),
			enf: Enforcement{Workloads: 2, Nodes: []NodeEnforcement{
				node("node-a", true, ProxySync{Connected: 1, LastNack: "unknown action"}), node("node-b", false, synced)}},
			wantStatus: metav1.ConditionFalse, wantReason: meshv1.ReasonPending,
			wantIn: []string{`node node-a: its ztunnel rejected the configuration: "unknown action"`, "node node-b: the configuration is not published yet"},
		},
		{
			name: "ztunnel: many nodes are named up to a bound", policy: l4Policy(fromShop), enf: manyNodes,
			wantStatus: metav1.ConditionFalse, wantReason: meshv1.ReasonPending, wantIn: []string{"node node-4: its ztunnel is not connected", "and 2 more"},
		},
		{
			name: "ztunnel: no workload selected", policy: l4Policy(fromShop),
			wantStatus: metav1.ConditionFalse, wantReason: meshv1.ReasonNoWorkloads, wantIn: []string{"spec.selector in namespace shop"},
		},
		{
			name: "ztunnel: L7 rules without a waypoint, the L4 part held", policy: l4Policy([]meshv1.Rule{{To: []meshv1.Destination{{Paths: []meshv1.PathMatch{{Prefix: "/admin"}}}}}}),
			enf:        Enforcement{Workloads: 1, Nodes: []NodeEnforcement{node("node-a", true, synced)}},
			wantStatus: metav1.ConditionFalse, wantReason: meshv1.ReasonNoWaypoint, wantIn: []string{"ztunnel cannot check them"},
			wantBy: []meshv1.EnforcementPoint{meshv1.EnforcedByZTunnel},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := PolicyStatus(tc.policy, tc.targets, tc.enf, metav1.Now())
			c := meta.FindStatusCondition(st.Conditions, meshv1.PolicyConditionEnforced)
			if c == nil || c.Status != tc.wantStatus || c.Reason != tc.wantReason {
				t.Fatalf("Enforced = %+v, want %s/%s", c, tc.wantStatus, tc.wantReason)
			}
			for _, s := range tc.wantIn {
				if !strings.Contains(c.Message, s) {
					t.Errorf("message %q lacks %q", c.Message, s)
				}
			}
			if !slices.Equal(st.EnforcedBy, tc.wantBy) {
				t.Errorf("enforcedBy = %v, want %v", st.EnforcedBy, tc.wantBy)
			}
			if st.ObservedGeneration != tc.policy.Generation || c.ObservedGeneration != tc.policy.Generation {
				t.Errorf("observedGeneration %d / %d, want %d", st.ObservedGeneration, c.ObservedGeneration, tc.policy.Generation)
			}
		})
	}
}

func TestPolicyStatusKeepsTransitionTimeOfAnUnchangedCondition(t *testing.T) {
	p := l7Policy("", serviceWeb)
	targets := []TargetState{served(serviceWeb, "wp")}
	pending := Enforcement{Waypoints: []WaypointEnforcement{wp("wp", readyTrue, true, ProxySync{Connected: 1})}}
	then := metav1.NewTime(time.Unix(1000, 0))
	p.Status = PolicyStatus(p, targets, pending, then)

	later := metav1.NewTime(time.Unix(2000, 0))
	again := PolicyStatus(p, targets, Enforcement{Waypoints: []WaypointEnforcement{wp("wp", readyTrue, false, ProxySync{})}}, later)
	if c := meta.FindStatusCondition(again.Conditions, meshv1.PolicyConditionEnforced); !c.LastTransitionTime.Equal(&then) {
		t.Errorf("still False (another message): transition time %v, want %v", c.LastTransitionTime, then)
	}
	enforced := PolicyStatus(p, targets, Enforcement{Waypoints: []WaypointEnforcement{wp("wp", readyTrue, true, synced)}}, later)
	if c := meta.FindStatusCondition(enforced.Conditions, meshv1.PolicyConditionEnforced); !c.LastTransitionTime.Equal(&later) {
		t.Errorf("False → True: transition time %v, want %v", c.LastTransitionTime, later)
	}
}

func TestSelectedWorkloads(t *testing.T) {
	mesh := Mesh{RootNamespace: "ambient-system"}
	ambient := map[string]string{meshv1.LabelDataplaneMode: meshv1.DataplaneModeAmbient}
	namespaces := map[string]*corev1.Namespace{
		"shop":   {ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: ambient}},
		"other":  {ObjectMeta: metav1.ObjectMeta{Name: "other", Labels: ambient}},
		"legacy": {ObjectMeta: metav1.ObjectMeta{Name: "legacy"}},
	}
	pod := func(ns, name, nodeName string, labels map[string]string, phase corev1.PodPhase) corev1.Pod {
		return corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
			Spec: corev1.PodSpec{NodeName: nodeName}, Status: corev1.PodStatus{Phase: phase}}
	}
	pods := []corev1.Pod{
		pod("shop", "web-1", "node-a", map[string]string{"app": "web"}, corev1.PodRunning),
		pod("shop", "web-unscheduled", "", map[string]string{"app": "web"}, corev1.PodPending),
		pod("shop", "web-done", "node-a", map[string]string{"app": "web"}, corev1.PodSucceeded),
		pod("shop", "web-opted-out", "node-a", map[string]string{"app": "web", meshv1.LabelDataplaneMode: meshv1.DataplaneModeNone}, corev1.PodRunning),
		pod("shop", "db-1", "node-b", map[string]string{"app": "db"}, corev1.PodRunning),
		pod("shop", "wp-1", "node-b", map[string]string{meshv1.LabelWaypoint: "wp"}, corev1.PodRunning),
		pod("other", "web-1", "node-c", map[string]string{"app": "web"}, corev1.PodRunning),
		pod("legacy", "web-1", "node-c", map[string]string{"app": "web"}, corev1.PodRunning),
	}
	policy := func(ns string, selector map[string]string, refs ...meshv1.PolicyTargetReference) *meshv1.MeshPolicy {
		p := &meshv1.MeshPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "p"}, Spec: meshv1.MeshPolicySpec{TargetRefs: refs}}
		if selector != nil {
			p.Spec.Selector = &metav1.LabelSelector{MatchLabels: selector}
		}
		return p
	}
	for _, tc := range []struct {
		name   string
		policy *meshv1.MeshPolicy
		want   []string
	}{
		{"selector", policy("shop", map[string]string{"app": "web"}), []string{"shop/web-1"}},
		{"namespace", policy("shop", nil), []string{"shop/web-1", "shop/db-1"}},
		{"mesh-wide", policy("ambient-system", nil), []string{"shop/web-1", "shop/db-1", "other/web-1"}},
		{"selector in the mesh namespace stays there", policy("ambient-system", map[string]string{"app": "web"}), nil},
		{"targetRefs: a waypoint's business", policy("shop", nil, serviceWeb), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, p := range SelectedWorkloads(mesh, tc.policy, pods, namespaces) {
				got = append(got, p.Namespace+"/"+p.Name)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("selected %v, want %v", got, tc.want)
			}
		})
	}
}

// TestTargetStates: a target's waypoint is the one ztunnel sends its traffic to
// (CarryingWaypoint), of the policy's namespace or another one, Waypoint or Gateway.
func TestTargetStates(t *testing.T) {
	use := func(name, namespace string) map[string]string {
		l := map[string]string{meshv1.LabelUseWaypoint: name}
		if namespace != "" {
			l[meshv1.LabelUseWaypointNamespace] = namespace
		}
		return l
	}
	namespace := func(name string, labels map[string]string) corev1.Namespace {
		return corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	}
	service := func(ns, name string, labels map[string]string) corev1.Service {
		return corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels}}
	}
	waypoint := func(ns, name string, f meshv1.WaypointTrafficType, allowed meshv1.FromNamespaces) meshv1.Waypoint {
		wp := meshv1.Waypoint{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: meshv1.WaypointSpec{For: f}}
		if allowed != "" {
			wp.Spec.AllowedNamespaces = &meshv1.WaypointAllowedNamespaces{From: allowed}
		}
		return wp
	}
	st := State{
		Namespaces: []corev1.Namespace{
			namespace("infra", nil),
			namespace("shop", use("shared", "infra")),
			namespace("idle", use("off", "")),
			namespace("books", use("local", "")),
		},
		Services: []corev1.Service{
			service("shop", "web", nil),
			service("shop", "orders", use("private", "infra")),
			service("shop", "pods-only", use("workloads", "infra")),
			service("shop", "opted-out", use(meshv1.UseWaypointNone, "")),
			service("shop", "gw-user", use("gw", "infra")),
			service("shop", "missing-wp", use("missing", "")),
			service("infra", "shared", map[string]string{meshv1.LabelWaypoint: "shared", meshv1.LabelUseWaypoint: "shared"}),
		},
		Waypoints: MergeWaypoints([]meshv1.Waypoint{
			waypoint("infra", "shared", meshv1.WaypointForAll, meshv1.NamespacesFromAll),
			waypoint("infra", "private", "", ""),
			waypoint("infra", "workloads", meshv1.WaypointForWorkload, meshv1.NamespacesFromAll),
			waypoint("idle", "off", meshv1.WaypointForNone, ""),
			waypoint("books", "local", meshv1.WaypointForWorkload, ""),
		}, []gatewayv1.Gateway{waypointGateway("gw", allowedRoutes(gatewayv1.NamespacesFromAll, nil))}),
	}
	ref := func(kind meshv1.TargetKind, name string) meshv1.PolicyTargetReference {
		return meshv1.PolicyTargetReference{Kind: kind, Name: name}
	}
	for _, tc := range []struct {
		name         string
		namespace    string
		target       meshv1.PolicyTargetReference
		wantExists   bool
		wantWaypoint string // <namespace>/<name>
	}{
		{"a Service that uses its namespace's waypoint of another namespace", "shop", ref(meshv1.TargetKindService, "web"), true, "infra/shared"},
		{"a Service naming a waypoint that does not allow it", "shop", ref(meshv1.TargetKindService, "orders"), true, ""},
		{"a Service naming a waypoint for workload traffic only", "shop", ref(meshv1.TargetKindService, "pods-only"), true, ""},
		{"a Service opted out", "shop", ref(meshv1.TargetKindService, "opted-out"), true, ""},
		{"a Service naming a Gateway waypoint of another namespace", "shop", ref(meshv1.TargetKindService, "gw-user"), true, "infra/gw"},
		{"a Service naming a waypoint that does not exist", "shop", ref(meshv1.TargetKindService, "missing-wp"), true, ""},
		{"a waypoint's own Service", "infra", ref(meshv1.TargetKindService, "shared"), true, ""},
		{"a Service that does not exist", "shop", ref(meshv1.TargetKindService, "nope"), false, ""},
		{"a Namespace using a waypoint of another namespace", "shop", ref(meshv1.TargetKindNamespace, "shop"), true, "infra/shared"},
		{"a Namespace using a waypoint for: none", "idle", ref(meshv1.TargetKindNamespace, "idle"), true, ""},
		{"a Namespace using a waypoint for workload traffic", "books", ref(meshv1.TargetKindNamespace, "books"), true, "books/local"},
		{"another Namespace", "shop", ref(meshv1.TargetKindNamespace, "infra"), false, ""},
		{"a Waypoint", "infra", ref(meshv1.TargetKindWaypoint, "shared"), true, "infra/shared"},
		{"a Gateway waypoint, by kind Waypoint", "infra", ref(meshv1.TargetKindWaypoint, "gw"), true, "infra/gw"},
		{"a Waypoint of another namespace is not looked up", "shop", ref(meshv1.TargetKindWaypoint, "shared"), false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &meshv1.MeshPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: tc.namespace, Name: "p"},
				Spec: meshv1.MeshPolicySpec{TargetRefs: []meshv1.PolicyTargetReference{tc.target}}}
			got := TargetStates(p, st)
			if len(got) != 1 {
				t.Fatalf("%d target states, want 1", len(got))
			}
			gotWaypoint := ""
			if got[0].Waypoint.Name != "" {
				gotWaypoint = got[0].Waypoint.String()
			}
			if got[0].Exists != tc.wantExists || gotWaypoint != tc.wantWaypoint {
				t.Errorf("exists %v, waypoint %q; want %v, %q", got[0].Exists, gotWaypoint, tc.wantExists, tc.wantWaypoint)
			}
		})
	}
}

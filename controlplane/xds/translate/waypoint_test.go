package translate

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
)

func useLabels(kv ...string) map[string]string {
	out := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

func namespaceWith(name string, l map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: l}}
}

func TestUsedWaypoint(t *testing.T) {
	const use, useNS = meshv1.LabelUseWaypoint, meshv1.LabelUseWaypointNamespace
	for _, tc := range []struct {
		name   string
		obj    map[string]string
		ns     *corev1.Namespace
		want   string // namespace/name, "" for none
		wantOK bool
	}{
		{"nothing labelled", nil, namespaceWith("shop", nil), "", false},
		{"namespace label", nil, namespaceWith("shop", useLabels(use, "wp")), "shop/wp", true},
		{"object label wins over the namespace's", useLabels(use, "mine"), namespaceWith("shop", useLabels(use, "wp")), "shop/mine", true},
		{"none on the object opts out of the namespace's", useLabels(use, "none"), namespaceWith("shop", useLabels(use, "wp")), "", false},
		{"an empty object label opts out too", useLabels(use, ""), namespaceWith("shop", useLabels(use, "wp")), "", false},
		{"none on the namespace", nil, namespaceWith("shop", useLabels(use, "none")), "", false},
		{"object label without a known namespace", useLabels(use, "wp"), nil, "shop/wp", true},
		{"namespace unknown, object unlabelled", nil, nil, "", false},
		{"other namespace on the object", useLabels(use, "wp", useNS, "infra"), nil, "infra/wp", true},
		{"other namespace on the namespace", nil, namespaceWith("shop", useLabels(use, "wp", useNS, "infra")), "infra/wp", true},
		{"the namespace label goes with the name it sits next to",
			useLabels(use, "mine"), namespaceWith("shop", useLabels(use, "wp", useNS, "infra")), "shop/mine", true},
		{"a namespace label alone names nothing", useLabels(useNS, "infra"), namespaceWith("shop", nil), "", false},
		{"an object's namespace label alone does not redirect the namespace's name",
			useLabels(useNS, "infra"), namespaceWith("shop", useLabels(use, "wp")), "shop/wp", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref, ok := UsedWaypoint("shop", tc.obj, tc.ns)
			got := ""
			if ok {
				got = ref.String()
			}
			if got != tc.want || ok != tc.wantOK {
				t.Errorf("UsedWaypoint = %q, %v; want %q, %v", got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

func TestWaypointAllows(t *testing.T) {
	team := &metav1.LabelSelector{MatchLabels: map[string]string{"team": "shop"}}
	for _, tc := range []struct {
		name    string
		allowed *meshv1.WaypointAllowedNamespaces
		from    *corev1.Namespace
		want    bool
	}{
		{"own namespace, unset", nil, namespaceWith("infra", nil), true},
		{"other namespace, unset means Same", nil, namespaceWith("shop", nil), false},
		{"other namespace, Same", &meshv1.WaypointAllowedNamespaces{From: meshv1.NamespacesFromSame}, namespaceWith("shop", nil), false},
		{"other namespace, All", &meshv1.WaypointAllowedNamespaces{From: meshv1.NamespacesFromAll}, namespaceWith("shop", nil), true},
		{"Selector matches", &meshv1.WaypointAllowedNamespaces{From: meshv1.NamespacesFromSelector, Selector: team},
			namespaceWith("shop", useLabels("team", "shop")), true},
		{"Selector does not match", &meshv1.WaypointAllowedNamespaces{From: meshv1.NamespacesFromSelector, Selector: team},
			namespaceWith("shop", useLabels("team", "books")), false},
		{"Selector with an unknown namespace", &meshv1.WaypointAllowedNamespaces{From: meshv1.NamespacesFromSelector, Selector: team}, nil, false},
		{"own namespace even when the Selector does not match it",
			&meshv1.WaypointAllowedNamespaces{From: meshv1.NamespacesFromSelector, Selector: team}, namespaceWith("infra", nil), true},
		{"invalid selector allows nothing else", &meshv1.WaypointAllowedNamespaces{From: meshv1.NamespacesFromSelector,
			Selector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "team", Operator: "Near"}}}},
			namespaceWith("shop", useLabels("team", "shop")), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wp := &meshv1.Waypoint{ObjectMeta: metav1.ObjectMeta{Namespace: "infra", Name: "wp"},
				Spec: meshv1.WaypointSpec{AllowedNamespaces: tc.allowed}}
			name := "shop"
			if tc.from != nil {
				name = tc.from.Name
			}
			if got := WaypointAllows(wp, name, tc.from); got != tc.want {
				t.Errorf("WaypointAllows = %v, want %v", got, tc.want)
			}
			if got := ResolveWaypoint(testMesh, wp, nil, "").Allows(name, tc.from); got != tc.want {
				t.Errorf("WaypointInfo.Allows = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestWaypointOfServiceAndPod runs the workload API translation (Service and Workload) on
// the same objects: which waypoint address each kind of traffic gets.
func TestWaypointOfServiceAndPod(t *testing.T) {
	const use, useNS = meshv1.LabelUseWaypoint, meshv1.LabelUseWaypointNamespace
	waypoint := func(ns, name string, f meshv1.WaypointTrafficType, allowed *meshv1.WaypointAllowedNamespaces, addr string) WaypointInfo {
		return WaypointInfo{Namespace: ns, Name: name, For: f, AllowedNamespaces: allowed, Address: addr,
			Identity: "spiffe://cluster.local/ns/" + ns + "/sa/" + name}
	}
	all := &meshv1.WaypointAllowedNamespaces{From: meshv1.NamespacesFromAll}
	waypoints := map[types.NamespacedName]WaypointInfo{}
	for _, w := range []WaypointInfo{
		waypoint("shop", "svc-wp", meshv1.WaypointForService, nil, "10.96.0.1"),
		waypoint("shop", "pod-wp", meshv1.WaypointForWorkload, nil, "10.96.0.2"),
		waypoint("shop", "both-wp", meshv1.WaypointForAll, nil, "10.96.0.3"),
		waypoint("shop", "idle-wp", meshv1.WaypointForNone, nil, "10.96.0.4"),
		waypoint("shop", "unaddressed", meshv1.WaypointForAll, nil, ""),
		waypoint("infra", "shared", meshv1.WaypointForAll, all, "10.96.1.1"),
		waypoint("infra", "private", meshv1.WaypointForAll, nil, "10.96.1.2"),
	} {
		waypoints[types.NamespacedName{Namespace: w.Namespace, Name: w.Name}] = w
	}
	for _, tc := range []struct {
		name             string
		nsLabels         map[string]string
		svcLabels        map[string]string
		podLabels        map[string]string
		wantSvc, wantPod string // waypoint address, "" for none
	}{
		{"nothing labelled", nil, nil, nil, "", ""},
		{"namespace uses a service waypoint: Services only", useLabels(use, "svc-wp"), nil, nil, "10.96.0.1", ""},
		{"namespace uses a workload waypoint: pods only", useLabels(use, "pod-wp"), nil, nil, "", "10.96.0.2"},
		{"namespace uses an all waypoint: both", useLabels(use, "both-wp"), nil, nil, "10.96.0.3", "10.96.0.3"},
		{"a waypoint for none takes nothing", useLabels(use, "idle-wp"), nil, nil, "", ""},
		{"Service labelled none in a namespace that uses a waypoint", useLabels(use, "both-wp"), useLabels(use, "none"), nil, "", "10.96.0.3"},
		{"pod labelled none in a namespace that uses a waypoint", useLabels(use, "both-wp"), nil, useLabels(use, "none"), "10.96.0.3", ""},
		{"Service label wins over the namespace's", useLabels(use, "both-wp"), useLabels(use, "svc-wp"), nil, "10.96.0.1", "10.96.0.3"},
		{"pod label wins over the namespace's", useLabels(use, "svc-wp"), nil, useLabels(use, "pod-wp"), "10.96.0.1", "10.96.0.2"},
		{"the Service label does not decide for its pods", nil, useLabels(use, "both-wp"), nil, "10.96.0.3", ""},
		{"a Service label naming a workload waypoint sends nothing", nil, useLabels(use, "pod-wp"), nil, "", ""},
		{"a waypoint without address is skipped", useLabels(use, "unaddressed"), nil, nil, "", ""},
		{"a missing waypoint is skipped", useLabels(use, "gone"), nil, nil, "", ""},
		{"another namespace's waypoint that allows all", useLabels(use, "shared", useNS, "infra"), nil, nil, "10.96.1.1", "10.96.1.1"},
		{"another namespace's waypoint that allows only its own", useLabels(use, "private", useNS, "infra"), nil, nil, "", ""},
		{"a Service opts into another namespace's waypoint", useLabels(use, "svc-wp"), useLabels(use, "shared", useNS, "infra"), nil,
			"10.96.1.1", ""},
		{"the namespace label names the same namespace", useLabels(use, "svc-wp", useNS, "shop"), nil, nil, "10.96.0.1", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := namespaceWith("shop", useLabels(meshv1.LabelDataplaneMode, meshv1.DataplaneModeAmbient))
			for k, v := range tc.nsLabels {
				ns.Labels[k] = v
			}
			svc := corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", Labels: tc.svcLabels},
				Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, ClusterIP: "10.96.5.5", Ports: []corev1.ServicePort{{Port: 80}}},
			}
			podLabels := useLabels("app", "web")
			for k, v := range tc.podLabels {
				podLabels[k] = v
			}
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-1", Labels: podLabels},
				Status:     corev1.PodStatus{PodIP: "10.0.0.5"},
			}
			gotSvc := Service(testMesh, &svc, ns, waypoints).GetWaypoint().GetAddress()
			w := Workload(testMesh, PodInputs{Pod: pod, Namespace: ns, Services: []corev1.Service{svc}, Waypoints: waypoints})
			gotPod := w.GetWaypoint().GetAddress()
			if gotSvc != tc.wantSvc || gotPod != tc.wantPod {
				t.Errorf("Service waypoint %q, pod waypoint %q; want %q, %q", gotSvc, gotPod, tc.wantSvc, tc.wantPod)
			}
		})
	}
}

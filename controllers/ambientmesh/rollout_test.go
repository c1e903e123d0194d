package ambientmesh

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controllers/ambientmesh/manifests"
	"github.com/ambientmesh/ambient-operator/internal/versions"
)

func rolled(v string) workloadState {
	return workloadState{Exists: true, Version: v, Desired: 2, Ready: 2, Updated: 2, RolledOut: true}
}

func rolling(v string) workloadState {
	return workloadState{Exists: true, Version: v, Desired: 2, Ready: 1, Updated: 1}
}

func TestPlanVersions(t *testing.T) {
	tests := []struct {
		name          string
		target        string
		paused        bool
		cs            clusterState
		want          manifests.Versions
		wantInstalled string
		wantRefused   error
		wantUpgrading bool
	}{
		{
			name: "fresh install renders everything at the target", target: "0.1.0",
			want: manifests.Uniform("0.1.0"),
		},
		{
			name: "fresh install of an unknown version installs nothing", target: "9.9.9",
			wantRefused: versions.ErrUnsupported,
		},
		{
			name: "steady state", target: "0.1.0",
			cs:   clusterState{ControlPlane: rolled("0.1.0"), CNI: rolled("0.1.0"), ZTunnel: rolled("0.1.0")},
			want: manifests.Uniform("0.1.0"), wantInstalled: "0.1.0",
		},
		{
			name: "upgrade starts with the control plane only", target: "0.2.0",
			cs:            clusterState{ControlPlane: rolled("0.1.0"), CNI: rolled("0.1.0"), ZTunnel: rolled("0.1.0")},
			want:          manifests.Versions{ControlPlane: "0.2.0", CNI: "0.1.0", ZTunnel: "0.1.0"},
			wantInstalled: "0.1.0", wantUpgrading: true,
		},
		{
			name: "CNI waits while the new control plane is not ready", target: "0.2.0",
			cs:            clusterState{ControlPlane: rolling("0.2.0"), CNI: rolled("0.1.0"), ZTunnel: rolled("0.1.0")},
			want:          manifests.Versions{ControlPlane: "0.2.0", CNI: "0.1.0", ZTunnel: "0.1.0"},
			wantInstalled: "0.1.0", wantUpgrading: true,
		},
		{
			name: "CNI moves once the control plane is rolled out", target: "0.2.0",
			cs:            clusterState{ControlPlane: rolled("0.2.0"), CNI: rolled("0.1.0"), ZTunnel: rolled("0.1.0")},
			want:          manifests.Versions{ControlPlane: "0.2.0", CNI: "0.2.0", ZTunnel: "0.1.0"},
			wantInstalled: "0.1.0", wantUpgrading: true,
		},
		{
			name: "ztunnel moves once the CNI agent is rolled out", target: "0.2.0",
			cs:            clusterState{ControlPlane: rolled("0.2.0"), CNI: rolled("0.2.0"), ZTunnel: rolled("0.1.0")},
			want:          manifests.Uniform("0.2.0"),
			wantInstalled: "0.1.0", wantUpgrading: true,
		},
		{
			name: "old ztunnel pods keep the installed version until replaced", target: "0.2.0",
			cs: clusterState{ControlPlane: rolled("0.2.0"), CNI: rolled("0.2.0"), ZTunnel: rolling("0.2.0"),
				ZTunnelPods: []ztunnelPod{{Node: "a", Version: "0.1.0"}, {Node: "b", Version: "0.2.0"}}},
			want:          manifests.Uniform("0.2.0"),
			wantInstalled: "0.1.0", wantUpgrading: true,
		},
		{
			name: "skipping a minor version is refused and nothing moves", target: "0.3.0",
			cs:            clusterState{ControlPlane: rolled("0.1.0"), CNI: rolled("0.1.0"), ZTunnel: rolled("0.1.0")},
			want:          manifests.Uniform("0.1.0"),
			wantInstalled: "0.1.0", wantRefused: versions.ErrSkew,
		},
		{
			name: "a waypoint still at the old version keeps the upgrade open", target: "0.2.0",
			cs: clusterState{ControlPlane: rolled("0.2.0"), CNI: rolled("0.2.0"), ZTunnel: rolled("0.2.0"),
				Waypoints: []waypointDeployment{{Key: "shop/waypoint", Version: "0.1.0"}}},
			want:          manifests.Uniform("0.2.0"),
			wantInstalled: "0.1.0", wantUpgrading: true,
		},
		{
			name: "a lagging waypoint counts for the skew check", target: "0.3.0",
			cs: clusterState{ControlPlane: rolled("0.2.0"), CNI: rolled("0.2.0"), ZTunnel: rolled("0.2.0"),
				Waypoints: []waypointDeployment{{Key: "shop/waypoint", Version: "0.1.0"}}},
			want:          manifests.Uniform("0.2.0"),
			wantInstalled: "0.1.0", wantRefused: versions.ErrSkew,
		},
		{
			name: "paused holds every component", target: "0.2.0", paused: true,
			cs:            clusterState{ControlPlane: rolled("0.1.0"), CNI: rolled("0.1.0"), ZTunnel: rolled("0.1.0")},
			want:          manifests.Uniform("0.1.0"),
			wantInstalled: "0.1.0", wantUpgrading: true,
		},
		{
			name: "a deleted DaemonSet comes back at the installed version", target: "0.1.0",
			cs:            clusterState{ControlPlane: rolled("0.1.0"), ZTunnel: rolled("0.1.0")},
			want:          manifests.Uniform("0.1.0"),
			wantInstalled: "0.1.0",
		},
		{
			name: "rolling back a stopped upgrade to the installed version", target: "0.1.0",
			cs:            clusterState{ControlPlane: rolled("0.2.0"), CNI: rolled("0.1.0"), ZTunnel: rolled("0.1.0")},
			want:          manifests.Uniform("0.1.0"),
			wantInstalled: "0.1.0",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := planVersions(tt.target, tt.paused, tt.cs)
			if !errors.Is(p.Refused, tt.wantRefused) || (tt.wantRefused == nil && p.Refused != nil) {
				t.Fatalf("Refused = %v, want %v", p.Refused, tt.wantRefused)
			}
			if p.Versions != tt.want {
				t.Errorf("Versions = %+v, want %+v", p.Versions, tt.want)
			}
			if p.Installed != tt.wantInstalled {
				t.Errorf("Installed = %q, want %q", p.Installed, tt.wantInstalled)
			}
			if p.Upgrading() != tt.wantUpgrading {
				t.Errorf("Upgrading() = %v, want %v", p.Upgrading(), tt.wantUpgrading)
			}
		})
	}
}

func TestPlanZTunnelNodes(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	const timeout = 5 * time.Minute
	pod := func(node, hash string, ready bool) ztunnelPod {
		return ztunnelPod{Name: "zt-" + node, Node: node, Hash: hash, Ready: ready, Created: now.Add(-time.Minute)}
	}
	tests := []struct {
		name           string
		pods           []ztunnelPod
		desired        int32
		wantDelete     string
		wantTransition string
		wantFailed     string
		wantUpdated    int32
		wantDone       bool
	}{
		{
			name: "all current", desired: 2,
			pods:        []ztunnelPod{pod("a", "new", true), pod("b", "new", true)},
			wantUpdated: 2, wantDone: true,
		},
		{
			name: "first outdated node in name order is replaced", desired: 3,
			pods:       []ztunnelPod{pod("c", "old", true), pod("a", "old", true), pod("b", "old", true)},
			wantDelete: "a",
		},
		{
			name: "a terminating pod holds the rollout", desired: 3,
			pods: []ztunnelPod{
				{Name: "zt-a", Node: "a", Hash: "old", Terminating: true},
				pod("b", "old", true), pod("c", "old", true),
			},
			wantTransition: "a",
		},
		{
			name: "a node without its pod yet holds the rollout", desired: 3,
			pods:           []ztunnelPod{pod("b", "old", true), pod("c", "old", true)},
			wantTransition: "waiting for 1 ztunnel pod(s) to be created",
		},
		{
			name: "a new pod not ready holds the rollout", desired: 3,
			pods:           []ztunnelPod{pod("a", "new", false), pod("b", "old", true), pod("c", "old", true)},
			wantTransition: "a",
		},
		{
			name: "a new pod not ready after the timeout fails and names the node", desired: 2,
			pods: []ztunnelPod{
				{Name: "zt-a", Node: "a", Hash: "new", Created: now.Add(-6 * time.Minute)},
				pod("b", "old", true),
			},
			wantTransition: "a", wantFailed: "node a: the new ztunnel pod zt-a is not ready after 6m0s",
		},
		{
			name: "without outdated pods an unready pod is no transition", desired: 2,
			pods:        []ztunnelPod{pod("a", "new", true), {Name: "zt-b", Node: "b", Hash: "new", Created: now.Add(-time.Hour)}},
			wantUpdated: 1, wantDone: true,
		},
		{
			name: "the last outdated pod terminating is still a transition", desired: 2,
			pods:           []ztunnelPod{pod("a", "new", true), {Name: "zt-b", Node: "b", Hash: "old", Terminating: true}},
			wantTransition: "b",
		},
		{
			name: "next node after one is done", desired: 3,
			pods:        []ztunnelPod{pod("a", "new", true), pod("b", "old", true), pod("c", "old", false)},
			wantDelete:  "b",
			wantUpdated: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := planZTunnelNodes(tt.pods, "new", tt.desired, timeout, now)
			gotDelete := ""
			if got.Delete != nil {
				gotDelete = got.Delete.Node
			}
			if gotDelete != tt.wantDelete {
				t.Errorf("Delete = %q, want %q", gotDelete, tt.wantDelete)
			}
			if got.Transition != tt.wantTransition {
				t.Errorf("Transition = %q, want %q", got.Transition, tt.wantTransition)
			}
			if got.Failed != tt.wantFailed {
				t.Errorf("Failed = %q, want %q", got.Failed, tt.wantFailed)
			}
			if tt.wantUpdated != 0 && got.Updated != tt.wantUpdated {
				t.Errorf("Updated = %d, want %d", got.Updated, tt.wantUpdated)
			}
			if got.Done() != tt.wantDone {
				t.Errorf("Done() = %v, want %v", got.Done(), tt.wantDone)
			}
			if got.Delete != nil && got.Transition != "" {
				t.Errorf("a pod is deleted while %q is in transition", got.Transition)
			}
		})
	}
}

func TestPlanZTunnelNodesRecheckBeforeTimeout(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	pods := []ztunnelPod{{Name: "zt-a", Node: "a", Hash: "new", Created: now.Add(-2 * time.Minute)}, {Name: "zt-b", Node: "b", Hash: "old", Ready: true}}
	got := planZTunnelNodes(pods, "new", 2, 5*time.Minute, now)
	if got.RecheckAfter != 3*time.Minute || got.Failed != "" {
		t.Fatalf("RecheckAfter = %s, Failed = %q; want 3m and not failed", got.RecheckAfter, got.Failed)
	}
	if !strings.Contains(upgradeProgress(observation{Plan: versionPlan{Installed: "0.1.0", Target: "0.2.0"},
		Cluster: clusterState{ControlPlane: rolled("0.2.0"), CNI: rolled("0.2.0")}, Nodes: got}), "ztunnel: 0/2 nodes (replacing a)") {
		t.Fatalf("progress does not show the node in transition")
	}
}

func TestUpgradeStepWaypoints(t *testing.T) {
	at := func(perWaypoint ...string) []waypointDeployment {
		var out []waypointDeployment
		for i, v := range perWaypoint {
			out = append(out, waypointDeployment{Key: fmt.Sprintf("ns%d/waypoint", i), Version: v})
		}
		return out
	}
	tests := []struct {
		name      string
		cs        clusterState
		wantStep  meshv1alpha1.UpgradeComponent
		wantNoUpg bool
	}{
		{
			name:     "waypoints wait while ztunnel rolls",
			cs:       clusterState{ControlPlane: rolled("0.2.0"), CNI: rolled("0.2.0"), ZTunnel: rolling("0.2.0"), Waypoints: at("0.1.0")},
			wantStep: meshv1alpha1.UpgradeStepZTunnel,
		},
		{
			name:     "waypoints move once ztunnel is rolled out",
			cs:       clusterState{ControlPlane: rolled("0.2.0"), CNI: rolled("0.2.0"), ZTunnel: rolled("0.2.0"), Waypoints: at("0.2.0", "0.1.0")},
			wantStep: meshv1alpha1.UpgradeStepWaypoints,
		},
		{
			name:      "done once every waypoint runs the target",
			cs:        clusterState{ControlPlane: rolled("0.2.0"), CNI: rolled("0.2.0"), ZTunnel: rolled("0.2.0"), Waypoints: at("0.2.0", "0.2.0")},
			wantNoUpg: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := planVersions("0.2.0", false, tt.cs)
			st := upgradeStatus(p, tt.cs, nodePlan{Updated: 2, Total: 2})
			if tt.wantNoUpg {
				if st != nil {
					t.Fatalf("upgrade status %+v, want none", st)
				}
				return
			}
			if st == nil || st.Step != tt.wantStep {
				t.Fatalf("upgrade status %+v, want step %s", st, tt.wantStep)
			}
		})
	}
}

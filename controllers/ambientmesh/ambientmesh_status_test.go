package ambientmesh

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/internal/versions"
)

var readyIdentity = identityState{Ready: true, Reason: meshv1alpha1.ReasonReady, Message: "ok"}

func meshAt(version, statusVersion string) *meshv1alpha1.AmbientMesh {
	m := &meshv1alpha1.AmbientMesh{}
	m.Name = meshv1alpha1.MeshName
	m.Generation = 3
	m.Spec.Version = version
	m.Status.Version = statusVersion
	return m
}

func TestComputeStatus(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	allAt := func(v string) clusterState {
		return clusterState{ControlPlane: rolled(v), CNI: rolled(v), ZTunnel: rolled(v)}
	}
	tests := []struct {
		name        string
		mesh        *meshv1alpha1.AmbientMesh
		obs         observation
		wantPhase   meshv1alpha1.MeshPhase
		wantReady   string // reason
		wantUpgrade string // reason of Upgrading
		wantMsg     string // substring of the Ready or Upgrading message
		wantVersion string
	}{
		{
			name: "fresh install, nothing ready yet",
			mesh: meshAt("0.1.0", ""),
			obs: observation{Observed: true, Plan: planVersions("0.1.0", false, clusterState{}),
				Nodes: nodePlan{}, Identity: identityState{Reason: meshv1alpha1.ReasonInstalling, Message: "creating"}},
			wantPhase: meshv1alpha1.MeshPhaseInstalling, wantReady: meshv1alpha1.ReasonComponentsNotReady,
			wantUpgrade: meshv1alpha1.ReasonUpToDate, wantMsg: "control plane is not created yet",
		},
		{
			name:      "everything ready",
			mesh:      meshAt("0.1.0", ""),
			obs:       observation{Observed: true, Cluster: allAt("0.1.0"), Plan: planVersions("0.1.0", false, allAt("0.1.0")), Nodes: nodePlan{Updated: 2, Total: 2}, Identity: readyIdentity},
			wantPhase: meshv1alpha1.MeshPhaseReady, wantReady: meshv1alpha1.ReasonReady, wantUpgrade: meshv1alpha1.ReasonUpToDate,
			wantVersion: "0.1.0",
		},
		{
			name: "ready pods but a DaemonSet status that lags the template is not Ready yet",
			mesh: meshAt("0.1.0", "0.1.0"),
			obs: func() observation {
				cs := allAt("0.1.0")
				cs.ZTunnel.RolledOut, cs.ZTunnel.Updated = false, 2
				return observation{Observed: true, Cluster: cs, Plan: planVersions("0.1.0", false, cs), Nodes: nodePlan{Updated: 2, Total: 2}, Identity: readyIdentity}
			}(),
			wantPhase: meshv1alpha1.MeshPhaseDegraded, wantReady: meshv1alpha1.ReasonComponentsNotReady,
			wantUpgrade: meshv1alpha1.ReasonUpToDate, wantMsg: "ztunnel: 2/2 pods run the current template of 0.1.0", wantVersion: "0.1.0",
		},
		{
			name: "a ztunnel pod down after install is Degraded, not Installing",
			mesh: meshAt("0.1.0", "0.1.0"),
			obs: func() observation {
				cs := allAt("0.1.0")
				cs.ZTunnel.Ready = 1
				return observation{Observed: true, Cluster: cs, Plan: planVersions("0.1.0", false, cs), Nodes: nodePlan{Updated: 1, Total: 2}, Identity: readyIdentity}
			}(),
			wantPhase: meshv1alpha1.MeshPhaseDegraded, wantReady: meshv1alpha1.ReasonComponentsNotReady,
			wantUpgrade: meshv1alpha1.ReasonUpToDate, wantMsg: "ztunnel: 1/2 nodes ready", wantVersion: "0.1.0",
		},
		{
			name: "ztunnel step shows nodes",
			mesh: meshAt("0.2.0", "0.1.0"),
			obs: func() observation {
				cs := clusterState{ControlPlane: rolled("0.2.0"), CNI: rolled("0.2.0"), ZTunnel: rolling("0.2.0"),
					ZTunnelPods: []ztunnelPod{{Node: "n1", Version: "0.1.0"}}}
				return observation{Observed: true, Cluster: cs, Plan: planVersions("0.2.0", false, cs),
					Nodes: nodePlan{Updated: 3, Total: 10, Transition: "n4"}, Identity: readyIdentity}
			}(),
			wantPhase: meshv1alpha1.MeshPhaseUpgrading, wantReady: meshv1alpha1.ReasonComponentsNotReady,
			wantUpgrade: meshv1alpha1.ReasonUpgradeInProgress, wantMsg: "0.1.0 → 0.2.0, ztunnel: 3/10 nodes (replacing n4)",
			wantVersion: "0.1.0",
		},
		{
			name: "waypoints step after ztunnel names the next waypoint",
			mesh: meshAt("0.2.0", "0.1.0"),
			obs: func() observation {
				cs := allAt("0.2.0")
				cs.Waypoints = []waypointDeployment{{Key: "shop/a", Version: "0.2.0"}, {Key: "shop/b", Version: "0.1.0"}}
				return observation{Observed: true, Cluster: cs, Plan: planVersions("0.2.0", false, cs),
					Nodes: nodePlan{Updated: 2, Total: 2}, Identity: readyIdentity}
			}(),
			wantPhase: meshv1alpha1.MeshPhaseUpgrading, wantReady: meshv1alpha1.ReasonUpgradeInProgress,
			wantUpgrade: meshv1alpha1.ReasonUpgradeInProgress, wantMsg: "0.1.0 → 0.2.0, waypoints: 1/2 updated (next: shop/b)",
			wantVersion: "0.1.0",
		},
		{
			name: "the upgrade completes once every waypoint runs the target",
			mesh: meshAt("0.2.0", "0.1.0"),
			obs: func() observation {
				cs := allAt("0.2.0")
				cs.Waypoints = []waypointDeployment{{Key: "shop/a", Version: "0.2.0"}}
				return observation{Observed: true, Cluster: cs, Plan: planVersions("0.2.0", false, cs),
					Nodes: nodePlan{Updated: 2, Total: 2}, Identity: readyIdentity}
			}(),
			wantPhase: meshv1alpha1.MeshPhaseReady, wantReady: meshv1alpha1.ReasonReady,
			wantUpgrade: meshv1alpha1.ReasonUpToDate, wantVersion: "0.2.0",
		},
		{
			name: "a failed node stops the upgrade and is named",
			mesh: meshAt("0.2.0", "0.1.0"),
			obs: func() observation {
				cs := clusterState{ControlPlane: rolled("0.2.0"), CNI: rolled("0.2.0"), ZTunnel: rolled("0.2.0"),
					ZTunnelPods: []ztunnelPod{{Node: "n1", Version: "0.1.0"}}}
				return observation{Observed: true, Cluster: cs, Plan: planVersions("0.2.0", false, cs),
					Nodes: nodePlan{Updated: 1, Total: 2, Transition: "n2", Failed: "node n2: the new ztunnel pod z is not ready after 5m0s"}, Identity: readyIdentity}
			}(),
			wantPhase: meshv1alpha1.MeshPhaseUpgrading, wantReady: meshv1alpha1.ReasonUpgradeFailed,
			wantUpgrade: meshv1alpha1.ReasonUpgradeFailed, wantMsg: "stopped at node n2", wantVersion: "0.1.0",
		},
		{
			name: "skew refused",
			mesh: meshAt("0.3.0", "0.1.0"),
			obs: observation{Observed: true, Cluster: allAt("0.1.0"), Plan: planVersions("0.3.0", false, allAt("0.1.0")),
				Nodes: nodePlan{Updated: 2, Total: 2}, Identity: readyIdentity},
			wantPhase: meshv1alpha1.MeshPhaseDegraded, wantReady: meshv1alpha1.ReasonVersionSkew,
			wantUpgrade: meshv1alpha1.ReasonVersionSkew, wantMsg: "upgrade one minor version at a time (next: 0.2.0)", wantVersion: "0.1.0",
		},
		{
			name: "paused",
			mesh: meshAt("0.2.0", "0.1.0"),
			obs: observation{Observed: true, Cluster: allAt("0.1.0"), Plan: planVersions("0.2.0", true, allAt("0.1.0")),
				Nodes: nodePlan{Updated: 2, Total: 2}, Identity: readyIdentity},
			wantPhase: meshv1alpha1.MeshPhaseUpgrading, wantReady: meshv1alpha1.ReasonUpgradePaused,
			wantUpgrade: meshv1alpha1.ReasonUpgradePaused, wantMsg: "paused by spec.upgrade.paused", wantVersion: "0.1.0",
		},
		{
			name: "apply error",
			mesh: meshAt("0.1.0", "0.1.0"),
			obs: observation{Observed: true, Cluster: allAt("0.1.0"), Plan: planVersions("0.1.0", false, allAt("0.1.0")),
				Nodes: nodePlan{Updated: 2, Total: 2}, Identity: readyIdentity, Err: errors.New("apply DaemonSet x: forbidden")},
			wantPhase: meshv1alpha1.MeshPhaseDegraded, wantReady: meshv1alpha1.ReasonApplyFailed,
			wantUpgrade: meshv1alpha1.ReasonUpToDate, wantMsg: "forbidden", wantVersion: "0.1.0",
		},
		{
			name: "issuer missing",
			mesh: meshAt("0.1.0", ""),
			obs: observation{Observed: true, Cluster: allAt("0.1.0"), Plan: planVersions("0.1.0", false, allAt("0.1.0")),
				Nodes: nodePlan{Updated: 2, Total: 2}, Identity: identityState{Reason: meshv1alpha1.ReasonIssuerNotFound, Message: "Issuer ns/x does not exist"}},
			wantPhase: meshv1alpha1.MeshPhaseInstalling, wantReady: meshv1alpha1.ReasonComponentsNotReady,
			wantUpgrade: meshv1alpha1.ReasonUpToDate, wantMsg: "IdentityReady (Issuer ns/x does not exist)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := computeStatus(tt.mesh, tt.obs, now)
			ready := meta.FindStatusCondition(st.Conditions, meshv1alpha1.MeshConditionReady)
			upgrading := meta.FindStatusCondition(st.Conditions, meshv1alpha1.MeshConditionUpgrading)
			if st.Phase != tt.wantPhase {
				t.Errorf("phase = %s, want %s", st.Phase, tt.wantPhase)
			}
			if ready.Reason != tt.wantReady {
				t.Errorf("Ready reason = %s (%s), want %s", ready.Reason, ready.Message, tt.wantReady)
			}
			if upgrading.Reason != tt.wantUpgrade {
				t.Errorf("Upgrading reason = %s (%s), want %s", upgrading.Reason, upgrading.Message, tt.wantUpgrade)
			}
			if !strings.Contains(ready.Message+" | "+upgrading.Message, tt.wantMsg) {
				t.Errorf("messages %q | %q do not contain %q", ready.Message, upgrading.Message, tt.wantMsg)
			}
			if st.Version != tt.wantVersion {
				t.Errorf("version = %q, want %q", st.Version, tt.wantVersion)
			}
			for _, c := range st.Conditions {
				if c.ObservedGeneration != 3 {
					t.Errorf("condition %s observedGeneration = %d, want 3", c.Type, c.ObservedGeneration)
				}
			}
			if st.ObservedGeneration != 3 {
				t.Errorf("observedGeneration = %d", st.ObservedGeneration)
			}
		})
	}
}

func TestComputeStatusKeepsTransitionTimes(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	cs := clusterState{ControlPlane: rolled("0.1.0"), CNI: rolled("0.1.0"), ZTunnel: rolled("0.1.0")}
	obs := observation{Observed: true, Cluster: cs, Plan: planVersions("0.1.0", false, cs), Nodes: nodePlan{Updated: 2, Total: 2}, Identity: readyIdentity}
	mesh := meshAt("0.1.0", "")
	mesh.Status = computeStatus(mesh, obs, t0)
	mesh.Status = computeStatus(mesh, obs, t0.Add(time.Hour))
	ready := meta.FindStatusCondition(mesh.Status.Conditions, meshv1alpha1.MeshConditionReady)
	if !ready.LastTransitionTime.Time.Equal(t0) {
		t.Fatalf("Ready lastTransitionTime moved to %s without a status change", ready.LastTransitionTime)
	}
	cs.ZTunnel.Ready = 1
	obs.Cluster = cs
	mesh.Status = computeStatus(mesh, obs, t0.Add(2*time.Hour))
	ready = meta.FindStatusCondition(mesh.Status.Conditions, meshv1alpha1.MeshConditionReady)
	if ready.Status != metav1.ConditionFalse || !ready.LastTransitionTime.Time.Equal(t0.Add(2*time.Hour)) {
		t.Fatalf("Ready = %s at %s, want False at t0+2h", ready.Status, ready.LastTransitionTime)
	}
}

func TestComputeStatusDeletingAndUnobserved(t *testing.T) {
	now := time.Now()
	st := computeStatus(meshAt("0.1.0", "0.1.0"), observation{Deleting: "uninstalling: waiting for 2 CNI agent pod(s)"}, now)
	if st.Phase != meshv1alpha1.MeshPhaseDeleting {
		t.Fatalf("phase = %s", st.Phase)
	}
	if c := meta.FindStatusCondition(st.Conditions, meshv1alpha1.MeshConditionReady); c.Reason != meshv1alpha1.ReasonDeleting {
		t.Fatalf("Ready reason = %s", c.Reason)
	}
	st = computeStatus(meshAt("0.1.0", "0.1.0"), observation{Err: fmt.Errorf("list pods: %w", errors.New("timeout"))}, now)
	if c := meta.FindStatusCondition(st.Conditions, meshv1alpha1.MeshConditionReady); c.Reason != meshv1alpha1.ReasonApplyFailed || c.Message != "list pods: timeout" {
		t.Fatalf("Ready = %+v", c)
	}
}

func TestRefusalReason(t *testing.T) {
	if r := refusalReason(versions.Check("0.1.0", "0.3.0")); r != meshv1alpha1.ReasonVersionSkew {
		t.Errorf("skew → %s", r)
	}
	if r := refusalReason(versions.Check("", "7.0.0")); r != meshv1alpha1.ReasonUnsupportedVersion {
		t.Errorf("unsupported → %s", r)
	}
}

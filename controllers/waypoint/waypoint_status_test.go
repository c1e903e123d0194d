package waypoint

import (
	"errors"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
)

var now = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

// programmedObs is a pass that applied everything; the Service has an IP.
func programmedObs(available int32) Observation {
	return Observation{
		Version:       "0.1.0",
		Deployment:    DeploymentState{Exists: true, Desired: 1, Ready: available, Available: available},
		ServiceExists: true, ClusterIPs: []string{"10.0.0.12"}, Hostname: "wp.shop.svc.cluster.local",
	}
}

func TestVerdicts(t *testing.T) {
	tests := []struct {
		name                          string
		obs                           Observation
		wantProgrammed, wantReady     bool
		wantProgReason, wantReadyReas string
		wantMessage                   string
	}{
		{
			name: "no mesh", obs: Observation{NoMesh: "there is no AmbientMesh default"},
			wantProgReason: meshv1alpha1.ReasonNoMesh, wantReadyReas: meshv1alpha1.ReasonNoMesh, wantMessage: "no AmbientMesh",
		},
		{
			name: "waiting for the mesh config", obs: Observation{Waiting: "waiting for the mesh ConfigMap"},
			wantProgReason: meshv1alpha1.ReasonPending, wantReadyReas: meshv1alpha1.ReasonPending, wantMessage: "mesh ConfigMap",
		},
		{
			name: "apply failed before anything existed", obs: Observation{Err: errors.New("apply Service shop/wp: it exists and is not controlled")},
			wantProgReason: meshv1alpha1.ReasonApplyFailed, wantReadyReas: meshv1alpha1.ReasonApplyFailed, wantMessage: "not controlled",
		},
		{
			name: "created, no replica available yet", obs: programmedObs(0),
			wantProgrammed: true, wantProgReason: meshv1alpha1.ReasonProgrammed,
			wantReadyReas: meshv1alpha1.ReasonNoReadyReplicas, wantMessage: "ambientmesh.dev/waypoint=wp",
		},
		{
			name: "created and available", obs: programmedObs(1),
			wantProgrammed: true, wantReady: true, wantProgReason: meshv1alpha1.ReasonProgrammed, wantReadyReas: meshv1alpha1.ReasonReady,
		},
		{
			name: "an apply error with the old proxy still serving", obs: func() Observation {
				o := programmedObs(1)
				o.Err = errors.New("conflict")
				return o
			}(),
			wantReady: true, wantProgReason: meshv1alpha1.ReasonApplyFailed, wantReadyReas: meshv1alpha1.ReasonReady,
		},
		{
			name: "service without a cluster IP", obs: func() Observation {
				o := programmedObs(0)
				o.ClusterIPs = nil
				return o
			}(),
			wantProgReason: meshv1alpha1.ReasonPending, wantReadyReas: meshv1alpha1.ReasonNoReadyReplicas, wantMessage: "cluster IP",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, r := ProgrammedVerdict(tt.obs), ReadyVerdict(tt.obs, "shop", "wp")
			if p.OK != tt.wantProgrammed || p.Reason != tt.wantProgReason {
				t.Errorf("Programmed = %v/%s (%s), want %v/%s", p.OK, p.Reason, p.Message, tt.wantProgrammed, tt.wantProgReason)
			}
			if r.OK != tt.wantReady || r.Reason != tt.wantReadyReas {
				t.Errorf("Ready = %v/%s (%s), want %v/%s", r.OK, r.Reason, r.Message, tt.wantReady, tt.wantReadyReas)
			}
			if !strings.Contains(p.Message+" | "+r.Message, tt.wantMessage) {
				t.Errorf("messages %q / %q do not mention %q", p.Message, r.Message, tt.wantMessage)
			}
		})
	}
}

func TestComputeStatus(t *testing.T) {
	wp := &meshv1alpha1.Waypoint{}
	wp.Name, wp.Namespace, wp.Generation = "wp", "shop", 3
	obs := programmedObs(1)
	obs.Deployment.Desired, obs.Deployment.Ready = 2, 2
	obs.ClusterIPs = []string{"10.0.0.12", "fd00::12"}

	st := computeStatus(wp, obs, now)
	if st.ObservedGeneration != 3 || st.HBONEPort != 15008 || st.Replicas != 2 {
		t.Errorf("status %+v", st)
	}
	want := []meshv1alpha1.WaypointAddress{
		{Type: meshv1alpha1.AddressTypeIPAddress, Value: "10.0.0.12"},
		{Type: meshv1alpha1.AddressTypeIPAddress, Value: "fd00::12"},
		{Type: meshv1alpha1.AddressTypeHostname, Value: "wp.shop.svc.cluster.local"},
	}
	if len(st.Addresses) != len(want) {
		t.Fatalf("addresses %v, want %v", st.Addresses, want)
	}
	for i := range want {
		if st.Addresses[i] != want[i] {
			t.Errorf("address %d = %v, want %v", i, st.Addresses[i], want[i])
		}
	}
	for _, ct := range []string{meshv1alpha1.WaypointConditionProgrammed, meshv1alpha1.WaypointConditionReady} {
		c := meta.FindStatusCondition(st.Conditions, ct)
		if c == nil || c.Status != metav1.ConditionTrue || c.ObservedGeneration != 3 || !c.LastTransitionTime.Time.Equal(now) {
			t.Errorf("%s = %+v", ct, c)
		}
	}

	// The transition time moves only when the status changes.
	wp.Status = st
	later := now.Add(time.Minute)
	st = computeStatus(wp, obs, later)
	if c := meta.FindStatusCondition(st.Conditions, meshv1alpha1.WaypointConditionReady); !c.LastTransitionTime.Time.Equal(now) {
		t.Errorf("unchanged Ready moved its transition time to %v", c.LastTransitionTime)
	}
	wp.Status = st
	st = computeStatus(wp, programmedObs(0), later)
	if c := meta.FindStatusCondition(st.Conditions, meshv1alpha1.WaypointConditionReady); c.Status != metav1.ConditionFalse || !c.LastTransitionTime.Time.Equal(later) {
		t.Errorf("Ready after losing its replicas = %+v", c)
	}

	// No Service: no address and no port to advertise.
	st = computeStatus(wp, Observation{NoMesh: "no mesh"}, now)
	if st.Addresses != nil || st.HBONEPort != 0 {
		t.Errorf("without a Service: addresses %v, port %d", st.Addresses, st.HBONEPort)
	}
}

func TestProxyVersion(t *testing.T) {
	mesh := func(status, ztunnel string, paused bool) *meshv1alpha1.AmbientMesh {
		m := &meshv1alpha1.AmbientMesh{}
		m.Status.Version = status
		m.Status.Components.ZTunnel.Version = ztunnel
		m.Spec.Upgrade.Paused = ptr.To(paused)
		return m
	}
	tests := []struct {
		name    string
		mesh    *meshv1alpha1.AmbientMesh
		running string
		want    string
	}{
		{"steady state, new waypoint", mesh("0.1.0", "0.1.0", false), "", "0.1.0"},
		{"ztunnel rolled out the new version: waypoints follow", mesh("0.1.0", "0.2.0", false), "0.1.0", "0.2.0"},
		{"ztunnel is rolling: a waypoint keeps its version", mesh("0.1.0", "", false), "0.1.0", "0.1.0"},
		{"ztunnel is rolling: a new waypoint gets the mesh's version", mesh("0.1.0", "", false), "", "0.1.0"},
		{"paused: a waypoint keeps its version", mesh("0.1.0", "0.2.0", true), "0.1.0", "0.1.0"},
		{"paused: a new waypoint follows ztunnel", mesh("0.1.0", "0.2.0", true), "", "0.2.0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := proxyVersion(tt.mesh, tt.running); got != tt.want {
				t.Errorf("proxyVersion = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestMeshUnavailable(t *testing.T) {
	ready := &meshv1alpha1.AmbientMesh{}
	ready.Name = meshv1alpha1.MeshName
	ready.Status.Version = "0.1.0"
	if msg := meshUnavailable(ready); msg != "" {
		t.Errorf("a mesh that was ready: %q", msg)
	}
	installing := ready.DeepCopy()
	installing.Status.Version = ""
	if msg := meshUnavailable(installing); !strings.Contains(msg, "not ready") {
		t.Errorf("a mesh never ready: %q", msg)
	}
	deleting := ready.DeepCopy()
	deleting.DeletionTimestamp = &metav1.Time{Time: now}
	if msg := meshUnavailable(deleting); !strings.Contains(msg, "deleted") {
		t.Errorf("a mesh being deleted: %q", msg)
	}
}

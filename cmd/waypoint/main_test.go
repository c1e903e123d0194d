package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/ambientmesh/ambient-operator/dataplane/bootstrap"
	"github.com/ambientmesh/ambient-operator/internal/meshconfig"
)

// The waypoint reads the operator's mesh config document: control-plane addresses, ports,
// certificate lifetime; the service account defaults to the Waypoint's name (the operator
// names the ServiceAccount after it).
func TestMeshConfigFillsTheDefaults(t *testing.T) {
	want := meshconfig.Default()
	want.TrustDomain = "example.org"
	want.ControlPlane.Address = "cp.mesh.svc"
	want.Ports.HBONE = 16008
	data, err := want.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "mesh.yaml")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	o := &options{cp: bootstrap.Flags{MeshConfig: path}, name: "reviews-waypoint"}
	if err := applyMeshConfig(o); err != nil {
		t.Fatal(err)
	}
	if o.cp.TrustDomain != "example.org" || o.cp.XDSAddress != want.ControlPlane.XDSAddress() || o.cp.CAAddress != want.ControlPlane.CAAddress() ||
		o.hboneAddress != ":16008" || o.serviceAccount != "reviews-waypoint" || o.cp.ReadinessAddress != ":15021" || o.cp.AdminAddress != "127.0.0.1:15000" {
		t.Fatalf("options %+v from\n%s", o, data)
	}
}

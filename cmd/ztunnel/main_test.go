package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ambientmesh/ambient-operator/dataplane/bootstrap"
	"github.com/ambientmesh/ambient-operator/internal/meshconfig"
)

// The view must read what the operator writes: internal/meshconfig's own document.
func TestMeshConfigViewReadsTheOperatorsDocument(t *testing.T) {
	want := meshconfig.Default()
	want.TrustDomain = "example.org"
	want.ControlPlane.Address = "cp.mesh.svc"
	want.Identity.WorkloadCertTTL.Duration = 2 * time.Hour
	want.Ports.Admin = 16000
	want.CNI.HandoffSocket = "/run/zt.sock"
	data, err := want.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "mesh.yaml")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	o := &options{cp: bootstrap.Flags{MeshConfig: path}}
	ports, err := applyMeshConfig(o)
	if err != nil {
		t.Fatal(err)
	}
	if o.cp.TrustDomain != "example.org" || o.cp.XDSAddress != want.ControlPlane.XDSAddress() || o.cp.CAAddress != want.ControlPlane.CAAddress() ||
		o.cp.CertTTL != 2*time.Hour || o.cp.AdminAddress != "127.0.0.1:16000" || o.handoffSocket != "/run/zt.sock" ||
		int32(ports.Outbound) != want.Ports.Outbound || int32(ports.Inbound) != want.Ports.InboundPlaintext || int32(ports.HBONE) != want.Ports.HBONE {
		t.Fatalf("view read %+v %+v from\n%s", o, ports, data)
	}
}

// Without a file, the defaults equal internal/meshconfig's.
func TestDefaultsMatchMeshConfig(t *testing.T) {
	def := meshconfig.Default()
	o := &options{}
	ports, err := applyMeshConfig(o)
	if err != nil {
		t.Fatal(err)
	}
	if o.cp.TrustDomain != def.TrustDomain || o.cp.XDSAddress != def.ControlPlane.XDSAddress() || o.cp.CAAddress != def.ControlPlane.CAAddress() ||
		o.cp.CertTTL != def.Identity.WorkloadCertTTL.Duration || o.handoffSocket != def.CNI.HandoffSocket ||
		o.cp.MetricsAddress != ":15020" || o.cp.ReadinessAddress != ":15021" || o.cp.AdminAddress != "127.0.0.1:15000" ||
		int32(ports.Outbound) != def.Ports.Outbound || int32(ports.HBONE) != def.Ports.HBONE {
		t.Fatalf("defaults differ: %+v %+v vs %+v", o, ports, def)
	}
}

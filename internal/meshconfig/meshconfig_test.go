package meshconfig

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDefaultRoundTrips(t *testing.T) {
	want := Default()
	data, err := want.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(data)
	if err != nil {
		t.Fatalf("Parse(Marshal(Default())): %v\n%s", err, data)
	}
	if got != want {
		t.Fatalf("round trip changed the config:\n got %+v\nwant %+v", got, want)
	}
}

func TestDefaultAddresses(t *testing.T) {
	c := Default()
	if got := c.ControlPlane.XDSAddress(); got != "ambientmesh-controlplane.ambient-system.svc:15010" {
		t.Errorf("XDSAddress = %s", got)
	}
	if got := c.ControlPlane.CAAddress(); got != "ambientmesh-controlplane.ambient-system.svc:15012" {
		t.Errorf("CAAddress = %s", got)
	}
}

func TestParseRejects(t *testing.T) {
	valid, err := Default().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, doc, wantErr string
	}{
		{"empty", "", "mesh config is empty"},
		{"unknown field", string(valid) + "trustDomian: x\n", `unknown field "trustDomian"`},
		{"not yaml", "{", "mesh config"},
		{"bad port", strings.Replace(string(valid), "hbone: 15008", "hbone: 70000", 1), "ports.hbone: Invalid value: 70000"},
		{"bad backend", strings.Replace(string(valid), "backend: iptables", "backend: ebpf", 1), `redirection.backend: Unsupported value: "ebpf"`},
		{"short ttl", strings.Replace(string(valid), "workloadCertTTL: 24h0m0s", "workloadCertTTL: 10m", 1), "identity.workloadCertTTL: Invalid value"},
		{"missing trust domain", strings.Replace(string(valid), "trustDomain: cluster.local", "trustDomain: \"\"", 1), "trustDomain: Required value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.doc))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Parse error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), ConfigMapKey)
	data, _ := Default().Marshal()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err != nil {
		t.Fatalf("Load: %v", err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("Load of a missing file succeeded")
	}
}

// FuzzParse: the file is written by the operator but may be hand-edited;
// whatever it holds, Parse returns an error or a config that validates.
func FuzzParse(f *testing.F) {
	valid, _ := Default().Marshal()
	f.Add(valid)
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err == nil && len(c.Validate()) > 0 {
			t.Fatalf("Parse accepted an invalid config: %v", c.Validate())
		}
	})
}

// Package bootstrap is what the data-plane proxies (ztunnel, waypoint) share to start: a
// light view of the operator's mesh config document and the credentials they talk to the
// control plane with (its TLS roots, their own client certificate, their projected
// service-account token).
package bootstrap

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"sigs.k8s.io/yaml"
)

// MeshConfig is the proxies' view of the mesh config document (internal/meshconfig): only
// the fields they use, decoded without the Kubernetes API machinery internal/meshconfig
// pulls in, which would cost every ztunnel and waypoint several MB of memory. The operator
// validates the document with internal/meshconfig before writing it; the proxies' main
// tests check that this view reads what internal/meshconfig writes.
type MeshConfig struct {
	TrustDomain  string `json:"trustDomain"`
	ControlPlane struct {
		Address string `json:"address"`
		XDSPort int32  `json:"xdsPort"`
		CAPort  int32  `json:"caPort"`
	} `json:"controlPlane"`
	Identity struct {
		WorkloadCertTTL Duration `json:"workloadCertTTL"`
	} `json:"identity"`
	Ports struct {
		Outbound         int32 `json:"outbound"`
		InboundPlaintext int32 `json:"inboundPlaintext"`
		HBONE            int32 `json:"hbone"`
		Metrics          int32 `json:"metrics"`
		Readiness        int32 `json:"readiness"`
		Admin            int32 `json:"admin"`
	} `json:"ports"`
	CNI struct {
		HandoffSocket string `json:"handoffSocket"`
	} `json:"cni"`
}

// Duration decodes a Go duration string ("24h0m0s"), as metav1.Duration encodes it.
type Duration time.Duration

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// DefaultMeshConfig holds the values internal/meshconfig.Default() has (checked by a test).
func DefaultMeshConfig() MeshConfig {
	var c MeshConfig
	c.TrustDomain = "cluster.local"
	c.ControlPlane.Address = "ambientmesh-controlplane.ambient-system.svc"
	c.ControlPlane.XDSPort, c.ControlPlane.CAPort = 15010, 15012
	c.Identity.WorkloadCertTTL = Duration(24 * time.Hour)
	c.Ports.Outbound, c.Ports.InboundPlaintext, c.Ports.HBONE = 15001, 15006, 15008
	c.Ports.Metrics, c.Ports.Readiness, c.Ports.Admin = 15020, 15021, 15000
	c.CNI.HandoffSocket = "/var/run/ambientmesh/ztunnel/ztunnel.sock"
	return c
}

// LoadMeshConfig reads the document at path over the defaults.
func LoadMeshConfig(path string) (MeshConfig, error) {
	c := DefaultMeshConfig()
	data, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("mesh config: %w", err)
	}
	if err := yaml.Unmarshal(data, &c); err != nil {
		return c, fmt.Errorf("mesh config %s: %w", path, err)
	}
	return c, nil
}

package main

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"sigs.k8s.io/yaml"
)

// meshConfig is ztunnel's view of the mesh config document (internal/meshconfig): only
// the fields it uses, decoded without the Kubernetes API machinery internal/meshconfig
// pulls in, which would cost ztunnel several MB of memory on every node. The operator
// validates the document with internal/meshconfig before writing it; main_test.go checks
// that this view reads what internal/meshconfig writes.
type meshConfig struct {
	TrustDomain  string `json:"trustDomain"`
	ControlPlane struct {
		Address string `json:"address"`
		XDSPort int32  `json:"xdsPort"`
		CAPort  int32  `json:"caPort"`
	} `json:"controlPlane"`
	Identity struct {
		WorkloadCertTTL jsonDuration `json:"workloadCertTTL"`
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

// jsonDuration decodes a Go duration string ("24h0m0s"), as metav1.Duration encodes it.
type jsonDuration time.Duration

func (d *jsonDuration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = jsonDuration(v)
	return nil
}

// defaultMeshConfig holds the values internal/meshconfig.Default() has (checked by a test).
func defaultMeshConfig() meshConfig {
	var c meshConfig
	c.TrustDomain = "cluster.local"
	c.ControlPlane.Address = "ambientmesh-controlplane.ambient-system.svc"
	c.ControlPlane.XDSPort, c.ControlPlane.CAPort = 15010, 15012
	c.Identity.WorkloadCertTTL = jsonDuration(24 * time.Hour)
	c.Ports.Outbound, c.Ports.InboundPlaintext, c.Ports.HBONE = 15001, 15006, 15008
	c.Ports.Metrics, c.Ports.Readiness, c.Ports.Admin = 15020, 15021, 15000
	c.CNI.HandoffSocket = "/var/run/ambientmesh/ztunnel/ztunnel.sock"
	return c
}

func loadMeshConfig(path string) (meshConfig, error) {
	c := defaultMeshConfig()
	data, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("mesh config: %w", err)
	}
	if err := yaml.Unmarshal(data, &c); err != nil {
		return c, fmt.Errorf("mesh config %s: %w", path, err)
	}
	return c, nil
}

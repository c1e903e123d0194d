package manifests

import (
	"strconv"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/internal/meshconfig"
)

// Paths inside the component containers. Host paths are mounted at these.
const (
	// TLSDir holds the control plane's serving certificate (tls.crt,
	// tls.key, ca.crt) from the Certificate ControlPlaneTLSName.
	TLSDir = "/var/run/secrets/ambientmesh/tls"
	// CARootDir holds root-cert.pem, the CA ztunnel verifies the control
	// plane with (the ca.crt of the control plane's certificate).
	CARootDir = "/var/run/secrets/ambientmesh/ca"
	// CARootFile is the CA bundle file inside CARootDir.
	CARootFile = CARootDir + "/root-cert.pem"
	// CATokenDir holds ztunnel's projected service-account token whose
	// audience is meshconfig.CAAudience.
	CATokenDir = "/var/run/secrets/tokens/ambientmesh-ca"
	// CATokenFile is the token file inside CATokenDir.
	CATokenFile = CATokenDir + "/token"
	// HostCNIBinDir and HostCNIConfDir are where the CNI agent sees the
	// host's CNI directories (spec.cni.binDir and confDir).
	HostCNIBinDir  = "/host/opt/cni/bin"
	HostCNIConfDir = "/host/etc/cni/net.d"
	// HostProcDir is the host's /proc, for finding netns of running pods.
	HostProcDir = "/host/proc"
	// CNIPluginBinary is the chained plugin inside the CNI agent image (the
	// Dockerfile puts it next to the agent); the agent copies it into the
	// host's CNI bin dir.
	CNIPluginBinary = "/ambient-cni"
)

// CNIAgentHealthPort serves the CNI agent's /healthz/ready and /metrics on
// the host network.
const CNIAgentHealthPort int32 = 15023

// Environment variables the pods get from the downward API. Args refer to
// them as $(NAME), which the kubelet expands.
const (
	EnvNodeName     = "NODE_NAME"
	EnvPodName      = "POD_NAME"
	EnvPodNamespace = "POD_NAMESPACE"
	// EnvServiceAccount is the pod's service account: its mesh identity.
	EnvServiceAccount = "SERVICE_ACCOUNT"
)

// ControlPlaneArgs is the control plane's command line. Everything that
// other components must agree on comes from the mesh config file.
func ControlPlaneArgs(mesh *meshv1alpha1.AmbientMesh) []string {
	return []string{
		"--mesh-config=" + meshconfig.MountPath,
		"--tls-dir=" + TLSDir,
		"--monitoring-port=" + strconv.Itoa(int(meshconfig.ControlPlaneMonitoringPort)),
		"--log-level=" + string(mesh.Spec.ControlPlane.EffectiveLogLevel()),
	}
}

// ZTunnelArgs is ztunnel's command line.
func ZTunnelArgs(mesh *meshv1alpha1.AmbientMesh) []string {
	return []string{
		"--mesh-config=" + meshconfig.MountPath,
		"--node-name=$(" + EnvNodeName + ")",
		"--ca-token=" + CATokenFile,
		"--ca-root=" + CARootFile,
		"--drain-period=" + mesh.Spec.ZTunnel.EffectiveDrainPeriod().String(),
		"--log-level=" + string(mesh.Spec.ZTunnel.EffectiveLogLevel()),
	}
}

// CNIAgentArgs is the CNI node agent's command line.
//
// Uninstall contract: before deleting the CNI DaemonSet the operator sets
// uninstalling=true in the mesh ConfigMap. A starting agent that reads it
// removes everything from its node; an agent told to stop (SIGTERM) reads
// the ConfigMap from the API (it may get exactly that ConfigMap, see
// CNINamespaceRules) and cleans up when it says uninstalling, while a
// plain restart (upgrade) leaves the pods' rules in place.
func CNIAgentArgs(mesh *meshv1alpha1.AmbientMesh) []string {
	return []string{
		"--mesh-config=" + meshconfig.MountPath,
		"--node-name=$(" + EnvNodeName + ")",
		"--cni-bin-dir=" + HostCNIBinDir,
		"--cni-conf-dir=" + HostCNIConfDir,
		"--plugin-binary=" + CNIPluginBinary,
		"--netns-dir=" + meshconfig.NetNSDir,
		"--proc-root=" + HostProcDir,
		"--run-dir=" + meshconfig.RunDir,
		"--health-port=" + strconv.Itoa(int(CNIAgentHealthPort)),
		"--log-level=" + string(mesh.Spec.CNI.EffectiveLogLevel()),
	}
}

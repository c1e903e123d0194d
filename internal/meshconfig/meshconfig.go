// Package meshconfig is the mesh configuration the operator writes into the
// mesh ConfigMap and every component reads: one Go struct, one YAML format,
// one validation. Components take the file path on their command line
// (--mesh-config) and may override single values with their own flags.
package meshconfig

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/yaml"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
)

// Names of the ConfigMap and where components find it.
const (
	// ConfigMapName is the mesh ConfigMap in the install namespace.
	ConfigMapName = "ambientmesh-config"
	// ConfigMapKey is the ConfigMap key holding the YAML document.
	ConfigMapKey = "mesh.yaml"
	// MountDir is where components mount the ConfigMap.
	MountDir = "/etc/ambientmesh/config"
	// MountPath is the file components read (--mesh-config).
	MountPath = MountDir + "/" + ConfigMapKey
)

// Control plane ports and the identity audience. ztunnel ports are
// api/v1alpha1 constants because users see them in pods.
const (
	// XDSPort serves delta ADS (workload API and Envoy xDS) over mutual TLS.
	XDSPort int32 = 15010
	// CAPort serves the certificate service (gRPC, server-side TLS; callers
	// authenticate with a service-account token).
	CAPort int32 = 15012
	// ControlPlaneMonitoringPort serves the control plane's /metrics,
	// /healthz/ready and /healthz/live.
	ControlPlaneMonitoringPort int32 = 15014
	// CAAudience is the audience of the projected service-account tokens
	// ztunnel and waypoints present to the certificate service.
	CAAudience = "ambientmesh-ca"
)

// Host paths shared by the CNI agent, the CNI plugin and ztunnel.
const (
	// RunDir is the host directory for the mesh's node-local sockets and state.
	RunDir = "/var/run/ambientmesh"
	// HandoffDir holds the socket over which the CNI agent hands pod netns
	// file descriptors to ztunnel. Both mount it.
	HandoffDir = RunDir + "/ztunnel"
	// HandoffSocket is the unix SOCK_SEQPACKET socket ztunnel listens on.
	HandoffSocket = HandoffDir + "/ztunnel.sock"
	// CNIRunDir holds the socket the CNI plugin calls the agent on, and the
	// plugin's fallback state file.
	CNIRunDir = RunDir + "/cni"
	// NetNSDir is where pod network namespaces are bind-mounted on the host.
	NetNSDir = "/var/run/netns"
)

// MeshConfig is the document in the mesh ConfigMap.
type MeshConfig struct {
	// Version of the mesh the operator installed with this configuration.
	Version string `json:"version"`
	// Namespace the mesh components run in.
	Namespace string `json:"namespace"`
	// TrustDomain of every SPIFFE identity.
	TrustDomain string `json:"trustDomain"`
	// ControlPlane says how proxies reach the control plane.
	ControlPlane ControlPlane `json:"controlPlane"`
	// Identity configures workload certificates.
	Identity Identity `json:"identity"`
	// Ports ztunnel opens inside each enrolled pod and on itself.
	Ports Ports `json:"ports"`
	// Redirection configures the in-pod traffic capture.
	Redirection Redirection `json:"redirection"`
	// CNI configures the node agent and the plugin it installs.
	CNI CNI `json:"cni"`
	// Uninstalling is set by the operator when the AmbientMesh is being
	// deleted: the CNI agent stops enrolling new pods, removes its rules from
	// enrolled pods and its plugin configuration from the node.
	Uninstalling bool `json:"uninstalling,omitempty"`
}

// ControlPlane is where the control plane serves.
type ControlPlane struct {
	// Address is the control plane Service's DNS name.
	Address string `json:"address"`
	// XDSPort serves delta ADS.
	XDSPort int32 `json:"xdsPort"`
	// CAPort serves the certificate service.
	CAPort int32 `json:"caPort"`
}

// XDSAddress is host:port of the xDS server.
func (c ControlPlane) XDSAddress() string {
	return net.JoinHostPort(c.Address, strconv.Itoa(int(c.XDSPort)))
}

// CAAddress is host:port of the certificate service.
func (c ControlPlane) CAAddress() string {
	return net.JoinHostPort(c.Address, strconv.Itoa(int(c.CAPort)))
}

// Identity configures workload certificates.
type Identity struct {
	// Issuer is the cert-manager issuer the control plane signs with.
	Issuer IssuerRef `json:"issuer"`
	// WorkloadCertTTL is each workload certificate's lifetime.
	WorkloadCertTTL metav1.Duration `json:"workloadCertTTL"`
	// Audience of the service-account tokens the certificate service accepts.
	Audience string `json:"audience"`
}

// IssuerRef names a cert-manager issuer.
type IssuerRef struct {
	Name  string `json:"name"`
	Kind  string `json:"kind"`
	Group string `json:"group"`
}

// Ports ztunnel uses.
type Ports struct {
	Outbound         int32 `json:"outbound"`
	InboundPlaintext int32 `json:"inboundPlaintext"`
	HBONE            int32 `json:"hbone"`
	Metrics          int32 `json:"metrics"`
	Readiness        int32 `json:"readiness"`
	Admin            int32 `json:"admin"`
}

// Redirection configures the in-pod capture rules.
type Redirection struct {
	// Backend is iptables or nftables.
	Backend meshv1alpha1.RedirectionBackend `json:"backend"`
	// ProxyMark is the SO_MARK on ztunnel's own sockets.
	ProxyMark uint32 `json:"proxyMark"`
	// HealthProbeSNATAddress is the source kubelet probes are rewritten to.
	HealthProbeSNATAddress string `json:"healthProbeSNATAddress"`
}

// CNI configures the node agent.
type CNI struct {
	// BinDir is the host's CNI binary directory.
	BinDir string `json:"binDir"`
	// ConfDir is the host's CNI configuration directory.
	ConfDir string `json:"confDir"`
	// Chained appends the plugin to the primary network's conflist.
	Chained bool `json:"chained"`
	// HandoffSocket is the ztunnel hand-off socket path.
	HandoffSocket string `json:"handoffSocket"`
}

// Default returns the configuration of a mesh with every default.
func Default() MeshConfig {
	return MeshConfig{
		Version:     meshv1alpha1.DefaultVersion,
		Namespace:   meshv1alpha1.DefaultNamespace,
		TrustDomain: meshv1alpha1.DefaultTrustDomain,
		ControlPlane: ControlPlane{
			Address: ControlPlaneServiceName + "." + meshv1alpha1.DefaultNamespace + ".svc",
			XDSPort: XDSPort,
			CAPort:  CAPort,
		},
		Identity: Identity{
			Issuer:          IssuerRef{Name: ManagedCAIssuerName, Kind: "Issuer", Group: "cert-manager.io"},
			WorkloadCertTTL: metav1.Duration{Duration: meshv1alpha1.DefaultWorkloadCertTTL},
			Audience:        CAAudience,
		},
		Ports: Ports{
			Outbound:         meshv1alpha1.PortOutboundCapture,
			InboundPlaintext: meshv1alpha1.PortInboundPlaintext,
			HBONE:            meshv1alpha1.PortHBONE,
			Metrics:          meshv1alpha1.PortMetrics,
			Readiness:        meshv1alpha1.PortReadiness,
			Admin:            meshv1alpha1.PortAdmin,
		},
		Redirection: Redirection{
			Backend:                meshv1alpha1.RedirectionIPTables,
			ProxyMark:              meshv1alpha1.ProxyMark,
			HealthProbeSNATAddress: meshv1alpha1.HealthProbeSNATAddress,
		},
		CNI: CNI{
			BinDir:        meshv1alpha1.DefaultCNIBinDir,
			ConfDir:       meshv1alpha1.DefaultCNIConfDir,
			Chained:       true,
			HandoffSocket: HandoffSocket,
		},
	}
}

// Names of objects other components look up. They live here, not in the
// controller, so that a component can find them without importing it.
const (
	// ControlPlaneServiceName is the control plane's Service (and Deployment).
	ControlPlaneServiceName = "ambientmesh-controlplane"
	// ManagedCAIssuerName is the CA Issuer the operator creates when
	// identity.issuerRef is empty.
	ManagedCAIssuerName = "ambientmesh-ca"
)

// Marshal encodes the configuration as the ConfigMap's YAML document.
func (c MeshConfig) Marshal() ([]byte, error) { return yaml.Marshal(c) }

// Parse decodes and validates a document. Unknown fields are errors so a
// typo in a hand-edited file is not silently ignored.
func Parse(data []byte) (MeshConfig, error) {
	var c MeshConfig
	if len(bytes.TrimSpace(data)) == 0 {
		return c, fmt.Errorf("mesh config is empty")
	}
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		return c, fmt.Errorf("mesh config: %w", err)
	}
	if errs := c.Validate(); len(errs) > 0 {
		return c, fmt.Errorf("mesh config: %w", errs.ToAggregate())
	}
	return c, nil
}

// Load reads and parses the file at path (normally MountPath).
func Load(path string) (MeshConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return MeshConfig{}, err
	}
	c, err := Parse(data)
	if err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Validate checks every field and reports each problem with its path.
func (c MeshConfig) Validate() field.ErrorList {
	var errs field.ErrorList
	required := func(p *field.Path, v string) {
		if v == "" {
			errs = append(errs, field.Required(p, ""))
		}
	}
	port := func(p *field.Path, v int32) {
		if v < 1 || v > 65535 {
			errs = append(errs, field.Invalid(p, v, "must be a TCP port between 1 and 65535"))
		}
	}
	required(field.NewPath("version"), c.Version)
	required(field.NewPath("namespace"), c.Namespace)
	required(field.NewPath("trustDomain"), c.TrustDomain)

	cp := field.NewPath("controlPlane")
	required(cp.Child("address"), c.ControlPlane.Address)
	port(cp.Child("xdsPort"), c.ControlPlane.XDSPort)
	port(cp.Child("caPort"), c.ControlPlane.CAPort)

	id := field.NewPath("identity")
	required(id.Child("issuer", "name"), c.Identity.Issuer.Name)
	required(id.Child("issuer", "kind"), c.Identity.Issuer.Kind)
	required(id.Child("audience"), c.Identity.Audience)
	if ttl := c.Identity.WorkloadCertTTL.Duration; ttl < time.Hour {
		errs = append(errs, field.Invalid(id.Child("workloadCertTTL"), ttl.String(), "must be at least 1h"))
	}

	ports := field.NewPath("ports")
	port(ports.Child("outbound"), c.Ports.Outbound)
	port(ports.Child("inboundPlaintext"), c.Ports.InboundPlaintext)
	port(ports.Child("hbone"), c.Ports.HBONE)
	port(ports.Child("metrics"), c.Ports.Metrics)
	port(ports.Child("readiness"), c.Ports.Readiness)
	port(ports.Child("admin"), c.Ports.Admin)

	red := field.NewPath("redirection")
	switch c.Redirection.Backend {
	case meshv1alpha1.RedirectionIPTables, meshv1alpha1.RedirectionNFTables:
	default:
		errs = append(errs, field.NotSupported(red.Child("backend"), c.Redirection.Backend,
			[]meshv1alpha1.RedirectionBackend{meshv1alpha1.RedirectionIPTables, meshv1alpha1.RedirectionNFTables}))
	}
	if c.Redirection.ProxyMark == 0 {
		errs = append(errs, field.Required(red.Child("proxyMark"), "ztunnel's packets could not be told apart"))
	}
	if net.ParseIP(c.Redirection.HealthProbeSNATAddress) == nil {
		errs = append(errs, field.Invalid(red.Child("healthProbeSNATAddress"), c.Redirection.HealthProbeSNATAddress, "must be an IP address"))
	}

	cni := field.NewPath("cni")
	required(cni.Child("binDir"), c.CNI.BinDir)
	required(cni.Child("confDir"), c.CNI.ConfDir)
	required(cni.Child("handoffSocket"), c.CNI.HandoffSocket)
	return errs
}

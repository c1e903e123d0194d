/*
Copyright 2026 The ambient-operator Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// AmbientMeshSpec is the desired installation of the mesh.
type AmbientMeshSpec struct {
	// version of the mesh components to install, a semantic version such as
	// "0.1.0" (a leading "v" is accepted). Defaults to the version this
	// operator release installs by default. Changing it upgrades the mesh:
	// control plane, then CNI agent, then ztunnel node by node. Moving more
	// than one minor version at a time is refused.
	// +optional
	// +kubebuilder:default="0.1.0"
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^v?[0-9]+\.[0-9]+\.[0-9]+$`
	Version string `json:"version,omitempty"`

	// namespace the mesh components are installed in. It is created when
	// missing. Immutable: to move the mesh, delete and recreate it.
	// +optional
	// +kubebuilder:default=ambient-system
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="namespace is immutable: delete and recreate the AmbientMesh to move it"
	Namespace string `json:"namespace,omitempty"`

	// trustDomain is the trust domain of every workload identity:
	// spiffe://<trustDomain>/ns/<namespace>/sa/<serviceAccount>.
	// Immutable: changing it would invalidate every issued certificate.
	// +optional
	// +kubebuilder:default=cluster.local
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="trustDomain is immutable: it is part of every issued workload identity"
	TrustDomain string `json:"trustDomain,omitempty"`

	// identity configures who signs workload certificates and for how long
	// they are valid.
	// +optional
	// +kubebuilder:default={}
	Identity IdentitySpec `json:"identity,omitempty"`

	// controlPlane configures the control plane Deployment, which serves
	// configuration (xDS) and signs workload certificates.
	// +optional
	// +kubebuilder:default={}
	ControlPlane ControlPlaneSpec `json:"controlPlane,omitempty"`

	// ztunnel configures the per-node L4 proxy DaemonSet.
	// +optional
	// +kubebuilder:default={}
	ZTunnel ZTunnelSpec `json:"ztunnel,omitempty"`

	// cni configures the CNI node agent DaemonSet and the chained CNI plugin
	// it installs on every node.
	// +optional
	// +kubebuilder:default={}
	CNI CNISpec `json:"cni,omitempty"`

	// waypoint holds defaults for every Waypoint's proxy pods. A Waypoint's
	// own fields win over these.
	// +optional
	// +kubebuilder:default={}
	Waypoint ComponentSpec `json:"waypoint,omitempty"`

	// upgrade controls how a change of spec.version is rolled out.
	// +optional
	// +kubebuilder:default={}
	Upgrade UpgradePolicy `json:"upgrade,omitempty"`
}

// IdentitySpec configures the certificate authority behind workload
// identities.
// +kubebuilder:validation:XValidation:rule="!has(self.rootCATTL) || !has(self.workloadCertTTL) || duration(self.rootCATTL) >= duration(self.workloadCertTTL) + duration(self.workloadCertTTL)",message="rootCATTL must be at least twice workloadCertTTL",fieldPath=".rootCATTL"
type IdentitySpec struct {
	// issuerRef names an existing cert-manager issuer that signs workload
	// certificates. An Issuer must live in spec.namespace. When empty, the
	// operator creates and owns a self-signed root CA and a CA Issuer in
	// spec.namespace.
	// +optional
	IssuerRef *IssuerReference `json:"issuerRef,omitempty"`

	// workloadCertTTL is the lifetime of each workload certificate; ztunnel
	// renews it at half its life. Between 1h and 720h (30 days).
	// +optional
	// +kubebuilder:default="24h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1h') && duration(self) <= duration('720h')",message="workloadCertTTL must be between 1h and 720h"
	WorkloadCertTTL *metav1.Duration `json:"workloadCertTTL,omitempty"`

	// rootCATTL is the lifetime of the operator-managed root CA. It is
	// ignored when issuerRef is set. At least twice workloadCertTTL.
	// +optional
	// +kubebuilder:default="87600h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	RootCATTL *metav1.Duration `json:"rootCATTL,omitempty"`
}

// IssuerReference names a cert-manager issuer.
// +kubebuilder:validation:XValidation:rule="self.group != 'cert-manager.io' || self.kind in ['Issuer', 'ClusterIssuer']",message="kind must be Issuer or ClusterIssuer for group cert-manager.io",fieldPath=".kind"
type IssuerReference struct {
	// name of the issuer.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`

	// kind of the issuer: Issuer (in spec.namespace) or ClusterIssuer; an
	// external issuer's kind when group names an external issuer.
	// +optional
	// +kubebuilder:default=Issuer
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[A-Z][A-Za-z0-9]*$`
	Kind string `json:"kind,omitempty"`

	// group of the issuer: cert-manager.io, or an external issuer's group.
	// +optional
	// +kubebuilder:default=cert-manager.io
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Group string `json:"group,omitempty"`
}

// ControlPlaneSpec configures the control plane.
type ControlPlaneSpec struct {
	ComponentSpec `json:",inline"`

	// replicas of the control plane. Every replica serves; more than one
	// keeps configuration and certificates available during node loss.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10
	Replicas *int32 `json:"replicas,omitempty"`
}

// ZTunnelUpdateStrategy says how ztunnel pods are replaced on upgrade.
// +kubebuilder:validation:Enum=NodeByNode;RollingUpdate
type ZTunnelUpdateStrategy string

const (
	// UpdateNodeByNode: the operator replaces one node's ztunnel at a time,
	// after the new control plane serves, and waits for it to be ready
	// before the next node. At most one node is in transition.
	UpdateNodeByNode ZTunnelUpdateStrategy = "NodeByNode"
	// UpdateRollingUpdate: the DaemonSet controller replaces pods with
	// Kubernetes' own rolling update.
	UpdateRollingUpdate ZTunnelUpdateStrategy = "RollingUpdate"
)

// ZTunnelSpec configures the per-node L4 proxy.
type ZTunnelSpec struct {
	ComponentSpec `json:",inline"`

	// drainPeriod is how long a stopping ztunnel keeps serving open
	// connections while a new one takes new connections. Between 0s and 1h.
	// +optional
	// +kubebuilder:default="30s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) <= duration('1h')",message="drainPeriod must be at most 1h"
	DrainPeriod *metav1.Duration `json:"drainPeriod,omitempty"`

	// updateStrategy is how ztunnel pods are replaced on upgrade:
	// NodeByNode (the operator replaces one node at a time, waiting for each)
	// or RollingUpdate (the DaemonSet controller's rolling update).
	// +optional
	// +kubebuilder:default=NodeByNode
	UpdateStrategy ZTunnelUpdateStrategy `json:"updateStrategy,omitempty"`
}

// RedirectionBackend is the packet filter that redirects pod traffic.
// +kubebuilder:validation:Enum=iptables;nftables
type RedirectionBackend string

const (
	// RedirectionIPTables writes iptables rules in each pod's netns.
	RedirectionIPTables RedirectionBackend = "iptables"
	// RedirectionNFTables writes nftables rules in each pod's netns.
	RedirectionNFTables RedirectionBackend = "nftables"
)

// CNISpec configures the CNI node agent and plugin.
type CNISpec struct {
	ComponentSpec `json:",inline"`

	// binDir is the host directory the chained plugin's binary is installed
	// in: the directory the container runtime finds CNI plugins in, e.g.
	// /opt/cni/bin (most distributions), /home/kubernetes/bin (GKE),
	// /var/lib/cni/bin (OpenShift), /usr/lib/cni (Debian packages).
	// It must be an absolute, clean path (no empty, "." or ".." elements, no
	// trailing "/"), not "/", not in /proc, /sys, /dev or /boot, and not a
	// system directory itself (/bin, /sbin, /lib*, /etc, /home, /media, /mnt,
	// /opt, /root, /run, /srv, /tmp, /usr, /usr/bin, /usr/sbin, /usr/lib*,
	// /usr/libexec, /usr/local, /usr/local/{bin,sbin,lib}, /usr/share, /var,
	// /var/lib, /var/log, /var/run): the privileged CNI agent mounts it
	// read-write and writes into it on every node.
	// +optional
	// +kubebuilder:default="/opt/cni/bin"
	// +kubebuilder:validation:MaxLength=4096
	// +kubebuilder:validation:Pattern=`^/`
	// +kubebuilder:validation:XValidation:rule="self != '/'",message="must not be the host's root directory"
	// +kubebuilder:validation:XValidation:rule="self == '/' || !self.matches('//|/[.][.]?(/|$)|/$')",message="must be a clean absolute path: no empty, '.' or '..' elements and no trailing '/'"
	// +kubebuilder:validation:XValidation:rule="!['/proc', '/sys', '/dev', '/boot'].exists(d, self == d || self.startsWith(d + '/'))",message="must not be in /proc, /sys, /dev or /boot"
	// +kubebuilder:validation:XValidation:rule="!(self in ['/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32', '/etc', '/home', '/media', '/mnt', '/opt', '/root', '/run', '/srv', '/tmp', '/usr', '/usr/bin', '/usr/sbin', '/usr/lib', '/usr/lib32', '/usr/lib64', '/usr/libexec', '/usr/local', '/usr/local/bin', '/usr/local/sbin', '/usr/local/lib', '/usr/share', '/var', '/var/lib', '/var/log', '/var/run'])",message="must not be a system directory itself (such as /etc, /usr/bin or /var/lib): use a directory of its own, such as /opt/cni/bin or /etc/cni/net.d"
	BinDir string `json:"binDir,omitempty"`

	// confDir is the host directory holding CNI network configurations, e.g.
	// /etc/cni/net.d (most distributions), /etc/kubernetes/cni/net.d
	// (OpenShift with Multus). The same rules as binDir apply.
	// +optional
	// +kubebuilder:default="/etc/cni/net.d"
	// +kubebuilder:validation:MaxLength=4096
	// +kubebuilder:validation:Pattern=`^/`
	// +kubebuilder:validation:XValidation:rule="self != '/'",message="must not be the host's root directory"
	// +kubebuilder:validation:XValidation:rule="self == '/' || !self.matches('//|/[.][.]?(/|$)|/$')",message="must be a clean absolute path: no empty, '.' or '..' elements and no trailing '/'"
	// +kubebuilder:validation:XValidation:rule="!['/proc', '/sys', '/dev', '/boot'].exists(d, self == d || self.startsWith(d + '/'))",message="must not be in /proc, /sys, /dev or /boot"
	// +kubebuilder:validation:XValidation:rule="!(self in ['/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32', '/etc', '/home', '/media', '/mnt', '/opt', '/root', '/run', '/srv', '/tmp', '/usr', '/usr/bin', '/usr/sbin', '/usr/lib', '/usr/lib32', '/usr/lib64', '/usr/libexec', '/usr/local', '/usr/local/bin', '/usr/local/sbin', '/usr/local/lib', '/usr/share', '/var', '/var/lib', '/var/log', '/var/run'])",message="must not be a system directory itself (such as /etc, /usr/bin or /var/lib): use a directory of its own, such as /opt/cni/bin or /etc/cni/net.d"
	ConfDir string `json:"confDir,omitempty"`

	// chained, when true, appends the plugin to the primary network's
	// configuration list in confDir. When false the plugin is written as a
	// configuration file of its own, for setups (such as Multus) that call
	// it separately.
	// +optional
	// +kubebuilder:default=true
	Chained *bool `json:"chained,omitempty"`

	// redirection is the packet filter used to redirect pod traffic to
	// ztunnel inside each pod: nftables (programmed over netlink, no binary
	// needed) or iptables (runs the iptables and ip6tables binaries, which
	// the published cni-agent image does not carry: it needs an image that
	// does, or a node agent run on the host).
	// +optional
	// +kubebuilder:default=nftables
	Redirection RedirectionBackend `json:"redirection,omitempty"`
}

// UpgradePolicy controls version upgrades.
type UpgradePolicy struct {
	// paused stops an upgrade after the node in transition: no further
	// component or node is replaced until it is set back to false.
	// +optional
	// +kubebuilder:default=false
	Paused *bool `json:"paused,omitempty"`

	// nodeReadyTimeout is how long an upgrade waits for one node's new
	// ztunnel (or one component) to become ready. When it passes, the
	// upgrade stops and status names the node. Between 30s and 1h.
	// +optional
	// +kubebuilder:default="5m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('30s') && duration(self) <= duration('1h')",message="nodeReadyTimeout must be between 30s and 1h"
	NodeReadyTimeout *metav1.Duration `json:"nodeReadyTimeout,omitempty"`
}

// MeshPhase is a one-word summary of the mesh's state.
// +kubebuilder:validation:Enum=Installing;Ready;Upgrading;Degraded;Deleting
type MeshPhase string

// Mesh phases.
const (
	MeshPhaseInstalling MeshPhase = "Installing"
	MeshPhaseReady      MeshPhase = "Ready"
	MeshPhaseUpgrading  MeshPhase = "Upgrading"
	MeshPhaseDegraded   MeshPhase = "Degraded"
	MeshPhaseDeleting   MeshPhase = "Deleting"
)

// AmbientMesh condition types.
const (
	// MeshConditionReady is True when every component is ready at
	// spec.version and identity is ready.
	MeshConditionReady = "Ready"
	// MeshConditionControlPlaneReady reports the control plane Deployment.
	MeshConditionControlPlaneReady = "ControlPlaneReady"
	// MeshConditionZTunnelReady reports the ztunnel DaemonSet.
	MeshConditionZTunnelReady = "ZTunnelReady"
	// MeshConditionCNIReady reports the CNI node agent DaemonSet.
	MeshConditionCNIReady = "CNIReady"
	// MeshConditionIdentityReady reports the certificate issuer.
	MeshConditionIdentityReady = "IdentityReady"
	// MeshConditionUpgrading is True while a version change rolls out; its
	// message shows progress, e.g. "ztunnel: 3/10 nodes".
	MeshConditionUpgrading = "Upgrading"
)

// AmbientMesh condition reasons.
const (
	// ReasonReady: the component (or the whole mesh) is ready.
	ReasonReady = "Ready"
	// ReasonInstalling: objects were created and are not ready yet.
	ReasonInstalling = "Installing"
	// ReasonNotReady: some pods of a component are not ready.
	ReasonNotReady = "NotReady"
	// ReasonComponentsNotReady: Ready is False because a component is not.
	ReasonComponentsNotReady = "ComponentsNotReady"
	// ReasonApplyFailed: the operator could not create or update an object.
	ReasonApplyFailed = "ApplyFailed"
	// ReasonIssuerNotFound: identity.issuerRef names an issuer that does not exist.
	ReasonIssuerNotFound = "IssuerNotFound"
	// ReasonIssuerNotReady: the issuer exists but is not Ready.
	ReasonIssuerNotReady = "IssuerNotReady"
	// ReasonUpgradeInProgress: Upgrading is True and progressing.
	ReasonUpgradeInProgress = "UpgradeInProgress"
	// ReasonUpgradePaused: spec.upgrade.paused stopped the rollout.
	ReasonUpgradePaused = "UpgradePaused"
	// ReasonUpgradeFailed: a component or node did not become ready within
	// spec.upgrade.nodeReadyTimeout; the message names it.
	ReasonUpgradeFailed = "UpgradeFailed"
	// ReasonVersionSkew: spec.version is more than one minor version away
	// from the installed version.
	ReasonVersionSkew = "VersionSkewTooLarge"
	// ReasonUnsupportedVersion: the operator cannot install spec.version.
	ReasonUnsupportedVersion = "UnsupportedVersion"
	// ReasonUpToDate: Upgrading is False because every component runs spec.version.
	ReasonUpToDate = "UpToDate"
	// ReasonDeleting: the mesh is being uninstalled.
	ReasonDeleting = "Deleting"
)

// ComponentStatus counts the pods of one component.
type ComponentStatus struct {
	// version every ready pod of this component runs, or empty while pods
	// run different versions.
	// +optional
	Version string `json:"version,omitempty"`
	// desired number of pods (Deployment replicas, or nodes for a DaemonSet).
	// +optional
	Desired int32 `json:"desired"`
	// ready pods.
	// +optional
	Ready int32 `json:"ready"`
	// updated pods: those running spec.version with the current settings.
	// +optional
	Updated int32 `json:"updated"`
}

// ComponentsStatus reports each mesh component.
type ComponentsStatus struct {
	// controlPlane is the control plane Deployment.
	// +optional
	ControlPlane ComponentStatus `json:"controlPlane,omitempty"`
	// ztunnel is the ztunnel DaemonSet.
	// +optional
	ZTunnel ComponentStatus `json:"ztunnel,omitempty"`
	// cni is the CNI node agent DaemonSet.
	// +optional
	CNI ComponentStatus `json:"cni,omitempty"`
}

// UpgradeComponent names the step an upgrade is at.
// +kubebuilder:validation:Enum=ControlPlane;CNI;ZTunnel;Waypoints
type UpgradeComponent string

// Upgrade steps, in the order they run.
const (
	UpgradeStepControlPlane UpgradeComponent = "ControlPlane"
	UpgradeStepCNI          UpgradeComponent = "CNI"
	UpgradeStepZTunnel      UpgradeComponent = "ZTunnel"
	// UpgradeStepWaypoints: every waypoint proxy moves to the new version
	// once ztunnel runs it on every node.
	UpgradeStepWaypoints UpgradeComponent = "Waypoints"
)

// UpgradeStatus shows an upgrade in progress.
type UpgradeStatus struct {
	// fromVersion is the version being replaced.
	// +optional
	FromVersion string `json:"fromVersion,omitempty"`
	// toVersion is the version being installed.
	// +optional
	ToVersion string `json:"toVersion,omitempty"`
	// step is the component being replaced: ControlPlane, CNI, ZTunnel or
	// Waypoints.
	// +optional
	Step UpgradeComponent `json:"step,omitempty"`
	// node whose ztunnel is being replaced, during the ZTunnel step.
	// +optional
	Node string `json:"node,omitempty"`
	// nodesUpdated counts nodes whose ztunnel runs toVersion.
	// +optional
	NodesUpdated int32 `json:"nodesUpdated,omitempty"`
	// nodesTotal counts nodes that run ztunnel.
	// +optional
	NodesTotal int32 `json:"nodesTotal,omitempty"`
}

// AmbientMeshStatus is the observed state of the mesh.
type AmbientMeshStatus struct {
	// observedGeneration is the metadata.generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// phase summarises the mesh: Installing, Ready, Upgrading, Degraded or
	// Deleting. Conditions carry the detail.
	// +optional
	Phase MeshPhase `json:"phase,omitempty"`

	// version is the version every component runs; during an upgrade it
	// stays at the old version until the upgrade completes.
	// +optional
	Version string `json:"version,omitempty"`

	// trustDomain in effect, as written into workload identities.
	// +optional
	TrustDomain string `json:"trustDomain,omitempty"`

	// components reports each component's pods and version.
	// +optional
	Components ComponentsStatus `json:"components,omitempty"`

	// upgrade is set while a version change rolls out.
	// +optional
	Upgrade *UpgradeStatus `json:"upgrade,omitempty"`

	// conditions: Ready, ControlPlaneReady, ZTunnelReady, CNIReady,
	// IdentityReady and Upgrading.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`
}

// AmbientMesh installs and runs the ambient mesh. It is cluster-scoped and
// there is exactly one, named "default".
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=am,categories=ambient
// +kubebuilder:printcolumn:name="Version",type=string,JSONPath=`.status.version`,description="Version every component runs"
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`,description="Installing, Ready, Upgrading, Degraded or Deleting"
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`,description="Whether the whole mesh is ready"
// +kubebuilder:printcolumn:name="Namespace",type=string,JSONPath=`.spec.namespace`,priority=1,description="Namespace the components run in"
// +kubebuilder:printcolumn:name="Target",type=string,JSONPath=`.spec.version`,priority=1,description="Version requested in spec"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="self.metadata.name == 'default'",message="AmbientMesh is a singleton: its name must be 'default'"
type AmbientMesh struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired installation.
	// +optional
	// +kubebuilder:default={}
	Spec AmbientMeshSpec `json:"spec,omitempty"`

	// status is the observed state, written by the operator.
	// +optional
	Status AmbientMeshStatus `json:"status,omitempty"`
}

// AmbientMeshList is a list of AmbientMesh.
// +kubebuilder:object:root=true
type AmbientMeshList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AmbientMesh `json:"items"`
}

func init() {
	SchemeBuilder.Register(&AmbientMesh{}, &AmbientMeshList{})
}

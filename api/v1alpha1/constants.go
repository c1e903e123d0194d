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

import "time"

// Names that users write on their own objects. They are part of the API
// contract: changing one breaks every enrolled namespace.
const (
	// LabelDataplaneMode enrolls a namespace or a pod in the mesh.
	// On a namespace, "ambient" enrolls every pod in it; on a pod, "none"
	// opts that pod out and "ambient" opts it in. The pod label wins.
	LabelDataplaneMode = "ambientmesh.dev/dataplane-mode"
	// DataplaneModeAmbient is the LabelDataplaneMode value that enrolls.
	DataplaneModeAmbient = "ambient"
	// DataplaneModeNone is the LabelDataplaneMode value that opts out.
	DataplaneModeNone = "none"

	// LabelUseWaypoint on a namespace, Service or pod names the Waypoint
	// (in the same namespace) that carries its traffic. The value "none"
	// on a Service or pod opts it out of a namespace-wide waypoint.
	LabelUseWaypoint = "ambientmesh.dev/use-waypoint"
	// UseWaypointNone is the LabelUseWaypoint value that opts out.
	UseWaypointNone = "none"

	// LabelWaypoint is set on the Deployment, Service and pods the operator
	// creates for a Waypoint; its value is the Waypoint's name.
	LabelWaypoint = "ambientmesh.dev/waypoint"

	// LabelWaypointFor on a Gateway of the waypoint class says which traffic
	// it takes, as a Waypoint's spec.for (and Istio's istio.io/waypoint-for):
	// service (the default, also for an unknown value), workload, all or none.
	LabelWaypointFor = "ambientmesh.dev/waypoint-for"

	// AnnotationStatus is set on a pod by the CNI node agent once the pod's
	// traffic is redirected into ztunnel; it is removed when the pod leaves
	// the mesh. `kubectl get pod -o yaml` shows whether a pod is captured.
	AnnotationStatus = "ambientmesh.dev/status"
	// StatusEnrolled is the AnnotationStatus value of a captured pod.
	StatusEnrolled = "enrolled"
)

// Ports ztunnel uses. 15001/15006/15008 are opened inside every enrolled
// pod's network namespace; the others on ztunnel's own pod.
const (
	// PortOutboundCapture receives the pod's redirected outbound TCP.
	PortOutboundCapture int32 = 15001
	// PortInboundPlaintext receives redirected inbound plaintext TCP.
	PortInboundPlaintext int32 = 15006
	// PortHBONE receives inbound HBONE (HTTP/2 CONNECT over mutual TLS);
	// waypoints listen on it too.
	PortHBONE int32 = 15008
	// PortMetrics serves Prometheus metrics.
	PortMetrics int32 = 15020
	// PortReadiness serves the readiness probe (/healthz/ready).
	PortReadiness int32 = 15021
	// PortAdmin serves the admin/debug API on localhost only.
	PortAdmin int32 = 15000
)

// Data plane facts shared by the CNI agent (which writes the redirection
// rules) and ztunnel (which marks its sockets).
const (
	// ProxyMark is the SO_MARK ztunnel sets on its own sockets; redirection
	// rules skip packets with this mark so the proxy's traffic is not
	// captured again.
	ProxyMark = 0x539
	// HealthProbeSNATAddress is the source address kubelet health probes are
	// rewritten to on the node, so the in-pod rules can let them through.
	HealthProbeSNATAddress = "169.254.7.127"
)

// Defaults. The CRD schema defaults to the same values (see the
// +kubebuilder:default markers); a unit test keeps the two in step.
const (
	// MeshName is the only name an AmbientMesh may have.
	MeshName = "default"
	// DefaultVersion is the component version installed when
	// AmbientMesh.spec.version is not set.
	DefaultVersion = "0.1.0"
	// DefaultNamespace is where the mesh components are installed.
	DefaultNamespace = "ambient-system"
	// DefaultTrustDomain is the trust domain of SPIFFE identities.
	DefaultTrustDomain = "cluster.local"
	// DefaultWorkloadCertTTL is the lifetime of workload certificates.
	DefaultWorkloadCertTTL = 24 * time.Hour
	// DefaultRootCATTL is the lifetime of the operator-managed root CA.
	DefaultRootCATTL = 87600 * time.Hour
	// DefaultDrainPeriod is how long a stopping ztunnel keeps serving open
	// connections.
	DefaultDrainPeriod = 30 * time.Second
	// DefaultNodeReadyTimeout is how long an upgrade waits for one node's
	// new ztunnel to become ready before it stops and reports the node.
	DefaultNodeReadyTimeout = 5 * time.Minute
	// DefaultCNIBinDir is where the CNI plugin binary is installed on nodes.
	DefaultCNIBinDir = "/opt/cni/bin"
	// DefaultCNIConfDir is where CNI network configurations live on nodes.
	DefaultCNIConfDir = "/etc/cni/net.d"
)

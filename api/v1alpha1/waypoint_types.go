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
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// WaypointTrafficType says which traffic a waypoint handles.
// +kubebuilder:validation:Enum=service;workload;all;none
type WaypointTrafficType string

const (
	// WaypointForService: traffic addressed to a Service (its cluster IP or
	// hostname) that uses the waypoint.
	WaypointForService WaypointTrafficType = "service"
	// WaypointForWorkload: traffic addressed directly to a pod IP of a pod
	// that uses the waypoint.
	WaypointForWorkload WaypointTrafficType = "workload"
	// WaypointForAll: both.
	WaypointForAll WaypointTrafficType = "all"
	// WaypointForNone: no traffic. A label naming the waypoint then sends
	// nothing through it (traffic flows as without a waypoint), while the
	// proxy keeps running.
	WaypointForNone WaypointTrafficType = "none"
)

// LabelUseWaypointNamespace, next to LabelUseWaypoint on the same
// namespace, Service or pod, names the namespace of that Waypoint when it
// is not the object's own. A label value cannot hold "/", so
// <namespace>/<name> is written as these two labels (as Istio's
// istio.io/use-waypoint-namespace). The Waypoint must allow the object's
// namespace (spec.allowedNamespaces).
const LabelUseWaypointNamespace = "ambientmesh.dev/use-waypoint-namespace"

// FromNamespaces says which namespaces may use a waypoint.
// +kubebuilder:validation:Enum=Same;All;Selector
type FromNamespaces string

const (
	// NamespacesFromSame: only the waypoint's own namespace.
	NamespacesFromSame FromNamespaces = "Same"
	// NamespacesFromAll: every namespace.
	NamespacesFromAll FromNamespaces = "All"
	// NamespacesFromSelector: the waypoint's own namespace and the
	// namespaces whose labels match the selector.
	NamespacesFromSelector FromNamespaces = "Selector"
)

// WaypointAllowedNamespaces says from which namespaces Services and pods
// may send their traffic through the waypoint (as Gateway API's
// allowedRoutes.namespaces).
// +kubebuilder:validation:XValidation:rule="(has(self.from) && self.from == 'Selector') == has(self.selector)",message="selector is required when from is Selector, and only then",fieldPath=".selector"
type WaypointAllowedNamespaces struct {
	// from is Same (only the waypoint's namespace, the default), All, or
	// Selector (the waypoint's namespace and those matching selector).
	// +optional
	// +kubebuilder:default=Same
	From FromNamespaces `json:"from,omitempty"`

	// selector picks namespaces by their labels when from is Selector. The
	// admission webhook refuses a selector Kubernetes itself would not
	// accept (an unknown operator, an invalid label key or value).
	// +optional
	Selector *metav1.LabelSelector `json:"selector,omitempty"`
}

// WaypointSpec is the desired L7 proxy.
// +kubebuilder:validation:XValidation:rule="!(has(self.replicas) && has(self.autoscaling))",message="set replicas or autoscaling, not both",fieldPath=".autoscaling"
type WaypointSpec struct {
	// for says which traffic this waypoint handles: service (traffic to
	// Services that use it, the default), workload (traffic to pod IPs of
	// pods that use it), all (both) or none.
	// +optional
	// +kubebuilder:default=service
	For WaypointTrafficType `json:"for,omitempty"`

	// allowedNamespaces says which other namespaces may use this waypoint
	// (with the labels ambientmesh.dev/use-waypoint and
	// ambientmesh.dev/use-waypoint-namespace). Unset: only its own
	// namespace. A label naming a waypoint that does not allow the
	// object's namespace is ignored, as if the waypoint did not exist.
	// +optional
	AllowedNamespaces *WaypointAllowedNamespaces `json:"allowedNamespaces,omitempty"`

	// replicas of the waypoint proxy. Defaults to 1 when neither replicas
	// nor autoscaling is set. Mutually exclusive with autoscaling.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	Replicas *int32 `json:"replicas,omitempty"`

	// autoscaling scales the waypoint proxy with CPU load between
	// minReplicas and maxReplicas. Mutually exclusive with replicas.
	// +optional
	Autoscaling *WaypointAutoscaling `json:"autoscaling,omitempty"`

	// resources of the waypoint proxy container. Defaults to
	// AmbientMesh spec.waypoint.resources, and when that is unset to
	// requests of 100m CPU and 128Mi memory with a 512Mi memory limit.
	// With a memory limit the container's GOMEMLIMIT is set to 90% of it.
	// +optional
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`
}

// WaypointAutoscaling bounds the number of waypoint replicas.
// +kubebuilder:validation:XValidation:rule="!has(self.minReplicas) || self.minReplicas <= self.maxReplicas",message="minReplicas must not exceed maxReplicas",fieldPath=".minReplicas"
type WaypointAutoscaling struct {
	// minReplicas is the fewest replicas kept running.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	MinReplicas *int32 `json:"minReplicas,omitempty"`

	// maxReplicas is the most replicas scaled to.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	MaxReplicas int32 `json:"maxReplicas"`

	// targetCPUUtilizationPercentage is the average CPU use, as a percentage
	// of the CPU request, that autoscaling aims for.
	// +optional
	// +kubebuilder:default=80
	// +kubebuilder:validation:Minimum=10
	// +kubebuilder:validation:Maximum=100
	TargetCPUUtilizationPercentage *int32 `json:"targetCPUUtilizationPercentage,omitempty"`
}

// AddressType says how to read a WaypointAddress value.
// +kubebuilder:validation:Enum=Hostname;IPAddress
type AddressType string

const (
	// AddressTypeHostname is a DNS name.
	AddressTypeHostname AddressType = "Hostname"
	// AddressTypeIPAddress is an IPv4 or IPv6 address.
	AddressTypeIPAddress AddressType = "IPAddress"
)

// WaypointAddress is one address the waypoint is reached at.
type WaypointAddress struct {
	// type of the address: Hostname or IPAddress.
	// +required
	Type AddressType `json:"type"`
	// value of the address.
	// +required
	// +kubebuilder:validation:MaxLength=253
	Value string `json:"value"`
}

// Waypoint condition types.
const (
	// WaypointConditionProgrammed is True when the waypoint's Deployment and
	// Service exist and the control plane sends it configuration.
	WaypointConditionProgrammed = "Programmed"
	// WaypointConditionReady is True when at least one proxy pod is ready.
	WaypointConditionReady = "Ready"
)

// Waypoint condition reasons (ReasonReady is shared with AmbientMesh).
const (
	// ReasonProgrammed: the waypoint is programmed.
	ReasonProgrammed = "Programmed"
	// ReasonPending: objects were created and are not ready yet.
	ReasonPending = "Pending"
	// ReasonNoMesh: there is no AmbientMesh, or it is not Ready.
	ReasonNoMesh = "NoMesh"
	// ReasonNoReadyReplicas: no proxy pod is ready.
	ReasonNoReadyReplicas = "NoReadyReplicas"
)

// WaypointStatus is the observed state of the waypoint.
type WaypointStatus struct {
	// observedGeneration is the metadata.generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// addresses the waypoint is reached at: its Service's cluster IP(s) and
	// hostname.
	// +optional
	// +kubebuilder:validation:MaxItems=8
	// +listType=atomic
	Addresses []WaypointAddress `json:"addresses,omitempty"`

	// hbonePort is the port the waypoint accepts HBONE tunnels on (15008).
	// +optional
	HBONEPort int32 `json:"hbonePort,omitempty"`

	// replicas is the number of ready proxy pods.
	// +optional
	Replicas int32 `json:"replicas,omitempty"`

	// conditions: Programmed and Ready.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`
}

// Waypoint is an L7 proxy for a namespace's services or workloads. Label a
// namespace, Service or pod with ambientmesh.dev/use-waypoint=<name> to send
// its traffic through it (from another namespace, add
// ambientmesh.dev/use-waypoint-namespace=<namespace> and allow it in
// spec.allowedNamespaces).
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,shortName=wp,categories=ambient
// +kubebuilder:printcolumn:name="For",type=string,JSONPath=`.spec.for`,description="Traffic the waypoint handles"
// +kubebuilder:printcolumn:name="Address",type=string,JSONPath=`.status.addresses[0].value`,description="Address of the waypoint"
// +kubebuilder:printcolumn:name="Programmed",type=string,JSONPath=`.status.conditions[?(@.type=="Programmed")].status`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Waypoint struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired waypoint.
	// +optional
	// +kubebuilder:default={}
	Spec WaypointSpec `json:"spec,omitempty"`

	// status is the observed state, written by the operator.
	// +optional
	Status WaypointStatus `json:"status,omitempty"`
}

// WaypointList is a list of Waypoint.
// +kubebuilder:object:root=true
type WaypointList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Waypoint `json:"items"`
}

func init() {
	SchemeBuilder.Register(&Waypoint{}, &WaypointList{})
}

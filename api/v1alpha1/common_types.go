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
)

// LogLevel is the least severe level a component logs.
// +kubebuilder:validation:Enum=debug;info;warn;error
type LogLevel string

// Log levels, from most to least verbose.
const (
	LogLevelDebug LogLevel = "debug"
	LogLevelInfo  LogLevel = "info"
	LogLevelWarn  LogLevel = "warn"
	LogLevelError LogLevel = "error"
)

// ComponentSpec holds the settings every mesh component shares.
type ComponentSpec struct {
	// image overrides the container image of this component, e.g.
	// "registry.example.com/ambient/ztunnel:0.1.0". When empty the operator
	// uses its own image for spec.version. Setting it pins the image: version
	// upgrades then no longer change it.
	// +optional
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:Pattern=`^[^\s]+$`
	Image string `json:"image,omitempty"`

	// resources are the compute resources of this component's container.
	// When unset the operator sets requests that fit a small cluster and a
	// memory limit with headroom over the measured peak: control plane
	// 100m/128Mi, limit 1Gi; ztunnel 100m/128Mi, limit 1Gi; CNI agent
	// 50m/64Mi, limit 256Mi; waypoint 100m/128Mi, limit 512Mi (no CPU
	// limit). When set they replace these defaults whole: without
	// limits.memory the container has no memory limit. With a memory limit
	// the container's GOMEMLIMIT is set to 90% of it, so that the Go runtime
	// collects garbage harder before the kernel would kill it.
	// +optional
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`

	// logLevel is the least severe level the component logs: debug, info,
	// warn or error.
	// +optional
	// +kubebuilder:default=info
	LogLevel LogLevel `json:"logLevel,omitempty"`

	// nodeSelector restricts the nodes this component's pods run on.
	// For ztunnel and the CNI agent it limits which nodes can run enrolled
	// pods: pods on other nodes are not captured. The admission webhook
	// refuses keys and values that are not valid label keys and values.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// tolerations let this component's pods run on tainted nodes.
	// ztunnel and the CNI agent tolerate every taint when this is empty,
	// so that every node can run enrolled pods.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	// +listType=atomic
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`
}

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

// PolicyAction is what a MeshPolicy does with the traffic its rules match.
// +kubebuilder:validation:Enum=ALLOW;DENY;AUDIT
type PolicyAction string

const (
	// ActionAllow lets matching traffic through. Once any ALLOW policy
	// applies to a workload, traffic that matches none is denied.
	ActionAllow PolicyAction = "ALLOW"
	// ActionDeny refuses matching traffic; DENY is evaluated before ALLOW.
	ActionDeny PolicyAction = "DENY"
	// ActionAudit logs matching traffic and does not change the decision.
	ActionAudit PolicyAction = "AUDIT"
)

// MTLSMode says whether a workload accepts plaintext.
// +kubebuilder:validation:Enum=STRICT;PERMISSIVE
type MTLSMode string

const (
	// MTLSStrict accepts only mutual-TLS (HBONE) traffic.
	MTLSStrict MTLSMode = "STRICT"
	// MTLSPermissive accepts mutual TLS and plaintext from outside the mesh.
	MTLSPermissive MTLSMode = "PERMISSIVE"
)

// SPIFFEIDPattern is the regular expression a principal must match. The
// CRD's CEL rule on SPIFFEID uses the same expression; a test keeps the
// two equal.
const SPIFFEIDPattern = `^spiffe://[a-z0-9]([-a-z0-9.]*[a-z0-9])?/ns/[a-z0-9]([-a-z0-9]*[a-z0-9])?/sa/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`

// SPIFFEID is a workload identity: spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>.
// +kubebuilder:validation:MaxLength=256
// +kubebuilder:validation:XValidation:rule="self.matches('^spiffe://[a-z0-9]([-a-z0-9.]*[a-z0-9])?/ns/[a-z0-9]([-a-z0-9]*[a-z0-9])?/sa/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')",message="must be a SPIFFE id of the form spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>"
type SPIFFEID string

// ServiceAccountRef names a service account as <namespace>/<name>.
// +kubebuilder:validation:MaxLength=253
// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')",message="must be a service account as <namespace>/<name>"
type ServiceAccountRef string

// IPBlock is an IP address or a CIDR range, IPv4 or IPv6.
// +kubebuilder:validation:MaxLength=64
// +kubebuilder:validation:XValidation:rule="isIP(self) || isCIDR(self)",message="must be an IP address or a CIDR such as 10.0.0.0/8"
type IPBlock string

// TargetKind is the kind of object a MeshPolicy can target.
// +kubebuilder:validation:Enum=Service;Waypoint;Namespace
type TargetKind string

const (
	// TargetKindService targets a Service (group "").
	TargetKindService TargetKind = "Service"
	// TargetKindWaypoint targets a Waypoint (group mesh.ambientmesh.dev).
	TargetKindWaypoint TargetKind = "Waypoint"
	// TargetKindNamespace targets the policy's own namespace (group "").
	TargetKindNamespace TargetKind = "Namespace"
)

// PolicyTargetReference names an object in the policy's namespace.
// +kubebuilder:validation:XValidation:rule="!has(self.group) || (self.kind == 'Waypoint' ? self.group == 'mesh.ambientmesh.dev' : size(self.group) == 0)",message="group must be mesh.ambientmesh.dev for a Waypoint and empty for a Service or Namespace",fieldPath=".group"
type PolicyTargetReference struct {
	// group of the target: "" for Service and Namespace,
	// mesh.ambientmesh.dev for Waypoint. Inferred from kind when omitted.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Group string `json:"group,omitempty"`

	// kind of the target: Service, Waypoint or Namespace.
	// +required
	Kind TargetKind `json:"kind"`

	// name of the target. A Namespace target must name the policy's own
	// namespace.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	Name string `json:"name"`
}

// Source describes where traffic comes from. All fields that are set must
// match (AND); within one field any entry may match (OR).
// +kubebuilder:validation:XValidation:rule="has(self.principals) || has(self.serviceAccounts) || has(self.namespaces) || has(self.ipBlocks)",message="set at least one of principals, serviceAccounts, namespaces or ipBlocks"
type Source struct {
	// principals are peer identities as SPIFFE ids,
	// e.g. spiffe://cluster.local/ns/shop/sa/frontend.
	// +optional
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +listType=set
	Principals []SPIFFEID `json:"principals,omitempty"`

	// serviceAccounts are peer identities as <namespace>/<name>, in the
	// mesh's trust domain, e.g. shop/frontend.
	// +optional
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +listType=set
	ServiceAccounts []ServiceAccountRef `json:"serviceAccounts,omitempty"`

	// namespaces of the peer's identity.
	// +optional
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +listType=set
	Namespaces []string `json:"namespaces,omitempty"`

	// ipBlocks are source IP addresses or CIDR ranges, e.g. 10.0.0.0/8.
	// +optional
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +listType=set
	IPBlocks []IPBlock `json:"ipBlocks,omitempty"`
}

// PathMatch matches a request path exactly or by prefix.
// +kubebuilder:validation:XValidation:rule="has(self.exact) != has(self.prefix)",message="set exactly one of exact or prefix"
type PathMatch struct {
	// exact matches this path only, e.g. /healthz.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:Pattern=`^/`
	Exact string `json:"exact,omitempty"`

	// prefix matches paths starting with it, e.g. /api/.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:Pattern=`^/`
	Prefix string `json:"prefix,omitempty"`
}

// Destination describes what traffic is addressed to. All fields that are
// set must match (AND); within one field any entry may match (OR).
// ports is L4; methods, paths and hosts are L7 and need a waypoint.
// +kubebuilder:validation:XValidation:rule="has(self.ports) || has(self.methods) || has(self.paths) || has(self.hosts)",message="set at least one of ports, methods, paths or hosts"
type Destination struct {
	// ports are destination (container) ports.
	// +optional
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:Minimum=1
	// +kubebuilder:validation:items:Maximum=65535
	// +listType=set
	Ports []int32 `json:"ports,omitempty"`

	// methods are HTTP methods, e.g. GET. L7: needs a waypoint.
	// +optional
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=32
	// +kubebuilder:validation:items:Pattern=`^[A-Z]+$`
	// +listType=set
	Methods []string `json:"methods,omitempty"`

	// paths are HTTP request paths, each exact or a prefix. L7: needs a
	// waypoint.
	// +optional
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	Paths []PathMatch `json:"paths,omitempty"`

	// hosts are HTTP Host (:authority) values, compared without case;
	// "*.example.com" matches any subdomain. L7: needs a waypoint.
	// +optional
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:items:Pattern=`^(\*\.)?[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?(:[0-9]{1,5})?$`
	// +listType=set
	Hosts []string `json:"hosts,omitempty"`
}

// RequestCondition matches one request header or one JWT claim against a
// list of values. It is L7 and needs a waypoint.
// +kubebuilder:validation:XValidation:rule="has(self.header) != has(self.claim)",message="set exactly one of header or claim"
type RequestCondition struct {
	// header is the name of a request header, compared without case.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9!#$%&'*+.^_|~-]+$`
	Header string `json:"header,omitempty"`

	// claim is the name of a claim of the request's JWT, after the waypoint
	// validated the token; nested claims are joined with ".", e.g.
	// "realm.roles". A request without a validated token matches no claim.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9_:/-]+(\.[A-Za-z0-9_:/-]+)*$`
	Claim string `json:"claim,omitempty"`

	// values the header or claim must equal, any one of them. For a list
	// claim, any element may equal any value.
	// +required
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=1024
	// +listType=set
	Values []string `json:"values"`
}

// Rule matches traffic. Every part that is set must match (AND); an empty
// rule matches all traffic.
type Rule struct {
	// from lists sources; traffic must match one of them. Empty: any source.
	// +optional
	// +kubebuilder:validation:MaxItems=8
	// +listType=atomic
	From []Source `json:"from,omitempty"`

	// to lists destinations; traffic must match one of them. Empty: any
	// destination.
	// +optional
	// +kubebuilder:validation:MaxItems=8
	// +listType=atomic
	To []Destination `json:"to,omitempty"`

	// when lists request conditions; the request must match all of them.
	// L7: needs a waypoint.
	// +optional
	// +kubebuilder:validation:MaxItems=8
	// +listType=atomic
	When []RequestCondition `json:"when,omitempty"`
}

// MTLSSettings says how the selected workloads accept inbound traffic.
type MTLSSettings struct {
	// mode is STRICT (mutual TLS only) or PERMISSIVE (mutual TLS and
	// plaintext from outside the mesh).
	// +required
	Mode MTLSMode `json:"mode"`
}

// JWTHeader is a request header a JSON Web Token is read from.
type JWTHeader struct {
	// name of the header, e.g. Authorization.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9!#$%&'*+.^_|~-]+$`
	Name string `json:"name"`

	// prefix before the token in the header value, e.g. "Bearer ".
	// Empty: the whole value is the token.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	Prefix string `json:"prefix,omitempty"`
}

// JWTSettings says how the waypoint validates the request's JSON Web Token
// (JWT). Requests on the paths the policy's rules cover must carry a valid
// token from this issuer, or they are refused with 401; the token's claims
// can then be matched with rules[].when[].claim.
// +kubebuilder:validation:XValidation:rule="has(self.jwks) != has(self.jwksUri)",message="set exactly one of jwks or jwksUri"
type JWTSettings struct {
	// issuer is the "iss" claim the token must carry, e.g.
	// https://accounts.example.com.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	Issuer string `json:"issuer"`

	// audiences: the token's "aud" claim must contain one of them. Empty:
	// any audience.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=512
	// +listType=set
	Audiences []string `json:"audiences,omitempty"`

	// jwks is the issuer's public JSON Web Key Set, inline, as JSON
	// ({"keys": [...]}). Mutually exclusive with jwksUri.
	// +optional
	// +kubebuilder:validation:MaxLength=65536
	JWKS string `json:"jwks,omitempty"`

	// jwksUri is where the waypoint fetches the issuer's key set: an https
	// URL (http only for localhost). Mutually exclusive with jwks.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	JWKSURI string `json:"jwksUri,omitempty"`

	// fromHeaders lists where the token is read from, the first present
	// wins. Default: the Authorization header with the prefix "Bearer ".
	// +optional
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=4
	// +listType=atomic
	FromHeaders []JWTHeader `json:"fromHeaders,omitempty"`

	// forwardOriginalToken keeps the token in the request forwarded to the
	// destination. By default the waypoint removes it once validated.
	// +optional
	ForwardOriginalToken bool `json:"forwardOriginalToken,omitempty"`
}

// MeshPolicySpec is an authorization and peer-authentication policy.
// +kubebuilder:validation:XValidation:rule="!(has(self.selector) && has(self.targetRefs))",message="set selector or targetRefs, not both (set neither to apply the policy to the whole namespace)",fieldPath=".targetRefs"
// +kubebuilder:validation:XValidation:rule="!(has(self.mtls) && has(self.targetRefs))",message="mtls applies to workloads: use selector or no target, not targetRefs",fieldPath=".mtls"
// +kubebuilder:validation:XValidation:rule="has(self.rules) || has(self.mtls)",message="set rules, mtls, or both"
// +kubebuilder:validation:XValidation:rule="!has(self.jwt) || has(self.targetRefs)",message="jwt is validated by a waypoint: attach the policy to a Service, Waypoint or Namespace with targetRefs",fieldPath=".jwt"
type MeshPolicySpec struct {
	// selector picks the workloads (pods) in this namespace the policy
	// applies to. Mutually exclusive with targetRefs. When neither is set,
	// the policy applies to every workload in the namespace; in the mesh's
	// install namespace, to every workload in the mesh. The admission
	// webhook refuses a selector Kubernetes itself would not accept (an
	// unknown operator, an invalid label key or value), which would
	// otherwise select nothing.
	// +optional
	Selector *metav1.LabelSelector `json:"selector,omitempty"`

	// targetRefs attach the policy to Services, Waypoints or the Namespace,
	// all in this namespace. It is then enforced by the waypoint serving the
	// target. Mutually exclusive with selector.
	// +optional
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=8
	// +listType=atomic
	TargetRefs []PolicyTargetReference `json:"targetRefs,omitempty"`

	// action is what happens to traffic a rule matches: ALLOW (default),
	// DENY or AUDIT. DENY policies are evaluated first; once any ALLOW
	// policy applies to a workload, traffic no ALLOW rule matches is denied.
	// +optional
	// +kubebuilder:default=ALLOW
	Action PolicyAction `json:"action,omitempty"`

	// rules the traffic is matched against; a policy matches when any rule
	// does. Rules with methods, paths, hosts or when are L7 and are enforced
	// by a waypoint; a policy without rules only sets mtls.
	// +optional
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	Rules []Rule `json:"rules,omitempty"`

	// mtls sets peer authentication for the selected workloads: STRICT or
	// PERMISSIVE.
	// +optional
	MTLS *MTLSSettings `json:"mtls,omitempty"`

	// jwt makes the waypoint validate the request's JSON Web Token on the
	// paths the rules cover (every path when a rule has no paths): a request
	// without a valid token is refused with 401. rules[].when[].claim then
	// matches the token's claims. Needs targetRefs.
	// +optional
	JWT *JWTSettings `json:"jwt,omitempty"`
}

// EnforcementPoint is a proxy that enforces a policy.
// +kubebuilder:validation:Enum=ztunnel;waypoint
type EnforcementPoint string

const (
	// EnforcedByZTunnel: the node proxy enforces the L4 parts.
	EnforcedByZTunnel EnforcementPoint = "ztunnel"
	// EnforcedByWaypoint: a waypoint enforces the policy, L4 and L7.
	EnforcedByWaypoint EnforcementPoint = "waypoint"
)

// MeshPolicy condition types.
const (
	// PolicyConditionAccepted is True when the policy is valid and its
	// targets exist.
	PolicyConditionAccepted = "Accepted"
	// PolicyConditionEnforced is True when every proxy that must enforce
	// the policy holds this generation of it: each waypoint serving a
	// target is Ready and has ACKed the configuration that contains it, or
	// the ztunnel of every node running a selected workload has ACKed it.
	// Otherwise it is False with reason NoWaypoint, WaypointNotReady,
	// NoWorkloads, Pending or Unsupported.
	PolicyConditionEnforced = "Enforced"
)

// MeshPolicy condition reasons. Enforced is also False with ReasonPending
// (shared with Waypoint) while a proxy that must enforce the policy has not
// ACKed the configuration that contains it, is not connected, or rejected
// it (the message quotes why).
const (
	// ReasonAccepted: the policy is valid and translated.
	ReasonAccepted = "Accepted"
	// ReasonInvalid: the policy cannot be translated; the message says why.
	ReasonInvalid = "Invalid"
	// ReasonTargetNotFound: a targetRef names an object that does not exist.
	ReasonTargetNotFound = "TargetNotFound"
	// ReasonEnforced: every rule is enforced.
	ReasonEnforced = "Enforced"
	// ReasonNoWaypoint: no waypoint serves a target of the policy (a
	// policy with targetRefs is enforced by waypoints only), or a policy
	// without targetRefs has L7 rules, which ztunnel cannot check.
	ReasonNoWaypoint = "NoWaypoint"
	// ReasonWaypointNotReady: a waypoint that must enforce the policy is not
	// Ready (its Waypoint's Ready condition is not True).
	ReasonWaypointNotReady = "WaypointNotReady"
	// ReasonNoWorkloads: the policy selects no workload in the mesh yet, so
	// no ztunnel enforces it anywhere.
	ReasonNoWorkloads = "NoWorkloads"
	// ReasonUnsupported: the proxy that would enforce the policy does not
	// implement what it asks (e.g. AUDIT at a waypoint).
	ReasonUnsupported = "Unsupported"
)

// MeshPolicyStatus is the observed state of the policy.
type MeshPolicyStatus struct {
	// observedGeneration is the metadata.generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// enforcedBy lists the proxies that enforce this policy: ztunnel (L4
	// rules on the selected workloads) and/or waypoint (L4 and L7 rules on
	// traffic through a waypoint).
	// +optional
	// +kubebuilder:validation:MaxItems=2
	// +listType=set
	EnforcedBy []EnforcementPoint `json:"enforcedBy,omitempty"`

	// conditions: Accepted and Enforced.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`
}

// MeshPolicy allows, denies or audits traffic to workloads in its
// namespace (L4 by ztunnel, L7 by a waypoint) and sets their mutual-TLS mode.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,shortName=mp,categories=ambient
// +kubebuilder:printcolumn:name="Action",type=string,JSONPath=`.spec.action`
// +kubebuilder:printcolumn:name="Enforced-By",type=string,JSONPath=`.status.enforcedBy`,description="Proxies that enforce the policy"
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Enforced",type=string,JSONPath=`.status.conditions[?(@.type=="Enforced")].status`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type MeshPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired policy.
	// +required
	Spec MeshPolicySpec `json:"spec"`

	// status is the observed state, written by the control plane.
	// +optional
	Status MeshPolicyStatus `json:"status,omitempty"`
}

// MeshPolicyList is a list of MeshPolicy.
// +kubebuilder:object:root=true
type MeshPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MeshPolicy `json:"items"`
}

func init() {
	SchemeBuilder.Register(&MeshPolicy{}, &MeshPolicyList{})
}

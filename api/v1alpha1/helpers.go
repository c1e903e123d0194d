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
	"strings"
	"time"
)

// SPIFFEIdentity formats the identity of a service account:
// spiffe://<trustDomain>/ns/<namespace>/sa/<serviceAccount>.
func SPIFFEIdentity(trustDomain, namespace, serviceAccount string) string {
	return "spiffe://" + trustDomain + "/ns/" + namespace + "/sa/" + serviceAccount
}

// Split returns the namespace and name of a <namespace>/<name> reference.
func (r ServiceAccountRef) Split() (namespace, name string) {
	namespace, name, _ = strings.Cut(string(r), "/")
	return namespace, name
}

// Identity returns the SPIFFE id of the referenced service account in
// trustDomain.
func (r ServiceAccountRef) Identity(trustDomain string) string {
	ns, name := r.Split()
	return SPIFFEIdentity(trustDomain, ns, name)
}

// IsL7 reports whether the destination matches on HTTP attributes.
func (d *Destination) IsL7() bool {
	return len(d.Methods) > 0 || len(d.Paths) > 0 || len(d.Hosts) > 0
}

// IsL7 reports whether the rule needs a waypoint to be enforced.
func (r *Rule) IsL7() bool {
	if len(r.When) > 0 {
		return true
	}
	for i := range r.To {
		if r.To[i].IsL7() {
			return true
		}
	}
	return false
}

// HasL7Rules reports whether any rule of the policy needs a waypoint.
func (p *MeshPolicy) HasL7Rules() bool {
	for i := range p.Spec.Rules {
		if p.Spec.Rules[i].IsL7() {
			return true
		}
	}
	return false
}

// EffectiveGroup is the target's group, inferred from its kind when omitted.
func (r *PolicyTargetReference) EffectiveGroup() string {
	if r.Group != "" {
		return r.Group
	}
	if r.Kind == TargetKindWaypoint {
		return GroupVersion.Group
	}
	return ""
}

// The accessors below return the value the CRD defaults to when a field is
// unset. Objects read from the API server are already defaulted; objects
// built in Go (tests, fake clients) may not be.

// InstallNamespace is spec.namespace or DefaultNamespace.
func (s *AmbientMeshSpec) InstallNamespace() string {
	return orDefault(s.Namespace, DefaultNamespace)
}

// EffectiveTrustDomain is spec.trustDomain or DefaultTrustDomain.
func (s *AmbientMeshSpec) EffectiveTrustDomain() string {
	return orDefault(s.TrustDomain, DefaultTrustDomain)
}

// EffectiveVersion is spec.version or DefaultVersion.
func (s *AmbientMeshSpec) EffectiveVersion() string {
	return orDefault(s.Version, DefaultVersion)
}

// EffectiveWorkloadCertTTL is identity.workloadCertTTL or DefaultWorkloadCertTTL.
func (s *IdentitySpec) EffectiveWorkloadCertTTL() time.Duration {
	if s.WorkloadCertTTL == nil {
		return DefaultWorkloadCertTTL
	}
	return s.WorkloadCertTTL.Duration
}

// EffectiveRootCATTL is identity.rootCATTL or DefaultRootCATTL.
func (s *IdentitySpec) EffectiveRootCATTL() time.Duration {
	if s.RootCATTL == nil {
		return DefaultRootCATTL
	}
	return s.RootCATTL.Duration
}

// EffectiveDrainPeriod is ztunnel.drainPeriod or DefaultDrainPeriod.
func (s *ZTunnelSpec) EffectiveDrainPeriod() time.Duration {
	if s.DrainPeriod == nil {
		return DefaultDrainPeriod
	}
	return s.DrainPeriod.Duration
}

// EffectiveUpdateStrategy is ztunnel.updateStrategy or NodeByNode.
func (s *ZTunnelSpec) EffectiveUpdateStrategy() ZTunnelUpdateStrategy {
	return orDefault(s.UpdateStrategy, UpdateNodeByNode)
}

// EffectiveBinDir is cni.binDir or DefaultCNIBinDir.
func (s *CNISpec) EffectiveBinDir() string { return orDefault(s.BinDir, DefaultCNIBinDir) }

// EffectiveConfDir is cni.confDir or DefaultCNIConfDir.
func (s *CNISpec) EffectiveConfDir() string { return orDefault(s.ConfDir, DefaultCNIConfDir) }

// IsChained is cni.chained, true when unset.
func (s *CNISpec) IsChained() bool { return s.Chained == nil || *s.Chained }

// EffectiveRedirection is cni.redirection or nftables.
func (s *CNISpec) EffectiveRedirection() RedirectionBackend {
	return orDefault(s.Redirection, RedirectionNFTables)
}

// EffectiveLogLevel is logLevel or info.
func (s *ComponentSpec) EffectiveLogLevel() LogLevel { return orDefault(s.LogLevel, LogLevelInfo) }

// IsPaused is upgrade.paused, false when unset.
func (p *UpgradePolicy) IsPaused() bool { return p.Paused != nil && *p.Paused }

// EffectiveNodeReadyTimeout is upgrade.nodeReadyTimeout or DefaultNodeReadyTimeout.
func (p *UpgradePolicy) EffectiveNodeReadyTimeout() time.Duration {
	if p.NodeReadyTimeout == nil {
		return DefaultNodeReadyTimeout
	}
	return p.NodeReadyTimeout.Duration
}

// EffectiveFor is spec.for or service.
func (s *WaypointSpec) EffectiveFor() WaypointTrafficType {
	return orDefault(s.For, WaypointForService)
}

// FixedReplicas is the replica count when autoscaling is off: spec.replicas,
// or 1 when unset.
func (s *WaypointSpec) FixedReplicas() int32 {
	if s.Replicas == nil {
		return 1
	}
	return *s.Replicas
}

// EffectiveAction is spec.action or ALLOW.
func (s *MeshPolicySpec) EffectiveAction() PolicyAction {
	return orDefault(s.Action, ActionAllow)
}

func orDefault[T ~string](v, def T) T {
	if v == "" {
		return def
	}
	return v
}

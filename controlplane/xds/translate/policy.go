package translate

import (
	"slices"
	"sort"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
)

// IsZTunnelPolicy reports whether ztunnel enforces the policy's rules: it selects
// workloads (a selector, or the whole namespace) rather than targeting a Service or
// Waypoint, and it has rules (a policy with only mtls sets peer authentication).
func IsZTunnelPolicy(p *meshv1.MeshPolicy) bool {
	return len(p.Spec.TargetRefs) == 0 && len(p.Spec.Rules) > 0
}

// Authorization translates the L4 part of a MeshPolicy; nil when ztunnel does not enforce
// the policy (see IsZTunnelPolicy).
//
// L7 conditions cannot be checked on a TCP connection, so they fail closed: an ALLOW or
// AUDIT rule with L7 conditions is dropped (it allows nothing), and a DENY rule keeps only
// its L4 conditions (it denies more). The policy's status reports that they are not enforced.
func Authorization(mesh Mesh, p *meshv1.MeshPolicy) *pb.Authorization {
	if !IsZTunnelPolicy(p) {
		return nil
	}
	action := p.Spec.EffectiveAction()
	out := &pb.Authorization{
		Name:      p.Name,
		Namespace: p.Namespace,
		Scope:     policyScope(mesh, p),
		Action:    pbAction(action),
	}
	for _, r := range p.Spec.Rules {
		out.Rules = append(out.Rules, l4Rules(mesh, r, action == meshv1.ActionDeny)...)
	}
	return out
}

func policyScope(mesh Mesh, p *meshv1.MeshPolicy) pb.AuthorizationScope {
	switch {
	case p.Spec.Selector != nil:
		return pb.AuthorizationScope_AUTHORIZATION_SCOPE_WORKLOAD_SELECTOR
	case p.Namespace == mesh.RootNamespace:
		return pb.AuthorizationScope_AUTHORIZATION_SCOPE_GLOBAL
	default:
		return pb.AuthorizationScope_AUTHORIZATION_SCOPE_NAMESPACE
	}
}

func pbAction(a meshv1.PolicyAction) pb.AuthorizationAction {
	switch a {
	case meshv1.ActionDeny:
		return pb.AuthorizationAction_AUTHORIZATION_ACTION_DENY
	case meshv1.ActionAudit:
		return pb.AuthorizationAction_AUTHORIZATION_ACTION_AUDIT
	default:
		return pb.AuthorizationAction_AUTHORIZATION_ACTION_ALLOW
	}
}

// l4Rules expands one MeshPolicy rule into workload API rules. A MeshPolicy rule ORs its
// sources and its destinations; a workload API rule ANDs its fields, so the expansion is
// the cross product of sources and destinations.
func l4Rules(mesh Mesh, r meshv1.Rule, deny bool) []*pb.Rule {
	if len(r.When) > 0 && !deny {
		return nil
	}
	sources := r.From
	if len(sources) == 0 {
		sources = []meshv1.Source{{}}
	}
	var ports [][]uint32
	for _, d := range r.To {
		if d.IsL7() && !deny {
			continue
		}
		ports = append(ports, toPorts(d.Ports))
	}
	if len(r.To) == 0 {
		ports = [][]uint32{nil}
	}
	var out []*pb.Rule
	for _, s := range sources {
		for _, pl := range ports {
			out = append(out, &pb.Rule{
				Principals: principals(mesh, s),
				Namespaces: slices.Clone(s.Namespaces),
				IpBlocks:   ipBlocks(s.IPBlocks),
				Ports:      pl,
			})
		}
	}
	return out
}

func principals(mesh Mesh, s meshv1.Source) []string {
	var out []string
	for _, p := range s.Principals {
		out = append(out, string(p))
	}
	for _, sa := range s.ServiceAccounts {
		out = append(out, sa.Identity(mesh.TrustDomain))
	}
	return out
}

func ipBlocks(in []meshv1.IPBlock) []string {
	var out []string
	for _, b := range in {
		out = append(out, string(b))
	}
	return out
}

func toPorts(in []int32) []uint32 {
	var out []uint32
	for _, p := range in {
		out = append(out, uint32(p))
	}
	return out
}

// selects reports whether a label selector matches the pod; an invalid selector matches
// nothing (the policy's Accepted condition reports it).
func selects(sel *metav1.LabelSelector, pod *corev1.Pod) bool {
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return false
	}
	return s.Matches(labels.Set(pod.Labels))
}

// MTLSModeFor resolves peer authentication for a pod from the policies that set mtls. The
// most specific one wins: a selector policy in the pod's namespace, then a namespace-wide
// policy there, then a mesh-wide one in the root namespace; among equals the oldest wins
// (as in Istio), then the name.
func MTLSModeFor(mesh Mesh, pod *corev1.Pod, policies []meshv1.MeshPolicy) pb.MTLSMode {
	var best *meshv1.MeshPolicy
	bestRank := 0
	for i := range policies {
		p := &policies[i]
		rank := mtlsRank(mesh, p, pod)
		if rank == 0 {
			continue
		}
		if best == nil || rank > bestRank || (rank == bestRank && olderThan(p, best)) {
			best, bestRank = p, rank
		}
	}
	if best == nil {
		return pb.MTLSMode_MTLS_MODE_UNSPECIFIED
	}
	if best.Spec.MTLS.Mode == meshv1.MTLSStrict {
		return pb.MTLSMode_MTLS_MODE_STRICT
	}
	return pb.MTLSMode_MTLS_MODE_PERMISSIVE
}

// mtlsRank: 0 = does not apply to the pod, higher = more specific.
func mtlsRank(mesh Mesh, p *meshv1.MeshPolicy, pod *corev1.Pod) int {
	if p.Spec.MTLS == nil || len(p.Spec.TargetRefs) > 0 {
		return 0
	}
	switch {
	case p.Namespace == pod.Namespace && p.Spec.Selector != nil:
		if selects(p.Spec.Selector, pod) {
			return 3
		}
		return 0
	case p.Namespace == pod.Namespace:
		return 2
	case p.Namespace == mesh.RootNamespace && p.Spec.Selector == nil:
		return 1
	}
	return 0
}

func olderThan(a, b *meshv1.MeshPolicy) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	return a.Namespace+"/"+a.Name < b.Namespace+"/"+b.Name
}

// SortPolicies orders policies by namespace and name so translation output is stable.
func SortPolicies(ps []meshv1.MeshPolicy) {
	sort.Slice(ps, func(i, j int) bool {
		return ps[i].Namespace+"/"+ps[i].Name < ps[j].Namespace+"/"+ps[j].Name
	})
}

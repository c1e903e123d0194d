// Package authz evaluates L4 authorization policies (the workload API's Authorization) for
// connections arriving at a workload. It is pure: no I/O, no clocks.
//
// Decision rule (as Istio's): a matching DENY policy denies; otherwise, when any ALLOW
// policy applies to the workload, one of them must match; with no ALLOW policy the
// connection is allowed. AUDIT policies never change the decision; matches are reported.
package authz

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/internal/spiffe"
)

// Conn is what is known about a connection when it is authorized.
type Conn struct {
	// SrcIP is the source address: the peer pod's IP from the tunnel (or the TCP peer for
	// plaintext inbound).
	SrcIP netip.Addr
	// Principal is the peer's verified identity; zero for plaintext connections.
	Principal spiffe.ID
	// DstPort is the workload port the connection is for.
	DstPort uint16
}

// Decision is the outcome for one connection.
type Decision struct {
	Allowed bool
	// Policy is the policy that decided ("<namespace>/<name>"), empty for the default.
	Policy string
	// Reason explains the decision in words for logs and errors.
	Reason string
	// Audited lists AUDIT policies that matched.
	Audited []string
}

// Policy is a compiled Authorization.
type Policy struct {
	Name      string // "<namespace>/<name>"
	Namespace string
	Scope     pb.AuthorizationScope
	Action    pb.AuthorizationAction
	// Source is the resource the policy was compiled from (for dumps).
	Source *pb.Authorization
	rules  []rule
}

type rule struct {
	principals, notPrincipals []string
	namespaces, notNamespaces []string
	ipBlocks, notIPBlocks     []netip.Prefix
	ports, notPorts           []uint32
}

// Compile validates an Authorization and prepares it for evaluation.
func Compile(a *pb.Authorization) (*Policy, error) {
	name := pb.AuthorizationResourceName(a.GetNamespace(), a.GetName())
	if err := pb.ValidateAuthorization(name, a); err != nil {
		return nil, fmt.Errorf("authorization %s: %w", name, err)
	}
	p := &Policy{Name: name, Namespace: a.GetNamespace(), Scope: a.GetScope(), Action: a.GetAction(), Source: a}
	for _, r := range a.GetRules() {
		p.rules = append(p.rules, rule{
			principals:    r.GetPrincipals(),
			notPrincipals: r.GetNotPrincipals(),
			namespaces:    r.GetNamespaces(),
			notNamespaces: r.GetNotNamespaces(),
			ipBlocks:      mustBlocks(r.GetIpBlocks()),
			notIPBlocks:   mustBlocks(r.GetNotIpBlocks()),
			ports:         r.GetPorts(),
			notPorts:      r.GetNotPorts(),
		})
	}
	return p, nil
}

// mustBlocks parses blocks already checked by ValidateAuthorization.
func mustBlocks(in []string) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(in))
	for _, s := range in {
		if p, err := pb.ParseIPBlock(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// AppliesTo reports whether the policy governs connections to w.
func (p *Policy) AppliesTo(w *pb.Workload) bool {
	switch p.Scope {
	case pb.AuthorizationScope_AUTHORIZATION_SCOPE_GLOBAL:
		return true
	case pb.AuthorizationScope_AUTHORIZATION_SCOPE_NAMESPACE:
		return p.Namespace == w.GetNamespace()
	case pb.AuthorizationScope_AUTHORIZATION_SCOPE_WORKLOAD_SELECTOR:
		return p.Namespace == w.GetNamespace() && slices.Contains(w.GetAuthorizationPolicies(), p.Name)
	}
	return false
}

// Evaluate decides a connection against the policies that apply to its destination.
func Evaluate(policies []*Policy, c Conn) Decision {
	var d Decision
	var allowPolicies int
	allowedBy := ""
	for _, p := range policies {
		matched := p.matches(c)
		switch p.Action {
		case pb.AuthorizationAction_AUTHORIZATION_ACTION_DENY:
			if matched {
				return Decision{Allowed: false, Policy: p.Name, Reason: "denied by DENY policy " + p.Name, Audited: d.Audited}
			}
		case pb.AuthorizationAction_AUTHORIZATION_ACTION_ALLOW:
			allowPolicies++
			if matched && allowedBy == "" {
				allowedBy = p.Name
			}
		case pb.AuthorizationAction_AUTHORIZATION_ACTION_AUDIT:
			if matched {
				d.Audited = append(d.Audited, p.Name)
			}
		}
	}
	switch {
	case allowPolicies == 0:
		d.Allowed, d.Reason = true, "allowed: no ALLOW policy applies"
	case allowedBy != "":
		d.Allowed, d.Policy, d.Reason = true, allowedBy, "allowed by ALLOW policy "+allowedBy
	default:
		d.Allowed, d.Reason = false, fmt.Sprintf("denied: none of the %d ALLOW policies matched", allowPolicies)
	}
	return d
}

func (p *Policy) matches(c Conn) bool {
	for i := range p.rules {
		if p.rules[i].matches(c) {
			return true
		}
	}
	return false
}

func (r *rule) matches(c Conn) bool {
	principal := c.Principal.String()
	ns := c.Principal.Namespace
	return matchField(r.principals, r.notPrincipals, func(pat string) bool { return principalMatches(pat, principal) }) &&
		matchField(r.namespaces, r.notNamespaces, func(n string) bool { return ns != "" && n == ns }) &&
		matchField(r.ipBlocks, r.notIPBlocks, func(b netip.Prefix) bool { return c.SrcIP.IsValid() && b.Contains(c.SrcIP.Unmap()) }) &&
		matchField(r.ports, r.notPorts, func(p uint32) bool { return p == uint32(c.DstPort) })
}

// matchField: a non-empty positive list needs one hit; a non-empty negative list needs none.
func matchField[T any](values, notValues []T, hit func(T) bool) bool {
	if len(values) > 0 && !slices.ContainsFunc(values, hit) {
		return false
	}
	return !slices.ContainsFunc(notValues, hit)
}

// principalMatches supports "*" (any authenticated peer), "prefix*" and "*suffix".
func principalMatches(pattern, principal string) bool {
	if principal == "" {
		return false
	}
	switch {
	case pattern == "*":
		return true
	case strings.HasSuffix(pattern, "*"):
		return strings.HasPrefix(principal, strings.TrimSuffix(pattern, "*"))
	case strings.HasPrefix(pattern, "*"):
		return strings.HasSuffix(principal, strings.TrimPrefix(pattern, "*"))
	}
	return pattern == principal
}

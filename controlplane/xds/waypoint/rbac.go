package waypoint

import (
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
)

// JWTFilterName is the jwt_authn filter; RBAC reads validated claims from its metadata.
const JWTFilterName = "envoy.filters.http.jwt_authn"

// JWTPayloadKey is where jwt_authn puts a validated token's payload in that metadata.
const JWTPayloadKey = "payload"

// scope is what a listener carries: one Service's traffic, or one pod's.
type scope struct {
	namespace string
	// service is the Service's name; empty for a workload listener.
	service string
}

// appliesTo reports whether a MeshPolicy is enforced on a listener of the waypoint: its
// targetRefs name the waypoint (a policy of the waypoint's namespace: all its traffic,
// whichever namespace it comes from), or the listener's Service or namespace (a policy of
// the listener's namespace). Policies without targetRefs are ztunnel's (see
// translate.IsZTunnelPolicy).
func appliesTo(p *meshv1.MeshPolicy, wp *meshv1.Waypoint, sc scope) bool {
	if len(p.Spec.Rules) == 0 {
		return false
	}
	for _, ref := range p.Spec.TargetRefs {
		switch ref.Kind {
		case meshv1.TargetKindWaypoint:
			if p.Namespace == wp.Namespace && ref.Name == wp.Name {
				return true
			}
		case meshv1.TargetKindService:
			if p.Namespace == sc.namespace && sc.service != "" && ref.Name == sc.service {
				return true
			}
		case meshv1.TargetKindNamespace:
			if p.Namespace == sc.namespace && ref.Name == sc.namespace {
				return true
			}
		}
	}
	return false
}

// policiesFor lists the policies enforced on a listener, sorted by namespace/name.
func policiesFor(policies []meshv1.MeshPolicy, wp *meshv1.Waypoint, sc scope) []*meshv1.MeshPolicy {
	var out []*meshv1.MeshPolicy
	for i := range policies {
		if appliesTo(&policies[i], wp, sc) {
			out = append(out, &policies[i])
		}
	}
	sort.Slice(out, func(i, j int) bool { return policyKey(out[i]) < policyKey(out[j]) })
	return out
}

func policyKey(p *meshv1.MeshPolicy) string { return p.Namespace + "/" + p.Name }

// rbacRules builds the RBAC of one action from the policies: one Envoy policy per
// MeshPolicy rule, named "<namespace>/<name>[<rule index>]". With l7 false (a TCP port)
// HTTP conditions cannot be checked and fail closed, as at ztunnel: an ALLOW rule that
// needs them is dropped (it allows nothing), a DENY rule keeps only its L4 conditions
// (it denies more).
func rbacRules(mesh Mesh, policies []*meshv1.MeshPolicy, action meshv1.PolicyAction, l7 bool) *rbacv3.RBAC {
	out := &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{}}
	if action == meshv1.ActionDeny {
		out.Action = rbacv3.RBAC_DENY
	}
	for _, p := range policies {
		if p.Spec.EffectiveAction() != action {
			continue
		}
		for i := range p.Spec.Rules {
			if pol := rulePolicy(mesh, &p.Spec.Rules[i], p.Spec.JWT != nil, action == meshv1.ActionDeny, l7); pol != nil {
				out.Policies[fmt.Sprintf("%s[%d]", policyKey(p), i)] = pol
			}
		}
	}
	return out
}

// hasAction reports whether any policy has the action.
func hasAction(policies []*meshv1.MeshPolicy, action meshv1.PolicyAction) bool {
	for _, p := range policies {
		if p.Spec.EffectiveAction() == action {
			return true
		}
	}
	return false
}

// rulePolicy: a rule matches when one destination (permission), one source, and every
// condition match; Envoy ANDs permissions with principals, so the conditions join each
// source. nil when the rule can match nothing here. A policy's jwt is an HTTP condition
// too: on a TCP port no token can be checked, so its ALLOW rules allow nothing.
func rulePolicy(mesh Mesh, r *meshv1.Rule, jwt, deny, l7 bool) *rbacv3.Policy {
	if !l7 && (len(r.When) > 0 || jwt) && !deny {
		return nil
	}
	var perms []*rbacv3.Permission
	for i := range r.To {
		d := &r.To[i]
		if !l7 && d.IsL7() && !deny {
			continue
		}
		perms = append(perms, destinationPermission(d, l7))
	}
	if len(r.To) > 0 && len(perms) == 0 {
		return nil
	}
	if len(perms) == 0 {
		perms = []*rbacv3.Permission{anyPermission()}
	}
	var conditions []*rbacv3.Principal
	if l7 {
		for i := range r.When {
			conditions = append(conditions, conditionPrincipal(&r.When[i]))
		}
	}
	var principals []*rbacv3.Principal
	for i := range r.From {
		principals = append(principals, andIDs(append([]*rbacv3.Principal{sourcePrincipal(mesh, &r.From[i])}, conditions...)))
	}
	if len(principals) == 0 {
		if len(conditions) > 0 {
			principals = []*rbacv3.Principal{andIDs(conditions)}
		} else {
			principals = []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Any{Any: true}}}
		}
	}
	return &rbacv3.Policy{Permissions: perms, Principals: principals}
}

func anyPermission() *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}}
}

// destinationPermission ANDs the destination's fields, each an OR of its entries. On a
// TCP port only the ports count (an HTTP-only destination then matches any port).
func destinationPermission(d *meshv1.Destination, l7 bool) *rbacv3.Permission {
	var all []*rbacv3.Permission
	if len(d.Ports) > 0 {
		var ports []*rbacv3.Permission
		for _, p := range d.Ports {
			ports = append(ports, &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: uint32(p)}})
		}
		all = append(all, orRules(ports))
	}
	if l7 && len(d.Methods) > 0 {
		var methods []*rbacv3.Permission
		for _, m := range d.Methods {
			methods = append(methods, &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: exactHeader(":method", m)}})
		}
		all = append(all, orRules(methods))
	}
	if l7 && len(d.Paths) > 0 {
		var paths []*rbacv3.Permission
		for _, p := range d.Paths {
			m := &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: p.Exact}}
			if p.Prefix != "" {
				m = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: p.Prefix}}
			}
			paths = append(paths, &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{
				Rule: &matcherv3.PathMatcher_Path{Path: m},
			}}})
		}
		all = append(all, orRules(paths))
	}
	if l7 && len(d.Hosts) > 0 {
		var hosts []*rbacv3.Permission
		for _, h := range d.Hosts {
			hosts = append(hosts, &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: &routev3.HeaderMatcher{
				Name:                 ":authority",
				HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: regexMatcher(hostRegex(h))},
			}}})
		}
		all = append(all, orRules(hosts))
	}
	if len(all) == 0 {
		return anyPermission()
	}
	if len(all) == 1 {
		return all[0]
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: all}}}
}

// hostRegex matches a :authority against a policy host without case: "example.com" with
// any port or none, "*.example.com" any subdomain, "example.com:8080" that port only.
func hostRegex(host string) string {
	name, port, hasPort := strings.Cut(host, ":")
	var b strings.Builder
	b.WriteString("(?i)^")
	if rest, ok := strings.CutPrefix(name, "*."); ok {
		b.WriteString(`[^/:]+\.` + regexp.QuoteMeta(rest))
	} else {
		b.WriteString(regexp.QuoteMeta(name))
	}
	if hasPort {
		b.WriteString(":" + port)
	} else {
		b.WriteString("(:[0-9]+)?")
	}
	b.WriteString("$")
	return b.String()
}

func orRules(ps []*rbacv3.Permission) *rbacv3.Permission {
	if len(ps) == 1 {
		return ps[0]
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: ps}}}
}

// sourcePrincipal ANDs the source's fields, each an OR of its entries.
func sourcePrincipal(mesh Mesh, s *meshv1.Source) *rbacv3.Principal {
	var all []*rbacv3.Principal
	var ids []*rbacv3.Principal
	for _, p := range s.Principals {
		ids = append(ids, principalName(exact(string(p))))
	}
	for _, sa := range s.ServiceAccounts {
		ids = append(ids, principalName(exact(sa.Identity(mesh.TrustDomain))))
	}
	if len(ids) > 0 {
		all = append(all, orIDs(ids))
	}
	if len(s.Namespaces) > 0 {
		var nss []*rbacv3.Principal
		for _, ns := range s.Namespaces {
			nss = append(nss, principalName(regexMatcher(namespaceRegex(mesh.TrustDomain, ns))))
		}
		all = append(all, orIDs(nss))
	}
	if len(s.IPBlocks) > 0 {
		var ips []*rbacv3.Principal
		for _, b := range s.IPBlocks {
			if cidr := cidrRange(string(b)); cidr != nil {
				ips = append(ips, &rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: cidr}})
			}
		}
		if len(ips) == 0 {
			// Only unparsable blocks (the schema refuses them): match nothing.
			ips = []*rbacv3.Principal{{Identifier: &rbacv3.Principal_NotId{NotId: &rbacv3.Principal{Identifier: &rbacv3.Principal_Any{Any: true}}}}}
		}
		all = append(all, orIDs(ips))
	}
	if len(all) == 0 {
		return &rbacv3.Principal{Identifier: &rbacv3.Principal_Any{Any: true}}
	}
	return andIDs(all)
}

// namespaceRegex matches every identity of a namespace in the trust domain.
func namespaceRegex(trustDomain, ns string) string {
	return "^spiffe://" + regexp.QuoteMeta(trustDomain) + "/ns/" + regexp.QuoteMeta(ns) + "/sa/[^/]+$"
}

func principalName(m *matcherv3.StringMatcher) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: m}}}
}

func cidrRange(block string) *corev3.CidrRange {
	prefix, err := netip.ParsePrefix(block)
	if err != nil {
		addr, err := netip.ParseAddr(block)
		if err != nil {
			return nil
		}
		prefix = netip.PrefixFrom(addr, addr.BitLen())
	}
	return &corev3.CidrRange{AddressPrefix: prefix.Addr().String(), PrefixLen: wrapperspb.UInt32(uint32(prefix.Bits()))}
}

// conditionPrincipal: the header or claim equals one of the values. A claim is read from
// the jwt_authn payload metadata at [payload, claim parts...]; a list claim matches when
// any element does.
func conditionPrincipal(c *meshv1.RequestCondition) *rbacv3.Principal {
	var alts []*rbacv3.Principal
	for _, v := range c.Values {
		if c.Header != "" {
			alts = append(alts, &rbacv3.Principal{Identifier: &rbacv3.Principal_Header{Header: exactHeader(strings.ToLower(c.Header), v)}})
			continue
		}
		alts = append(alts,
			claimPrincipal(c.Claim, &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: exact(v)}}),
			claimPrincipal(c.Claim, &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_ListMatch{ListMatch: &matcherv3.ListMatcher{
				MatchPattern: &matcherv3.ListMatcher_OneOf{OneOf: &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: exact(v)}}},
			}}}))
	}
	return orIDs(alts)
}

func claimPrincipal(claim string, value *matcherv3.ValueMatcher) *rbacv3.Principal {
	path := []*matcherv3.MetadataMatcher_PathSegment{{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: JWTPayloadKey}}}
	for _, part := range strings.Split(claim, ".") {
		path = append(path, &matcherv3.MetadataMatcher_PathSegment{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: part}})
	}
	// JWT claims are matched with `metadata`, as the waypoint contract says and Istio does:
	// every Envoy understands it; its replacement, sourced_metadata, only newer ones.
	//nolint:staticcheck // SA1019: deprecated upstream, kept on purpose (see above).
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Metadata{Metadata: &matcherv3.MetadataMatcher{
		Filter: JWTFilterName, Path: path, Value: value,
	}}}
}

func orIDs(ps []*rbacv3.Principal) *rbacv3.Principal {
	if len(ps) == 1 {
		return ps[0]
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{Ids: ps}}}
}

func andIDs(ps []*rbacv3.Principal) *rbacv3.Principal {
	if len(ps) == 1 {
		return ps[0]
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: ps}}}
}

func exactHeader(name, value string) *routev3.HeaderMatcher {
	return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact(value)}}
}

func exact(v string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: v}}
}

func regexMatcher(re string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: re}}}
}

// Package rbac is the waypoint's authorization: it compiles Envoy RBAC filter
// configs (envoy.extensions.filters.http.rbac.v3.RBAC for HTTP listeners,
// envoy.extensions.filters.network.rbac.v3.RBAC for TCP ones) and evaluates
// them against the attributes of a request or connection, with Envoy's
// semantics:
//
//   - a policy matches when any of its permissions and any of its principals
//     match; policies are tried in sorted name order, so the matched policy's
//     name is deterministic;
//   - ALLOW allows iff a policy matches (no policies: deny everything), DENY
//     allows iff none matches, LOG always allows; a filter without rules
//     allows everything;
//   - filters run in order and the first denial wins (EvaluateChain): the
//     waypoint installs a DENY filter then an ALLOW filter, like Istio.
//
// Supported principals: any, and_ids, or_ids, not_id, authenticated
// (principal_name against the verified peer SPIFFE ID; unset matches any
// authenticated peer), source_ip and direct_remote_ip (the TCP peer),
// remote_ip (the original client), header, url_path, metadata and
// sourced_metadata from DYNAMIC metadata. Supported permissions: any,
// and_rules, or_rules, not_rule, header, url_path, destination_ip,
// destination_port, destination_port_range, requested_server_name, metadata
// and sourced_metadata from DYNAMIC metadata. Matchers: StringMatcher (exact,
// prefix, suffix, contains, safe_regex; ignore_case), HeaderMatcher (every
// specifier, invert_match, treat_missing_header_as_empty, the pseudo-headers
// :method, :authority (alias host), :path and :scheme), PathMatcher,
// MetadataMatcher (null, double, string, bool, present, list one_of, or;
// invert), CidrRange for IPv4 and IPv6.
//
// Not supported, and rejected by Compile (an xDS NACK) because skipping a
// policy we cannot evaluate would fail open under DENY: the xDS matcher tree
// (matcher), policy conditions (CEL condition, checked_condition), principals
// filter_state and custom, permissions matcher and uri_template, ROUTE
// metadata, custom string matchers, pseudo-headers other than the four above.
// Ignored because they do not change a decision: shadow rules and shadow
// matchers, stat prefixes, per-rule stats, audit logging options, and the
// network filter's enforcement_type (a connection's attributes do not change
// while it lives) and delay_deny (closing a denied connection is the
// caller's business).
//
// Where we differ from Envoy, and why:
//   - requested_server_name is matched against the empty string: the waypoint
//     serves plaintext inside an HBONE tunnel and never sees a TLS SNI, which
//     is also what an Envoy waypoint's inner listener matches against. Never
//     matching would fail open under DENY; rejecting would NACK configs Envoy
//     accepts.
//   - authenticated matches only when Attributes.Principal is set: the peer's
//     SPIFFE ID is the only identity a mesh peer presents (Envoy would also
//     fall back to DNS SANs and the subject).
//   - IPv4-mapped IPv6 addresses (::ffff:a.b.c.d), in attributes and in
//     CIDR prefixes of at least 96 bits, are treated as the IPv4 address, so
//     an IPv4 rule also holds for a client seen through a dual-stack socket.
//   - Go's regexp (RE2 syntax, full match) replaces RE2; Envoy's program-size
//     limit is not applied.
package rbac

import (
	"fmt"
	"net/http"
	"net/netip"
	"sort"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
)

// Actions as Filter.Action and Decision.Action report them.
const (
	ActionAllow = "ALLOW"
	ActionDeny  = "DENY"
	ActionLog   = "LOG"
)

// Attributes describe one request (HTTP filter) or connection (network
// filter). HTTP-only fields are zero for connections; matchers on them then
// see absent headers, as Envoy's network filter does.
type Attributes struct {
	Principal       string     // verified peer SPIFFE ID (URI SAN), "" when none
	RemoteIP        netip.Addr // the original client (from a trusted Forwarded), else the direct peer
	DirectRemoteIP  netip.Addr // the TCP peer of the waypoint
	DestinationIP   netip.Addr
	DestinationPort uint16

	// HTTP only. An empty pseudo-header value counts as absent.
	Method, Host, Path string      // Path is the full :path (with query); url_path matchers use it without the query
	Scheme             string      // :scheme
	Header             http.Header // keys in canonical form, as net/http delivers them
	// Metadata is dynamic metadata by filter name, e.g.
	// Metadata["envoy.filters.http.jwt_authn"]["payload"] = JWT claims, as
	// decoded from JSON (string, float64 or json.Number, bool, []any,
	// map[string]any, nil).
	Metadata map[string]map[string]any
}

// Decision is the outcome of one filter (or of a chain of filters).
type Decision struct {
	Allowed bool
	Policy  string // the name of the matched policy ("" when none matched)
	Action  string // the action of the filter that decided ("" for a filter without rules)
}

// Filter is a compiled RBAC filter. It is immutable and safe for concurrent
// use.
type Filter struct {
	action   string // "" when the config has no rules: allow everything
	policies []policy
}

type policy struct {
	name        string
	permissions []predicate
	principals  []predicate
}

// CompileHTTP compiles an HTTP RBAC filter config.
func CompileHTTP(cfg *rbachttpv3.RBAC) (*Filter, error) {
	if cfg == nil {
		return nil, fmt.Errorf("rbac: nil config")
	}
	if err := cfg.ValidateAll(); err != nil {
		return nil, fmt.Errorf("rbac: invalid config: %w", err)
	}
	if cfg.GetMatcher() != nil {
		return nil, fmt.Errorf("rbac: matcher (xDS matcher tree) is not supported, use rules")
	}
	return compileRules(cfg.GetRules())
}

// CompileNetwork compiles a network (TCP) RBAC filter config.
func CompileNetwork(cfg *rbacnetv3.RBAC) (*Filter, error) {
	if cfg == nil {
		return nil, fmt.Errorf("rbac: nil config")
	}
	if err := cfg.ValidateAll(); err != nil {
		return nil, fmt.Errorf("rbac: invalid config: %w", err)
	}
	if cfg.GetMatcher() != nil {
		return nil, fmt.Errorf("rbac: matcher (xDS matcher tree) is not supported, use rules")
	}
	return compileRules(cfg.GetRules())
}

func compileRules(rules *rbacv3.RBAC) (*Filter, error) {
	if rules == nil {
		return &Filter{}, nil
	}
	f := &Filter{}
	switch rules.GetAction() {
	case rbacv3.RBAC_ALLOW:
		f.action = ActionAllow
	case rbacv3.RBAC_DENY:
		f.action = ActionDeny
	case rbacv3.RBAC_LOG:
		f.action = ActionLog
	default:
		return nil, fmt.Errorf("rbac: unknown action %v", rules.GetAction())
	}
	names := make([]string, 0, len(rules.GetPolicies()))
	for name := range rules.GetPolicies() {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		p, err := compilePolicy(name, rules.GetPolicies()[name])
		if err != nil {
			return nil, fmt.Errorf("rbac: policy %q: %w", name, err)
		}
		f.policies = append(f.policies, p)
	}
	return f, nil
}

func compilePolicy(name string, p *rbacv3.Policy) (policy, error) {
	if p == nil {
		return policy{}, fmt.Errorf("policy is nil")
	}
	if p.GetCondition() != nil || p.GetCheckedCondition() != nil {
		return policy{}, fmt.Errorf("condition (CEL) is not supported")
	}
	out := policy{name: name}
	for i, perm := range p.GetPermissions() {
		m, err := compilePermission(perm)
		if err != nil {
			return policy{}, fmt.Errorf("permissions[%d]: %w", i, err)
		}
		out.permissions = append(out.permissions, m)
	}
	for i, prin := range p.GetPrincipals() {
		m, err := compilePrincipal(prin)
		if err != nil {
			return policy{}, fmt.Errorf("principals[%d]: %w", i, err)
		}
		out.principals = append(out.principals, m)
	}
	return out, nil
}

// Action is "ALLOW", "DENY" or "LOG", or "" for a filter without rules
// (which allows everything).
func (f *Filter) Action() string {
	if f == nil {
		return ""
	}
	return f.action
}

// Evaluate decides one request or connection. A nil Filter allows everything,
// like a listener without an RBAC filter; nil attributes are empty ones.
func (f *Filter) Evaluate(a *Attributes) Decision {
	if f == nil || f.action == "" {
		return Decision{Allowed: true}
	}
	if a == nil {
		a = &Attributes{}
	}
	name, matched := f.match(a)
	d := Decision{Policy: name, Action: f.action}
	switch f.action {
	case ActionAllow:
		d.Allowed = matched
	case ActionDeny:
		d.Allowed = !matched
	default: // LOG
		d.Allowed = true
	}
	return d
}

// match returns the first policy, in name order, that matches a.
func (f *Filter) match(a *Attributes) (string, bool) {
	for _, p := range f.policies {
		if anyMatch(p.permissions, a) && anyMatch(p.principals, a) {
			return p.name, true
		}
	}
	return "", false
}

// EvaluateChain runs filters in order, as consecutive RBAC filters of one
// listener: the first denial is the result; when all allow, the last
// filter's decision is (no filters: allowed).
func EvaluateChain(a *Attributes, filters ...*Filter) Decision {
	d := Decision{Allowed: true}
	for _, f := range filters {
		d = f.Evaluate(a)
		if !d.Allowed {
			return d
		}
	}
	return d
}

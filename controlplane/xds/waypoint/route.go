package waypoint

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambientmesh/ambient-operator/controlplane/xds/translate"
)

// FaultFilterName is the HTTP fault filter; routes carry their faults as its per-route
// config.
const FaultFilterName = "envoy.filters.http.fault"

// routeRule is one rule of an HTTPRoute or GRPCRoute in a common form: GRPCRoute matches
// become path matches and its filters are the HTTPRoute filters of the same name.
type routeRule struct {
	route    routeRef
	index    int
	matches  []routeMatch
	filters  []gatewayv1.HTTPRouteFilter
	backends []gatewayv1.HTTPBackendRef
	timeouts *gatewayv1.HTTPRouteTimeouts
	retry    *gatewayv1.HTTPRouteRetry
}

// routeRef identifies the route a rule comes from, for ordering and naming.
type routeRef struct {
	namespace, name string
	created         metav1.Time
	fault           *faultSpec
}

// pathClass orders path matches: exact, then regular expression, then prefix.
type pathClass int

const (
	pathExact pathClass = iota
	pathRegex
	pathPrefix
)

// routeMatch is one match with what Gateway API precedence compares.
type routeMatch struct {
	match   *routev3.RouteMatch
	class   pathClass
	path    string // the path value (for a prefix: without its trailing slash, "/" for all)
	method  bool
	headers int
	queries int
}

// compiledRoute is a route translated as far as it can be without the cluster: its rules,
// and what it uses that the waypoint does not support (then it is not Accepted and not
// programmed).
type compiledRoute struct {
	rules       []routeRule
	unsupported []string
}

// newCompiledRoute starts a route's translation with its reference; a fault annotation the
// waypoint cannot read makes the route unsupported.
func newCompiledRoute(meta *metav1.ObjectMeta) (compiledRoute, routeRef) {
	var out compiledRoute
	ref := routeRef{namespace: meta.Namespace, name: meta.Name, created: meta.CreationTimestamp}
	fault, err := parseFaultAnnotations(meta.Annotations)
	if err != nil {
		out.unsupported = append(out.unsupported, err.Error())
	}
	ref.fault = fault
	return out, ref
}

// addRule keeps a normalized rule with what it uses that the waypoint does not support.
// Its Envoy routes are built and validated only while the route has no other problem.
func (c *compiledRoute) addRule(field string, rr routeRule, sessionPersistence bool) {
	c.unsupported = append(c.unsupported, ruleProblems(field, &rr)...)
	if sessionPersistence {
		c.unsupported = append(c.unsupported, field+".sessionPersistence is not supported")
	}
	if len(c.unsupported) == 0 {
		c.unsupported = envoyProblems(field, &rr)
	}
	c.rules = append(c.rules, rr)
}

// compileHTTPRoute normalizes an HTTPRoute.
func compileHTTPRoute(r *gatewayv1.HTTPRoute) compiledRoute {
	out, ref := newCompiledRoute(&r.ObjectMeta)
	for i := range r.Spec.Rules {
		rule := &r.Spec.Rules[i]
		rr := routeRule{route: ref, index: i, filters: rule.Filters, backends: rule.BackendRefs, timeouts: rule.Timeouts, retry: rule.Retry}
		field := fmt.Sprintf("spec.rules[%d]", i)
		matches := rule.Matches
		if len(matches) == 0 {
			matches = []gatewayv1.HTTPRouteMatch{{}}
		}
		for j := range matches {
			m, problems := httpMatch(&matches[j])
			for _, p := range problems {
				out.unsupported = append(out.unsupported, fmt.Sprintf("%s.matches[%d]: %s", field, j, p))
			}
			rr.matches = append(rr.matches, m)
		}
		out.addRule(field, rr, rule.SessionPersistence != nil)
	}
	return out
}

// compileGRPCRoute normalizes a GRPCRoute: a method match is a path match on
// /<service>/<method>.
func compileGRPCRoute(r *gatewayv1.GRPCRoute) compiledRoute {
	out, ref := newCompiledRoute(&r.ObjectMeta)
	for i := range r.Spec.Rules {
		rule := &r.Spec.Rules[i]
		field := fmt.Sprintf("spec.rules[%d]", i)
		rr := routeRule{route: ref, index: i}
		for _, f := range rule.Filters {
			rr.filters = append(rr.filters, grpcFilter(f))
		}
		for _, b := range rule.BackendRefs {
			hb := gatewayv1.HTTPBackendRef{BackendRef: b.BackendRef}
			for _, f := range b.Filters {
				hb.Filters = append(hb.Filters, grpcFilter(f))
			}
			rr.backends = append(rr.backends, hb)
		}
		matches := rule.Matches
		if len(matches) == 0 {
			matches = []gatewayv1.GRPCRouteMatch{{}}
		}
		for j := range matches {
			rr.matches = append(rr.matches, grpcMatch(&matches[j]))
		}
		out.addRule(field, rr, rule.SessionPersistence != nil)
	}
	return out
}

func grpcFilter(f gatewayv1.GRPCRouteFilter) gatewayv1.HTTPRouteFilter {
	return gatewayv1.HTTPRouteFilter{
		Type:                   gatewayv1.HTTPRouteFilterType(f.Type),
		RequestHeaderModifier:  f.RequestHeaderModifier,
		ResponseHeaderModifier: f.ResponseHeaderModifier,
		RequestMirror:          f.RequestMirror,
		ExtensionRef:           f.ExtensionRef,
	}
}

// ruleProblems lists the filters of a rule the waypoint cannot apply.
func ruleProblems(field string, r *routeRule) []string {
	var out []string
	for i, f := range r.filters {
		switch f.Type {
		case gatewayv1.HTTPRouteFilterRequestHeaderModifier, gatewayv1.HTTPRouteFilterResponseHeaderModifier,
			gatewayv1.HTTPRouteFilterRequestRedirect, gatewayv1.HTTPRouteFilterRequestMirror:
		case gatewayv1.HTTPRouteFilterURLRewrite:
			if p := f.URLRewrite.Path; p != nil && p.Type == gatewayv1.PrefixMatchHTTPPathModifier {
				for _, m := range r.matches {
					if m.class != pathPrefix {
						out = append(out, fmt.Sprintf("%s.filters[%d]: ReplacePrefixMatch needs PathPrefix matches", field, i))
						break
					}
				}
			}
		default:
			out = append(out, fmt.Sprintf("%s.filters[%d]: filter type %s is not supported", field, i, f.Type))
		}
		if f.Type == gatewayv1.HTTPRouteFilterRequestRedirect && f.RequestRedirect.Path != nil &&
			f.RequestRedirect.Path.Type == gatewayv1.PrefixMatchHTTPPathModifier {
			for _, m := range r.matches {
				if m.class != pathPrefix {
					out = append(out, fmt.Sprintf("%s.filters[%d]: ReplacePrefixMatch needs PathPrefix matches", field, i))
					break
				}
			}
		}
	}
	for i, b := range r.backends {
		for j, f := range b.Filters {
			if f.Type != gatewayv1.HTTPRouteFilterRequestHeaderModifier && f.Type != gatewayv1.HTTPRouteFilterResponseHeaderModifier {
				out = append(out, fmt.Sprintf("%s.backendRefs[%d].filters[%d]: filter type %s is not supported on a backend", field, i, j, f.Type))
			}
		}
	}
	for _, d := range []*gatewayv1.Duration{timeoutOf(r.timeouts, true), timeoutOf(r.timeouts, false), backoffOf(r.retry)} {
		if d != nil {
			if _, err := time.ParseDuration(string(*d)); err != nil {
				out = append(out, fmt.Sprintf("%s: duration %q: %v", field, *d, err))
			}
		}
	}
	return out
}

func timeoutOf(t *gatewayv1.HTTPRouteTimeouts, request bool) *gatewayv1.Duration {
	if t == nil {
		return nil
	}
	if request {
		return t.Request
	}
	return t.BackendRequest
}

func backoffOf(r *gatewayv1.HTTPRouteRetry) *gatewayv1.Duration {
	if r == nil {
		return nil
	}
	return r.Backoff
}

// httpMatch translates one HTTPRouteMatch. Gateway API path prefixes match whole path
// segments, which is Envoy's path_separated_prefix (it takes no trailing slash).
func httpMatch(m *gatewayv1.HTTPRouteMatch) (routeMatch, []string) {
	var problems []string
	out := routeMatch{match: &routev3.RouteMatch{}}
	kind, value := gatewayv1.PathMatchPathPrefix, "/"
	if m.Path != nil {
		if m.Path.Type != nil {
			kind = *m.Path.Type
		}
		if m.Path.Value != nil {
			value = *m.Path.Value
		}
	}
	switch kind {
	case gatewayv1.PathMatchExact:
		out.class, out.path = pathExact, value
		out.match.PathSpecifier = &routev3.RouteMatch_Path{Path: value}
	case gatewayv1.PathMatchRegularExpression:
		out.class, out.path = pathRegex, value
		out.match.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: value}}
		problems = append(problems, regexProblem(value)...)
	default:
		out.class, out.path = pathPrefix, strings.TrimRight(value, "/")
		if out.path == "" {
			out.path = "/"
			out.match.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: "/"}
		} else {
			out.match.PathSpecifier = &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: out.path}
		}
	}
	seen := map[string]bool{}
	for _, h := range m.Headers {
		name := strings.ToLower(string(h.Name))
		if seen[name] { // Gateway API: only the first match of a name counts
			continue
		}
		seen[name] = true
		regex := h.Type != nil && *h.Type == gatewayv1.HeaderMatchRegularExpression
		if regex {
			problems = append(problems, regexProblem(h.Value)...)
		}
		out.match.Headers = append(out.match.Headers, headerMatcher(name, h.Value, regex))
	}
	seen = map[string]bool{}
	for _, q := range m.QueryParams {
		if seen[string(q.Name)] {
			continue
		}
		seen[string(q.Name)] = true
		sm := exact(q.Value)
		if q.Type != nil && *q.Type == gatewayv1.QueryParamMatchRegularExpression {
			sm = regexMatcher(q.Value)
			problems = append(problems, regexProblem(q.Value)...)
		}
		out.match.QueryParameters = append(out.match.QueryParameters, &routev3.QueryParameterMatcher{
			Name:                         string(q.Name),
			QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: sm},
		})
	}
	if m.Method != nil {
		out.method = true
		out.match.Headers = append(out.match.Headers, exactHeader(":method", string(*m.Method)))
	}
	out.headers, out.queries = len(out.match.Headers), len(out.match.QueryParameters)
	if out.method {
		out.headers-- // the method is its own precedence step
	}
	return out, problems
}

// regexProblem: Envoy's regular expressions are RE2, as Go's are.
func regexProblem(re string) []string {
	if _, err := regexp.Compile(re); err != nil {
		return []string{fmt.Sprintf("regular expression %q: %v", re, err)}
	}
	return nil
}

func headerMatcher(name, value string, regex bool) *routev3.HeaderMatcher {
	sm := exact(value)
	if regex {
		sm = regexMatcher(value)
	}
	return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: sm}}
}

// grpcMatch: service and method → exact path /S/M; service only → prefix /S/; method
// only → /<any service>/M; regular expressions → one path regex.
func grpcMatch(m *gatewayv1.GRPCRouteMatch) routeMatch {
	out := routeMatch{match: &routev3.RouteMatch{}, class: pathPrefix, path: "/"}
	out.match.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: "/"}
	if mm := m.Method; mm != nil {
		service, method := deref(mm.Service), deref(mm.Method)
		regex := mm.Type != nil && *mm.Type == gatewayv1.GRPCMethodMatchRegularExpression
		switch {
		case regex:
			out.class = pathRegex
			out.path = "/" + orDefault(service, "[^/]+") + "/" + orDefault(method, "[^/]+")
			out.match.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: out.path}}
		case service != "" && method != "":
			out.class, out.path = pathExact, "/"+service+"/"+method
			out.match.PathSpecifier = &routev3.RouteMatch_Path{Path: out.path}
		case service != "":
			out.path = "/" + service + "/"
			out.match.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: out.path}
		case method != "":
			out.class = pathRegex
			out.path = "/[^/]+/" + regexp.QuoteMeta(method)
			out.match.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: out.path}}
		}
	}
	seen := map[string]bool{}
	for _, h := range m.Headers {
		name := strings.ToLower(string(h.Name))
		if seen[name] {
			continue
		}
		seen[name] = true
		out.match.Headers = append(out.match.Headers, headerMatcher(name, h.Value, h.Type != nil && *h.Type == gatewayv1.GRPCHeaderMatchRegularExpression))
	}
	out.headers = len(out.match.Headers)
	return out
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// routeEntry is one Envoy route with the keys that order it.
type routeEntry struct {
	rule  *routeRule
	match routeMatch
	index int // of the match in its rule
}

// less is Gateway API precedence: exact paths, then regular expressions, then the longest
// prefix; then a method match; then the most header matches; then the most query
// matches; then the oldest route, its namespace/name, and the order within the route.
func (a routeEntry) less(b routeEntry) bool {
	ma, mb := a.match, b.match
	switch {
	case ma.class != mb.class:
		return ma.class < mb.class
	case ma.class != pathRegex && len(ma.path) != len(mb.path):
		return len(ma.path) > len(mb.path)
	case ma.method != mb.method:
		return ma.method
	case ma.headers != mb.headers:
		return ma.headers > mb.headers
	case ma.queries != mb.queries:
		return ma.queries > mb.queries
	}
	ra, rb := a.rule.route, b.rule.route
	if !ra.created.Equal(&rb.created) {
		return ra.created.Before(&rb.created)
	}
	if ka, kb := ra.namespace+"/"+ra.name, rb.namespace+"/"+rb.name; ka != kb {
		return ka < kb
	}
	if a.rule.index != b.rule.index {
		return a.rule.index < b.rule.index
	}
	return a.index < b.index
}

// routeBuilder resolves backends while it builds routes, and remembers which clusters
// they need. Without a State it resolves every backend to a placeholder: compile uses
// that to validate a route's Envoy form before it is attached anywhere.
type routeBuilder struct {
	mesh     Mesh
	st       *State
	clusters map[string]backend
}

// placeholderCluster stands for every backend while a route is validated.
const placeholderCluster = "outbound|1||validation.invalid"

// resolve names the cluster of a backendRef, and records the cluster to build.
func (b *routeBuilder) resolve(namespace string, ref gatewayv1.BackendObjectReference) (string, bool) {
	if b.st == nil {
		return placeholderCluster, true
	}
	be, problem := resolveBackend(b.mesh, b.st, namespace, ref)
	if problem != nil {
		return "", false
	}
	b.clusters[be.name] = be
	return be.name, true
}

// envoyProblems builds a rule's Envoy routes with placeholder backends and reports what
// fails Envoy's validation (control characters in a header value, say), so that a route
// the schema let through is refused alone instead of failing its waypoint's whole set.
func envoyProblems(field string, r *routeRule) (out []string) {
	defer func() {
		if p := recover(); p != nil {
			pe, ok := p.(packError)
			if !ok {
				panic(p)
			}
			out = append(out, fmt.Sprintf("%s: %v", field, pe.err))
		}
	}()
	b := &routeBuilder{}
	for i := range r.matches {
		if err := b.buildRoute(routeEntry{rule: r, match: r.matches[i], index: i}).ValidateAll(); err != nil {
			out = append(out, fmt.Sprintf("%s.matches[%d]: %v", field, i, err))
		}
	}
	return out
}

// buildRouteConfig is the RouteConfiguration of one HTTP Service port: the accepted rules
// attached to it in precedence order, or a default route to the Service itself.
func (b *routeBuilder) buildRouteConfig(name string, svc *corev1.Service, sp corev1.ServicePort, rules []*routeRule) *routev3.RouteConfiguration {
	vh := &routev3.VirtualHost{Name: name, Domains: []string{"*"}}
	var entries []routeEntry
	for _, r := range rules {
		for i := range r.matches {
			entries = append(entries, routeEntry{rule: r, match: r.matches[i], index: i})
		}
	}
	sort.SliceStable(entries, func(i, j int) bool { return entries[i].less(entries[j]) })
	for _, e := range entries {
		vh.Routes = append(vh.Routes, b.buildRoute(e))
	}
	if len(rules) == 0 {
		own := serviceBackend(b.mesh, svc, sp)
		b.clusters[own.name] = own
		vh.Routes = []*routev3.Route{defaultRoute(own.name)}
	}
	return &routev3.RouteConfiguration{Name: name, VirtualHosts: []*routev3.VirtualHost{vh}}
}

// defaultRoute sends every request to cluster, with no timeout (Envoy's default is 15s).
func defaultRoute(cluster string) *routev3.Route {
	return &routev3.Route{
		Name:  "default",
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster},
			Timeout:          durationpb.New(0),
		}},
	}
}

func (b *routeBuilder) buildRoute(e routeEntry) *routev3.Route {
	r := e.rule
	out := &routev3.Route{
		Name:  fmt.Sprintf("%s/%s/%d/%d", r.route.namespace, r.route.name, r.index, e.index),
		Match: e.match.match,
	}
	var rewrite *gatewayv1.HTTPURLRewriteFilter
	var mirrors []*gatewayv1.HTTPRequestMirrorFilter
	for _, f := range r.filters {
		switch f.Type {
		case gatewayv1.HTTPRouteFilterRequestHeaderModifier:
			out.RequestHeadersToAdd, out.RequestHeadersToRemove = headerOps(f.RequestHeaderModifier)
		case gatewayv1.HTTPRouteFilterResponseHeaderModifier:
			out.ResponseHeadersToAdd, out.ResponseHeadersToRemove = headerOps(f.ResponseHeaderModifier)
		case gatewayv1.HTTPRouteFilterRequestRedirect:
			out.Action = &routev3.Route_Redirect{Redirect: redirect(f.RequestRedirect, e.match)}
		case gatewayv1.HTTPRouteFilterURLRewrite:
			rewrite = f.URLRewrite
		case gatewayv1.HTTPRouteFilterRequestMirror:
			mirrors = append(mirrors, f.RequestMirror)
		}
	}
	if fault := r.route.fault; fault != nil {
		out.TypedPerFilterConfig = map[string]*anypb.Any{FaultFilterName: mustAny(fault.config())}
	}
	if out.Action != nil {
		return out
	}
	action := b.routeAction(r)
	if action == nil {
		// No backend to forward to: Gateway API answers 500.
		out.Action = &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 500}}
		return out
	}
	applyRewrite(action, rewrite, e.match)
	for _, m := range mirrors {
		if mp := b.mirrorPolicy(r.route.namespace, m); mp != nil {
			action.RequestMirrorPolicies = append(action.RequestMirrorPolicies, mp)
		}
	}
	out.Action = &routev3.Route_Route{Route: action}
	return out
}

// routeAction forwards to the rule's backends; nil when it has none with weight. A
// backend that does not resolve keeps its share of traffic, which gets 500 (Gateway
// API): it names a cluster that does not exist, and a missing cluster answers 500.
func (b *routeBuilder) routeAction(r *routeRule) *routev3.RouteAction {
	var weighted []*routev3.WeightedCluster_ClusterWeight
	resolved := 0
	for _, ref := range r.backends {
		weight := int32(1)
		if ref.Weight != nil {
			weight = *ref.Weight
		}
		if weight == 0 {
			continue
		}
		cw := &routev3.WeightedCluster_ClusterWeight{Weight: wrapperspb.UInt32(uint32(weight))}
		if name, ok := b.resolve(r.route.namespace, ref.BackendObjectReference); ok {
			cw.Name = name
			resolved++
		} else {
			cw.Name = unresolvedCluster(r.route.namespace, ref.BackendObjectReference)
		}
		for _, f := range ref.Filters {
			switch f.Type {
			case gatewayv1.HTTPRouteFilterRequestHeaderModifier:
				cw.RequestHeadersToAdd, cw.RequestHeadersToRemove = headerOps(f.RequestHeaderModifier)
			case gatewayv1.HTTPRouteFilterResponseHeaderModifier:
				cw.ResponseHeadersToAdd, cw.ResponseHeadersToRemove = headerOps(f.ResponseHeaderModifier)
			}
		}
		weighted = append(weighted, cw)
	}
	if resolved == 0 {
		return nil
	}
	action := &routev3.RouteAction{
		ClusterNotFoundResponseCode: routev3.RouteAction_INTERNAL_SERVER_ERROR,
		Timeout:                     durationpb.New(0),
	}
	if len(weighted) == 1 && !hasHeaderOps(weighted[0]) {
		action.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: weighted[0].Name}
	} else {
		action.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{Clusters: weighted}}
	}
	if d := timeoutOf(r.timeouts, true); d != nil {
		action.Timeout = duration(*d)
	}
	action.RetryPolicy = retryPolicy(r.retry, timeoutOf(r.timeouts, false))
	return action
}

func hasHeaderOps(cw *routev3.WeightedCluster_ClusterWeight) bool {
	return len(cw.RequestHeadersToAdd)+len(cw.RequestHeadersToRemove)+len(cw.ResponseHeadersToAdd)+len(cw.ResponseHeadersToRemove) > 0
}

// unresolvedCluster names the cluster of a backend that does not resolve; no such
// cluster is ever built.
func unresolvedCluster(namespace string, ref gatewayv1.BackendObjectReference) string {
	ns := namespace
	if ref.Namespace != nil {
		ns = string(*ref.Namespace)
	}
	port := int32(0)
	if ref.Port != nil {
		port = *ref.Port
	}
	return fmt.Sprintf("unresolved|%d||%s/%s", port, ns, ref.Name)
}

// retryPolicy: HTTPRoute retry (attempts, codes, backoff) retries connection failures and
// resets, plus the listed status codes. backendRequest is the time per attempt, so it is
// set even without retries (then with no retry).
func retryPolicy(r *gatewayv1.HTTPRouteRetry, perTry *gatewayv1.Duration) *routev3.RetryPolicy {
	if r == nil && perTry == nil {
		return nil
	}
	rp := &routev3.RetryPolicy{NumRetries: wrapperspb.UInt32(0)}
	if r != nil {
		rp.RetryOn = "connect-failure,refused-stream,reset"
		rp.NumRetries = wrapperspb.UInt32(1)
		if r.Attempts != nil {
			rp.NumRetries = wrapperspb.UInt32(uint32(max(*r.Attempts, 0)))
		}
		if len(r.Codes) > 0 {
			rp.RetryOn += ",retriable-status-codes"
			for _, c := range r.Codes {
				rp.RetriableStatusCodes = append(rp.RetriableStatusCodes, uint32(c))
			}
		}
		if r.Backoff != nil {
			rp.RetryBackOff = &routev3.RetryPolicy_RetryBackOff{BaseInterval: duration(*r.Backoff)}
		}
	}
	if perTry != nil {
		rp.PerTryTimeout = duration(*perTry)
	}
	return rp
}

// duration of a Gateway API duration (GEP-2257 is a subset of Go's syntax); ruleProblems
// already refused the ones that do not parse.
func duration(d gatewayv1.Duration) *durationpb.Duration {
	v, _ := time.ParseDuration(string(d))
	return durationpb.New(v)
}

func (b *routeBuilder) mirrorPolicy(namespace string, m *gatewayv1.HTTPRequestMirrorFilter) *routev3.RouteAction_RequestMirrorPolicy {
	name, ok := b.resolve(namespace, m.BackendRef)
	if !ok {
		return nil
	}
	mp := &routev3.RouteAction_RequestMirrorPolicy{Cluster: name}
	switch {
	case m.Percent != nil:
		mp.RuntimeFraction = &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{
			Numerator: uint32(*m.Percent), Denominator: typev3.FractionalPercent_HUNDRED,
		}}
	case m.Fraction != nil:
		denominator := int32(100)
		if m.Fraction.Denominator != nil {
			denominator = *m.Fraction.Denominator
		}
		mp.RuntimeFraction = &corev3.RuntimeFractionalPercent{DefaultValue: fraction(m.Fraction.Numerator, denominator)}
	}
	return mp
}

// fraction converts numerator/denominator to Envoy's fixed denominators, in millionths
// unless it is exactly a percentage.
func fraction(numerator, denominator int32) *typev3.FractionalPercent {
	if denominator <= 0 {
		return &typev3.FractionalPercent{Numerator: 0, Denominator: typev3.FractionalPercent_HUNDRED}
	}
	if denominator == 100 {
		return &typev3.FractionalPercent{Numerator: uint32(numerator), Denominator: typev3.FractionalPercent_HUNDRED}
	}
	return &typev3.FractionalPercent{
		Numerator:   uint32(int64(numerator) * 1_000_000 / int64(denominator)),
		Denominator: typev3.FractionalPercent_MILLION,
	}
}

// headerOps: set overwrites, add appends, remove removes.
func headerOps(f *gatewayv1.HTTPHeaderFilter) ([]*corev3.HeaderValueOption, []string) {
	if f == nil {
		return nil, nil
	}
	var add []*corev3.HeaderValueOption
	for _, h := range f.Set {
		add = append(add, &corev3.HeaderValueOption{
			Header:       &corev3.HeaderValue{Key: strings.ToLower(string(h.Name)), Value: h.Value},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		})
	}
	for _, h := range f.Add {
		add = append(add, &corev3.HeaderValueOption{
			Header:       &corev3.HeaderValue{Key: strings.ToLower(string(h.Name)), Value: h.Value},
			AppendAction: corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD,
		})
	}
	var remove []string
	for _, name := range f.Remove {
		remove = append(remove, strings.ToLower(name))
	}
	return add, remove
}

// redirectCodes are the status codes a RequestRedirect may ask for (302, Found, is the
// default); the CRD admits no other.
var redirectCodes = map[int]routev3.RedirectAction_RedirectResponseCode{
	301: routev3.RedirectAction_MOVED_PERMANENTLY,
	302: routev3.RedirectAction_FOUND,
	303: routev3.RedirectAction_SEE_OTHER,
	307: routev3.RedirectAction_TEMPORARY_REDIRECT,
	308: routev3.RedirectAction_PERMANENT_REDIRECT,
}

// redirect: scheme, host, port, path and status code. Without a port, a scheme change
// goes to that scheme's well-known port (Gateway API).
func redirect(f *gatewayv1.HTTPRequestRedirectFilter, m routeMatch) *routev3.RedirectAction {
	out := &routev3.RedirectAction{ResponseCode: routev3.RedirectAction_FOUND}
	if f.StatusCode != nil {
		if code, ok := redirectCodes[*f.StatusCode]; ok {
			out.ResponseCode = code
		}
	}
	if f.Scheme != nil {
		out.SchemeRewriteSpecifier = &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: *f.Scheme}
	}
	if f.Hostname != nil {
		out.HostRedirect = string(*f.Hostname)
	}
	switch {
	case f.Port != nil:
		out.PortRedirect = uint32(*f.Port)
	case f.Scheme != nil && *f.Scheme == "https":
		out.PortRedirect = 443
	case f.Scheme != nil && *f.Scheme == "http":
		out.PortRedirect = 80
	}
	if p := f.Path; p != nil {
		switch p.Type {
		case gatewayv1.FullPathHTTPPathModifier:
			out.PathRewriteSpecifier = &routev3.RedirectAction_PathRedirect{PathRedirect: deref(p.ReplaceFullPath)}
		case gatewayv1.PrefixMatchHTTPPathModifier:
			prefix, regex := prefixReplacement(m.path, deref(p.ReplacePrefixMatch))
			if regex != nil {
				out.PathRewriteSpecifier = &routev3.RedirectAction_RegexRewrite{RegexRewrite: regex}
			} else {
				out.PathRewriteSpecifier = &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: prefix}
			}
		}
	}
	return out
}

// applyRewrite applies a URLRewrite: the Host (host_rewrite_literal) and the path.
func applyRewrite(a *routev3.RouteAction, f *gatewayv1.HTTPURLRewriteFilter, m routeMatch) {
	if f == nil {
		return
	}
	if f.Hostname != nil {
		a.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: string(*f.Hostname)}
	}
	if p := f.Path; p != nil {
		switch p.Type {
		case gatewayv1.FullPathHTTPPathModifier:
			a.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{
				Pattern:      &matcherv3.RegexMatcher{Regex: "^.*$"},
				Substitution: deref(p.ReplaceFullPath),
			}
		case gatewayv1.PrefixMatchHTTPPathModifier:
			prefix, regex := prefixReplacement(m.path, deref(p.ReplacePrefixMatch))
			if regex != nil {
				a.RegexRewrite = regex
			} else {
				a.PrefixRewrite = prefix
			}
		}
	}
}

// prefixReplacement replaces a matched path prefix (segment-wise, without trailing
// slash) with replacement, following the Gateway API table: /foo + /xyz turns /foo/bar
// into /xyz/bar, and an empty or "/" replacement turns /foo/bar into /bar, which a plain
// prefix rewrite would make //bar: that case is a regex rewrite.
func prefixReplacement(matched, replacement string) (string, *matcherv3.RegexMatchAndSubstitute) {
	replacement = strings.TrimRight(replacement, "/")
	if matched == "/" {
		return replacement + "/", nil
	}
	if replacement == "" {
		return "", &matcherv3.RegexMatchAndSubstitute{
			Pattern:      &matcherv3.RegexMatcher{Regex: "^" + regexp.QuoteMeta(matched) + "/*"},
			Substitution: "/",
		}
	}
	return replacement, nil
}

// backendProblem is why a backendRef does not resolve, with the Gateway API reason.
type backendProblem struct {
	reason  gatewayv1.RouteConditionReason
	message string
}

// resolveBackend finds the Service port a backendRef names. Only Services of the route's
// own namespace resolve: ReferenceGrants are not read, so a reference to another
// namespace is not permitted.
func resolveBackend(mesh Mesh, st *State, namespace string, ref gatewayv1.BackendObjectReference) (backend, *backendProblem) {
	if (ref.Group != nil && *ref.Group != "") || (ref.Kind != nil && *ref.Kind != "Service") {
		return backend{}, &backendProblem{gatewayv1.RouteReasonInvalidKind, fmt.Sprintf("backend %s: only Services (group \"\", kind Service) are supported", ref.Name)}
	}
	if ref.Namespace != nil && string(*ref.Namespace) != namespace {
		return backend{}, &backendProblem{gatewayv1.RouteReasonRefNotPermitted,
			fmt.Sprintf("backend %s/%s: Services in other namespaces are not supported (ReferenceGrants are not read)", *ref.Namespace, ref.Name)}
	}
	svc := st.service(namespace, string(ref.Name))
	if svc == nil {
		return backend{}, &backendProblem{gatewayv1.RouteReasonBackendNotFound, fmt.Sprintf("Service %s/%s does not exist", namespace, ref.Name)}
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName || len(svc.Spec.Selector) == 0 {
		return backend{}, &backendProblem{gatewayv1.RouteReasonBackendNotFound,
			fmt.Sprintf("Service %s/%s has no selector (ExternalName and selector-less Services are not supported)", namespace, ref.Name)}
	}
	if ref.Port == nil {
		return backend{}, &backendProblem{gatewayv1.RouteReasonBackendNotFound, fmt.Sprintf("backend %s: port is required", ref.Name)}
	}
	for _, sp := range svc.Spec.Ports {
		if sp.Port == *ref.Port && translate.IsTCP(sp.Protocol) {
			return serviceBackend(mesh, svc, sp), nil
		}
	}
	return backend{}, &backendProblem{gatewayv1.RouteReasonBackendNotFound, fmt.Sprintf("Service %s/%s has no TCP port %d", namespace, ref.Name, *ref.Port)}
}

package route

import (
	"cmp"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/ambientmesh/ambient-operator/internal/ascii"
)

// Table is a compiled RouteConfiguration. It is immutable and safe for
// concurrent use.
type Table struct {
	name        string
	exactHosts  map[string]*virtualHost
	suffixHosts []wildcardHost // "*.foo.com" as ".foo.com", longest first
	prefixHosts []wildcardHost // "foo.*" as "foo.", longest first
	anyHost     *virtualHost   // "*"
	ignorePort  bool
}

type virtualHost struct {
	routes []*Route
}

type wildcardHost struct {
	affix string
	vh    *virtualHost
}

// Name is the RouteConfiguration's name.
func (t *Table) Name() string { return t.name }

// Match picks the virtual host for the request's Host and returns the first
// of its routes that accepts the request, or nil (the caller answers 404).
func (t *Table) Match(r *http.Request) *Route {
	vh := t.virtualHostFor(requestHost(r))
	if vh == nil {
		return nil
	}
	req := newRequestView(r)
	for _, rt := range vh.routes {
		if rt.match.matches(req) {
			return rt
		}
	}
	return nil
}

// virtualHostFor follows Envoy's domain search: exact, longest suffix
// wildcard, longest prefix wildcard, then "*"; a host with a port that
// matches none of the first three is tried again without its port.
func (t *Table) virtualHostFor(host string) *virtualHost {
	host = ascii.ToLower(host)
	if t.ignorePort {
		host, _ = splitHostPort(host)
	}
	if vh := t.specificHost(host); vh != nil {
		return vh
	}
	if hostOnly, port := splitHostPort(host); port != "" {
		if vh := t.specificHost(hostOnly); vh != nil {
			return vh
		}
	}
	return t.anyHost
}

func (t *Table) specificHost(host string) *virtualHost {
	if vh, ok := t.exactHosts[host]; ok {
		return vh
	}
	// A wildcard must stand for at least one character.
	for _, w := range t.suffixHosts {
		if len(host) > len(w.affix) && strings.HasSuffix(host, w.affix) {
			return w.vh
		}
	}
	for _, w := range t.prefixHosts {
		if len(host) > len(w.affix) && strings.HasPrefix(host, w.affix) {
			return w.vh
		}
	}
	return nil
}

// defaultMaxDirectResponseBody is Envoy's limit on a direct response body.
const defaultMaxDirectResponseBody = 4096

// Compile validates rc and compiles it. It fails, naming the virtual host,
// route and field, on anything invalid or unsupported.
func Compile(rc *routev3.RouteConfiguration) (*Table, error) {
	if rc == nil {
		return nil, errors.New("route configuration is missing")
	}
	if err := rc.ValidateAll(); err != nil {
		return nil, fmt.Errorf("route configuration %q: %w", rc.GetName(), err)
	}
	t, err := compileTable(rc)
	if err != nil {
		return nil, fmt.Errorf("route configuration %q: %w", rc.GetName(), err)
	}
	return t, nil
}

// level is what a route inherits from an enclosing level (virtual host or
// route configuration).
type level struct {
	requestHeaders, responseHeaders *headerStep // nil: none at this level
	fault                           *Fault
	hasFault                        bool // a fault config is present, maybe disabling
	mirrors                         []Mirror
}

func compileLevel(reqAdd []*corev3.HeaderValueOption, reqRemove []string,
	respAdd []*corev3.HeaderValueOption, respRemove []string,
	perFilter map[string]*anypb.Any, mirrors []*routev3.RouteAction_RequestMirrorPolicy,
) (level, error) {
	var l level
	var err error
	if l.requestHeaders, err = compileHeaderStep(reqAdd, reqRemove); err != nil {
		return l, fmt.Errorf("request_%w", err)
	}
	if l.responseHeaders, err = compileHeaderStep(respAdd, respRemove); err != nil {
		return l, fmt.Errorf("response_%w", err)
	}
	if cfg, ok := perFilter[FaultFilterName]; ok {
		if l.fault, err = compileFault(cfg); err != nil {
			return l, err
		}
		l.hasFault = true
	}
	if l.mirrors, err = compileMirrors(mirrors); err != nil {
		return l, err
	}
	return l, nil
}

type compiler struct {
	global           level
	mostSpecificWins bool
	maxBody          uint32
}

func compileTable(rc *routev3.RouteConfiguration) (*Table, error) {
	if err := checkFields(rc, "", routeConfigurationFields); err != nil {
		return nil, err
	}
	global, err := compileLevel(rc.GetRequestHeadersToAdd(), rc.GetRequestHeadersToRemove(),
		rc.GetResponseHeadersToAdd(), rc.GetResponseHeadersToRemove(),
		rc.GetTypedPerFilterConfig(), rc.GetRequestMirrorPolicies())
	if err != nil {
		return nil, err
	}
	c := &compiler{
		global:           global,
		mostSpecificWins: rc.GetMostSpecificHeaderMutationsWins(),
		maxBody:          defaultMaxDirectResponseBody,
	}
	if limit := rc.GetMaxDirectResponseBodySizeBytes(); limit != nil {
		c.maxBody = limit.GetValue()
	}
	t := &Table{
		name:       rc.GetName(),
		exactHosts: make(map[string]*virtualHost),
		ignorePort: rc.GetIgnorePortInHostMatching(),
	}
	seen := make(map[string]string) // domain -> virtual host name
	for i, vhc := range rc.GetVirtualHosts() {
		where := fmt.Sprintf("virtual host %q", vhc.GetName())
		vh, err := c.virtualHost(vhc)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		for _, domain := range vhc.GetDomains() {
			domain = ascii.ToLower(domain)
			if other, dup := seen[domain]; dup {
				return nil, fmt.Errorf("%s (#%d): domain %q is also in virtual host %q", where, i, domain, other)
			}
			seen[domain] = vhc.GetName()
			switch {
			case domain == "*":
				t.anyHost = vh
			case strings.HasPrefix(domain, "*"):
				t.suffixHosts = append(t.suffixHosts, wildcardHost{affix: domain[1:], vh: vh})
			case strings.HasSuffix(domain, "*"):
				t.prefixHosts = append(t.prefixHosts, wildcardHost{affix: domain[:len(domain)-1], vh: vh})
			default:
				t.exactHosts[domain] = vh
			}
		}
	}
	longestFirst := func(a, b wildcardHost) int { return cmp.Compare(len(b.affix), len(a.affix)) }
	slices.SortStableFunc(t.suffixHosts, longestFirst)
	slices.SortStableFunc(t.prefixHosts, longestFirst)
	return t, nil
}

func (c *compiler) virtualHost(vhc *routev3.VirtualHost) (*virtualHost, error) {
	if err := checkFields(vhc, "", virtualHostFields); err != nil {
		return nil, err
	}
	local, err := compileLevel(vhc.GetRequestHeadersToAdd(), vhc.GetRequestHeadersToRemove(),
		vhc.GetResponseHeadersToAdd(), vhc.GetResponseHeadersToRemove(),
		vhc.GetTypedPerFilterConfig(), vhc.GetRequestMirrorPolicies())
	if err != nil {
		return nil, err
	}
	var retry *RetryPolicy
	if rp := vhc.GetRetryPolicy(); rp != nil {
		if retry, err = compileRetryPolicy(rp); err != nil {
			return nil, err
		}
	}
	vh := &virtualHost{}
	for i, r := range vhc.GetRoutes() {
		rt, err := c.route(vhc.GetName(), r, local, retry)
		if err != nil {
			where := fmt.Sprintf("route #%d", i)
			if r.GetName() != "" {
				where = fmt.Sprintf("route %q", r.GetName())
			}
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		vh.routes = append(vh.routes, rt)
	}
	return vh, nil
}

func (c *compiler) route(vhostName string, r *routev3.Route, vhost level, vhostRetry *RetryPolicy) (*Route, error) {
	if err := checkFields(r, "", routeFields); err != nil {
		return nil, err
	}
	match, err := compileRouteMatch(r.GetMatch())
	if err != nil {
		return nil, err
	}
	own, err := compileLevel(r.GetRequestHeadersToAdd(), r.GetRequestHeadersToRemove(),
		r.GetResponseHeadersToAdd(), r.GetResponseHeadersToRemove(),
		r.GetTypedPerFilterConfig(), nil)
	if err != nil {
		return nil, err
	}
	// Envoy evaluates header operations from the most specific level to the
	// least, or the other way round with most_specific_header_mutations_wins.
	levels := []level{own, vhost, c.global}
	evaluationOrder := levels
	if c.mostSpecificWins {
		evaluationOrder = []level{c.global, vhost, own}
	}
	rt := &Route{
		Name:        r.GetName(),
		VirtualHost: vhostName,
		match:       match,
		RequestHeaders: headerOpsOf(evaluationOrder[0].requestHeaders,
			evaluationOrder[1].requestHeaders, evaluationOrder[2].requestHeaders),
		ResponseHeaders: headerOpsOf(evaluationOrder[0].responseHeaders,
			evaluationOrder[1].responseHeaders, evaluationOrder[2].responseHeaders),
	}
	// The most specific fault configuration wins, even when it disables.
	for _, l := range levels {
		if l.hasFault {
			rt.Fault = l.fault
			break
		}
	}
	switch action := r.GetAction().(type) {
	case *routev3.Route_Route:
		rt.Forward, err = c.forward(action.Route, match.path.rewriteLen(), vhost, vhostRetry)
	case *routev3.Route_Redirect:
		rt.Redirect, err = compileRedirect(action.Redirect, match.path.rewriteLen())
	case *routev3.Route_DirectResponse:
		rt.Direct, err = c.directResponse(action.DirectResponse)
	default:
		err = fmt.Errorf("action %T is not supported (route, redirect, direct_response)", action)
	}
	if err != nil {
		return nil, err
	}
	return rt, nil
}

func (c *compiler) forward(ra *routev3.RouteAction, rewriteLen int, vhost level, vhostRetry *RetryPolicy) (*Forward, error) {
	if err := checkFields(ra, "route", routeActionFields); err != nil {
		return nil, err
	}
	f := &Forward{Timeout: DefaultTimeout, HostRewrite: ra.GetHostRewriteLiteral(), ClusterNotFoundStatus: clusterNotFoundCodes[ra.GetClusterNotFoundResponseCode()]}
	switch spec := ra.GetClusterSpecifier().(type) {
	case *routev3.RouteAction_Cluster:
		f.Clusters = []WeightedCluster{{Name: spec.Cluster, Weight: 1}}
	case *routev3.RouteAction_WeightedClusters:
		if err := checkFields(spec.WeightedClusters, "route.weighted_clusters", weightedClusterFields); err != nil {
			return nil, err
		}
		for i, cw := range spec.WeightedClusters.GetClusters() {
			wc, err := compileClusterWeight(cw)
			if err != nil {
				return nil, fmt.Errorf("route.weighted_clusters.clusters[%d]: %w", i, err)
			}
			f.Clusters = append(f.Clusters, wc)
		}
	default:
		return nil, fmt.Errorf("route: cluster specifier %T is not supported (cluster, weighted_clusters)", spec)
	}
	for _, wc := range f.Clusters {
		f.totalWeight += uint64(wc.Weight)
	}
	if len(f.Clusters) == 0 || f.totalWeight == 0 {
		return nil, errors.New("route.weighted_clusters: the weights add up to 0")
	}
	if ra.GetTimeout() != nil {
		var err error
		if f.Timeout, err = duration(ra.GetTimeout(), "route.timeout"); err != nil {
			return nil, err
		}
	}
	f.Retry = vhostRetry
	if rp := ra.GetRetryPolicy(); rp != nil {
		var err error
		if f.Retry, err = compileRetryPolicy(rp); err != nil {
			return nil, fmt.Errorf("route.%w", err)
		}
	}
	mirrors, err := compileMirrors(ra.GetRequestMirrorPolicies())
	if err != nil {
		return nil, fmt.Errorf("route.%w", err)
	}
	// The most specific non-empty list of mirror policies wins.
	for _, m := range [][]Mirror{mirrors, vhost.mirrors, c.global.mirrors} {
		if len(m) > 0 {
			f.Mirrors = m
			break
		}
	}
	if f.rewrite, err = compilePathRewrite(ra.GetPrefixRewrite(), ra.GetRegexRewrite(), rewriteLen); err != nil {
		return nil, fmt.Errorf("route.%w", err)
	}
	return f, nil
}

func compileClusterWeight(cw *routev3.WeightedCluster_ClusterWeight) (WeightedCluster, error) {
	wc := WeightedCluster{Name: cw.GetName(), Weight: cw.GetWeight().GetValue(), HostRewrite: cw.GetHostRewriteLiteral()}
	if err := checkFields(cw, "", clusterWeightFields); err != nil {
		return wc, err
	}
	if wc.Name == "" {
		return wc, errors.New("name is empty")
	}
	request, err := compileHeaderStep(cw.GetRequestHeadersToAdd(), cw.GetRequestHeadersToRemove())
	if err != nil {
		return wc, fmt.Errorf("request_%w", err)
	}
	response, err := compileHeaderStep(cw.GetResponseHeadersToAdd(), cw.GetResponseHeadersToRemove())
	if err != nil {
		return wc, fmt.Errorf("response_%w", err)
	}
	wc.RequestHeaders, wc.ResponseHeaders = headerOpsOf(request), headerOpsOf(response)
	return wc, nil
}

func compileMirrors(policies []*routev3.RouteAction_RequestMirrorPolicy) ([]Mirror, error) {
	var mirrors []Mirror
	for i, mp := range policies {
		where := fmt.Sprintf("request_mirror_policies[%d]", i)
		if err := checkFields(mp, where, mirrorPolicyFields); err != nil {
			return nil, err
		}
		if mp.GetCluster() == "" {
			return nil, fmt.Errorf("%s: cluster is empty", where)
		}
		m := Mirror{
			Cluster:                 mp.GetCluster(),
			PerMillion:              perMillion,
			HostRewrite:             mp.GetHostRewriteLiteral(),
			DisableShadowHostSuffix: mp.GetDisableShadowHostSuffixAppend(),
		}
		if rf := mp.GetRuntimeFraction(); rf != nil {
			m.PerMillion = fractionPerMillion(rf.GetDefaultValue())
		}
		mirrors = append(mirrors, m)
	}
	return mirrors, nil
}

// clusterNotFoundCodes maps cluster_not_found_response_code to the status answered when
// the chosen cluster does not exist (the control plane points unresolved backends at a
// cluster it never sends, so their share of traffic fails visibly).
var clusterNotFoundCodes = map[routev3.RouteAction_ClusterNotFoundResponseCode]int{
	routev3.RouteAction_SERVICE_UNAVAILABLE:   503,
	routev3.RouteAction_NOT_FOUND:             404,
	routev3.RouteAction_INTERNAL_SERVER_ERROR: 500,
}

var redirectCodes = map[routev3.RedirectAction_RedirectResponseCode]int{
	routev3.RedirectAction_MOVED_PERMANENTLY:  http.StatusMovedPermanently,
	routev3.RedirectAction_FOUND:              http.StatusFound,
	routev3.RedirectAction_SEE_OTHER:          http.StatusSeeOther,
	routev3.RedirectAction_TEMPORARY_REDIRECT: http.StatusTemporaryRedirect,
	routev3.RedirectAction_PERMANENT_REDIRECT: http.StatusPermanentRedirect,
}

func compileRedirect(ra *routev3.RedirectAction, rewriteLen int) (*Redirect, error) {
	if err := checkFields(ra, "redirect", redirectFields); err != nil {
		return nil, err
	}
	rd := &Redirect{
		host:       ra.GetHostRedirect(),
		port:       ra.GetPortRedirect(),
		stripQuery: ra.GetStripQuery(),
		status:     redirectCodes[ra.GetResponseCode()],
	}
	if rd.status == 0 {
		return nil, fmt.Errorf("redirect.response_code %v is not supported", ra.GetResponseCode())
	}
	if ra.GetHttpsRedirect() {
		rd.scheme = "https"
	} else if s := ra.GetSchemeRedirect(); s != "" {
		rd.scheme = ascii.ToLower(s)
	}
	switch spec := ra.GetPathRewriteSpecifier().(type) {
	case *routev3.RedirectAction_PathRedirect:
		rd.path = spec.PathRedirect
		rd.pathHasQuery = strings.Contains(rd.path, "?")
	case *routev3.RedirectAction_PrefixRewrite, *routev3.RedirectAction_RegexRewrite:
		var err error
		if rd.rewrite, err = compilePathRewrite(ra.GetPrefixRewrite(), ra.GetRegexRewrite(), rewriteLen); err != nil {
			return nil, fmt.Errorf("redirect.%w", err)
		}
	}
	return rd, nil
}

func (c *compiler) directResponse(dr *routev3.DirectResponseAction) (*DirectResponse, error) {
	if err := checkFields(dr, "direct_response", directResponseFields); err != nil {
		return nil, err
	}
	d := &DirectResponse{Status: int(dr.GetStatus())}
	switch body := dr.GetBody().GetSpecifier().(type) {
	case nil:
	case *corev3.DataSource_InlineString:
		d.Body = []byte(body.InlineString)
	case *corev3.DataSource_InlineBytes:
		d.Body = body.InlineBytes
	default:
		return nil, fmt.Errorf("direct_response.body: %T is not supported (inline_string, inline_bytes)", body)
	}
	if uint64(len(d.Body)) > uint64(c.maxBody) {
		return nil, fmt.Errorf("direct_response.body: %d bytes exceed max_direct_response_body_size_bytes %d", len(d.Body), c.maxBody)
	}
	return d, nil
}

// duration converts an optional proto duration (nil: 0), refusing negative
// ones.
func duration(d *durationpb.Duration, field string) (time.Duration, error) {
	if d == nil {
		return 0, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, fmt.Errorf("%s: %w", field, err)
	}
	v := d.AsDuration()
	if v < 0 {
		return 0, fmt.Errorf("%s: %v is negative", field, v)
	}
	return v, nil
}

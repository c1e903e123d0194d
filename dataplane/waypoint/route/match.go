package route

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/ambientmesh/ambient-operator/internal/ascii"
)

// routeMatch is a compiled RouteMatch: every part must accept the request.
type routeMatch struct {
	path    pathMatcher
	grpc    bool
	headers []headerMatcher
	query   []queryMatcher
}

func (m *routeMatch) matches(req *requestView) bool {
	if !m.path.matches(req.path) {
		return false
	}
	if m.grpc && !isGRPC(req.r.Header.Get("Content-Type")) {
		return false
	}
	for i := range m.headers {
		if !m.headers[i].matches(req) {
			return false
		}
	}
	for i := range m.query {
		if !m.query[i].matches(req) {
			return false
		}
	}
	return true
}

type pathKind uint8

const (
	pathPrefix pathKind = iota
	pathExact
	pathRegex
	pathSeparatedPrefix
)

type pathMatcher struct {
	kind          pathKind
	value         string
	caseSensitive bool
	regex         *regexp.Regexp // for pathRegex, anchored at both ends
}

// matches looks at the path without its query string.
func (m *pathMatcher) matches(path string) bool {
	switch m.kind {
	case pathExact:
		if m.caseSensitive {
			return path == m.value
		}
		return ascii.EqualFold(path, m.value)
	case pathRegex:
		return m.regex.MatchString(path)
	case pathSeparatedPrefix:
		if !m.hasPrefix(path) {
			return false
		}
		return len(path) == len(m.value) || path[len(m.value)] == '/'
	default:
		return m.hasPrefix(path)
	}
}

func (m *pathMatcher) hasPrefix(path string) bool {
	if m.caseSensitive {
		return strings.HasPrefix(path, m.value)
	}
	return ascii.HasPrefixFold(path, m.value)
}

// rewriteLen is how much of a matched path prefix_rewrite replaces: the
// prefix for the prefix kinds, all of it (-1) otherwise.
func (m *pathMatcher) rewriteLen() int {
	if m.kind == pathPrefix || m.kind == pathSeparatedPrefix {
		return len(m.value)
	}
	return -1
}

func compileRouteMatch(rm *routev3.RouteMatch) (routeMatch, error) {
	var m routeMatch
	if err := checkFields(rm, "match", routeMatchFields); err != nil {
		return m, err
	}
	m.path.caseSensitive = rm.GetCaseSensitive() == nil || rm.GetCaseSensitive().GetValue()
	switch ps := rm.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		m.path.kind, m.path.value = pathPrefix, ps.Prefix
	case *routev3.RouteMatch_Path:
		m.path.kind, m.path.value = pathExact, ps.Path
	case *routev3.RouteMatch_PathSeparatedPrefix:
		m.path.kind, m.path.value = pathSeparatedPrefix, ps.PathSeparatedPrefix
	case *routev3.RouteMatch_SafeRegex:
		re, err := compileFullMatch(ps.SafeRegex.GetRegex())
		if err != nil {
			return m, fmt.Errorf("match.safe_regex: %w", err)
		}
		m.path.kind, m.path.regex = pathRegex, re
	default:
		return m, errors.New("match: no supported path specifier (prefix, path, safe_regex, path_separated_prefix)")
	}
	m.grpc = rm.GetGrpc() != nil
	for i, hm := range rm.GetHeaders() {
		h, err := compileHeaderMatcher(hm)
		if err != nil {
			return m, fmt.Errorf("match.headers[%d]: %w", i, err)
		}
		m.headers = append(m.headers, h)
	}
	for i, qm := range rm.GetQueryParameters() {
		q := queryMatcher{name: qm.GetName()}
		if sm := qm.GetStringMatch(); sm != nil {
			s, err := compileStringMatcher(sm)
			if err != nil {
				return m, fmt.Errorf("match.query_parameters[%d]: %w", i, err)
			}
			q.value = &s
		}
		m.query = append(m.query, q)
	}
	return m, nil
}

// isGRPC is Envoy's test for a gRPC request: content-type application/grpc,
// alone or followed by "+" (application/grpc+proto) or ";" (parameters).
func isGRPC(contentType string) bool {
	const grpc = "application/grpc"
	if !strings.HasPrefix(contentType, grpc) {
		return false
	}
	rest := contentType[len(grpc):]
	return rest == "" || rest[0] == '+' || rest[0] == ';'
}

// headerMatcher is a compiled HeaderMatcher.
type headerMatcher struct {
	name           string // lower-case; pseudo headers keep their ':'
	key            string // canonical key of a regular header
	value          func(string) bool
	present        bool // for a presence match (value == nil): the presence wanted
	invert         bool
	missingAsEmpty bool
}

func (m *headerMatcher) matches(req *requestView) bool {
	v, ok := req.header(m.name, m.key)
	if m.value == nil {
		return (ok == m.present) != m.invert
	}
	if !ok {
		if !m.missingAsEmpty {
			return false
		}
		v = ""
	}
	return m.value(v) != m.invert
}

func compileHeaderMatcher(hm *routev3.HeaderMatcher) (headerMatcher, error) {
	name := strings.ToLower(hm.GetName())
	m := headerMatcher{
		name:           name,
		key:            http.CanonicalHeaderKey(name),
		invert:         hm.GetInvertMatch(),
		missingAsEmpty: hm.GetTreatMissingHeaderAsEmpty(),
	}
	var sm *matcherv3.StringMatcher
	switch spec := hm.GetHeaderMatchSpecifier().(type) {
	case nil:
		// Without a specifier Envoy matches on presence.
		m.present = true
		return m, nil
	case *routev3.HeaderMatcher_PresentMatch:
		m.present = spec.PresentMatch
		return m, nil
	case *routev3.HeaderMatcher_RangeMatch:
		start, end := spec.RangeMatch.GetStart(), spec.RangeMatch.GetEnd()
		m.value = func(v string) bool {
			n, err := strconv.ParseInt(v, 10, 64)
			return err == nil && n >= start && n < end
		}
		return m, nil
	case *routev3.HeaderMatcher_StringMatch:
		sm = spec.StringMatch
	case *routev3.HeaderMatcher_ExactMatch:
		sm = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: spec.ExactMatch}}
	case *routev3.HeaderMatcher_PrefixMatch:
		sm = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: spec.PrefixMatch}}
	case *routev3.HeaderMatcher_SuffixMatch:
		sm = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: spec.SuffixMatch}}
	case *routev3.HeaderMatcher_ContainsMatch:
		sm = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: spec.ContainsMatch}}
	case *routev3.HeaderMatcher_SafeRegexMatch:
		sm = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: spec.SafeRegexMatch}}
	default:
		return m, fmt.Errorf("header %q: unsupported match kind %T", name, spec)
	}
	s, err := compileStringMatcher(sm)
	if err != nil {
		return m, fmt.Errorf("header %q: %w", name, err)
	}
	m.value = s.matches
	return m, nil
}

// queryMatcher is a compiled QueryParameterMatcher. Like Envoy it looks at the
// first value of the parameter, and a parameter that is absent never matches
// (present_match: false included).
type queryMatcher struct {
	name  string
	value *stringMatcher // nil: presence is enough
}

func (m *queryMatcher) matches(req *requestView) bool {
	v, ok := req.queryParam(m.name)
	if !ok {
		return false
	}
	return m.value == nil || m.value.matches(v)
}

type stringKind uint8

const (
	stringExact stringKind = iota
	stringPrefix
	stringSuffix
	stringContains
	stringRegex
)

// stringMatcher is a compiled StringMatcher. ignore_case folds ASCII only, as
// Envoy does, and does not apply to regular expressions.
type stringMatcher struct {
	kind       stringKind
	value      string // lower-cased when ignoreCase
	ignoreCase bool
	regex      *regexp.Regexp
}

func compileStringMatcher(sm *matcherv3.StringMatcher) (stringMatcher, error) {
	m := stringMatcher{ignoreCase: sm.GetIgnoreCase()}
	switch p := sm.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		m.kind, m.value = stringExact, p.Exact
	case *matcherv3.StringMatcher_Prefix:
		m.kind, m.value = stringPrefix, p.Prefix
	case *matcherv3.StringMatcher_Suffix:
		m.kind, m.value = stringSuffix, p.Suffix
	case *matcherv3.StringMatcher_Contains:
		m.kind, m.value = stringContains, p.Contains
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := compileFullMatch(p.SafeRegex.GetRegex())
		if err != nil {
			return m, fmt.Errorf("safe_regex: %w", err)
		}
		m.kind, m.regex, m.ignoreCase = stringRegex, re, false
	default:
		return m, fmt.Errorf("unsupported string match kind %T", p)
	}
	if m.ignoreCase {
		m.value = ascii.ToLower(m.value)
	}
	return m, nil
}

func (m *stringMatcher) matches(s string) bool {
	if m.kind == stringRegex {
		return m.regex.MatchString(s)
	}
	if m.ignoreCase {
		s = ascii.ToLower(s)
	}
	switch m.kind {
	case stringPrefix:
		return strings.HasPrefix(s, m.value)
	case stringSuffix:
		return strings.HasSuffix(s, m.value)
	case stringContains:
		return strings.Contains(s, m.value)
	default:
		return s == m.value
	}
}

// compileFullMatch compiles an RE2 pattern that must match a whole string, as
// Envoy's safe_regex matchers do. The pattern is checked on its own first so
// that wrapping it cannot turn an invalid pattern into a valid one.
func compileFullMatch(pattern string) (*regexp.Regexp, error) {
	if _, err := regexp.Compile(pattern); err != nil {
		return nil, err
	}
	return regexp.Compile(`\A(?:` + pattern + `)\z`)
}

// requestView is what matching reads from one request, worked out once.
type requestView struct {
	r     *http.Request
	path  string // escaped path, without the query
	query map[string]string
}

func newRequestView(r *http.Request) *requestView {
	return &requestView{r: r, path: requestPath(r)}
}

// header returns a header's value the way Envoy sees it: pseudo headers from
// the request line, repeated headers joined with ",".
func (v *requestView) header(name, key string) (string, bool) {
	switch name {
	case ":method":
		return v.r.Method, true
	case ":authority", "host":
		host := requestHost(v.r)
		return host, host != ""
	case ":path":
		return requestURI(v.r), true
	case ":scheme":
		return requestScheme(v.r), true
	}
	values := v.r.Header[key]
	switch len(values) {
	case 0:
		return "", false
	case 1:
		return values[0], true
	default:
		return strings.Join(values, ","), true
	}
}

// queryParam returns the first value of a query parameter, as sent.
func (v *requestView) queryParam(name string) (string, bool) {
	if v.query == nil {
		v.query = firstQueryValues(requestRawQuery(v.r))
	}
	value, ok := v.query[name]
	return value, ok
}

func firstQueryValues(rawQuery string) map[string]string {
	values := make(map[string]string)
	for part := range strings.SplitSeq(rawQuery, "&") {
		if part == "" {
			continue
		}
		key, value, _ := strings.Cut(part, "=")
		if _, seen := values[key]; !seen {
			values[key] = value
		}
	}
	return values
}

func requestPath(r *http.Request) string {
	if r.URL == nil {
		return "/"
	}
	if p := r.URL.EscapedPath(); p != "" {
		return p
	}
	return "/"
}

func requestRawQuery(r *http.Request) string {
	if r.URL == nil {
		return ""
	}
	return r.URL.RawQuery
}

func requestURI(r *http.Request) string {
	if q := requestRawQuery(r); q != "" {
		return requestPath(r) + "?" + q
	}
	return requestPath(r)
}

func requestHost(r *http.Request) string {
	if r.Host != "" {
		return r.Host
	}
	if r.URL != nil {
		return r.URL.Host
	}
	return ""
}

// requestScheme is the scheme the client used: from an absolute request URL
// when it had one, else from the connection.
func requestScheme(r *http.Request) string {
	if r.URL != nil && r.URL.Scheme != "" {
		return ascii.ToLower(r.URL.Scheme)
	}
	if r.TLS != nil {
		return "https"
	}
	return "http"
}

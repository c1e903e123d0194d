package jwt

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// routeMatch is the compiled subset of an Envoy RouteMatch that selects a requirement rule.
type routeMatch struct {
	path    func(string) bool
	headers []headerMatch
}

func (m *routeMatch) matches(r *http.Request) bool {
	if !m.path(requestPath(r)) {
		return false
	}
	for _, h := range m.headers {
		if !h.matches(r) {
			return false
		}
	}
	return true
}

// requestPath is what Envoy calls the :path header without its query string: the path as the
// client sent it, still percent-encoded. Normalizing it is the connection manager's job, done once
// before any filter, so that these rules and the router see the same path.
func requestPath(r *http.Request) string {
	return r.URL.EscapedPath()
}

func compileRouteMatch(m *routev3.RouteMatch) (*routeMatch, error) {
	switch {
	case m.GetRuntimeFraction() != nil:
		return nil, fmt.Errorf("match.runtime_fraction is not supported")
	case len(m.GetQueryParameters()) > 0:
		return nil, fmt.Errorf("match.query_parameters is not supported")
	case len(m.GetCookies()) > 0:
		return nil, fmt.Errorf("match.cookies is not supported")
	case m.GetGrpc() != nil:
		return nil, fmt.Errorf("match.grpc is not supported")
	case m.GetTlsContext() != nil:
		return nil, fmt.Errorf("match.tls_context is not supported")
	case len(m.GetDynamicMetadata()) > 0:
		return nil, fmt.Errorf("match.dynamic_metadata is not supported")
	case len(m.GetFilterState()) > 0:
		return nil, fmt.Errorf("match.filter_state is not supported")
	}
	caseSensitive := m.GetCaseSensitive() == nil || m.GetCaseSensitive().GetValue()
	equal := func(a, b string) bool { return a == b }
	hasPrefix := strings.HasPrefix
	if !caseSensitive {
		equal = strings.EqualFold
		hasPrefix = hasPrefixFold
	}

	compiled := &routeMatch{}
	switch spec := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		prefix := spec.Prefix
		compiled.path = func(p string) bool { return hasPrefix(p, prefix) }
	case *routev3.RouteMatch_Path:
		path := spec.Path
		compiled.path = func(p string) bool { return equal(p, path) }
	case *routev3.RouteMatch_PathSeparatedPrefix:
		prefix := spec.PathSeparatedPrefix
		compiled.path = func(p string) bool {
			return hasPrefix(p, prefix) && (len(p) == len(prefix) || p[len(prefix)] == '/')
		}
	case *routev3.RouteMatch_SafeRegex:
		re, err := compileFullRegex(spec.SafeRegex.GetRegex())
		if err != nil {
			return nil, fmt.Errorf("match.safe_regex: %w", err)
		}
		compiled.path = re.MatchString
	default:
		return nil, fmt.Errorf("match: only prefix, path, path_separated_prefix and safe_regex are supported")
	}

	for i, h := range m.GetHeaders() {
		hm, err := compileHeaderMatch(h)
		if err != nil {
			return nil, fmt.Errorf("match.headers[%d]: %w", i, err)
		}
		compiled.headers = append(compiled.headers, hm)
	}
	return compiled, nil
}

// headerMatch is a compiled Envoy HeaderMatcher.
type headerMatch struct {
	name           string
	present        *bool // present_match; nil for value matchers
	value          func(string) bool
	invert         bool
	missingIsEmpty bool
}

func (h headerMatch) matches(r *http.Request) bool {
	values, found := headerValues(r, h.name)
	if h.present != nil {
		return (found == *h.present) != h.invert
	}
	if !found && !h.missingIsEmpty {
		// Envoy ignores an absent header's rule, inverted or not: it does not match.
		return false
	}
	// Envoy matches several values of one header as their comma-joined list.
	return h.value(strings.Join(values, ",")) != h.invert
}

// headerValues reads a header as Envoy sees it, the HTTP/2 pseudo-headers included.
func headerValues(r *http.Request, name string) ([]string, bool) {
	switch strings.ToLower(name) {
	case ":method":
		return []string{r.Method}, true
	case ":authority":
		return []string{r.Host}, true
	case ":path":
		return []string{r.URL.RequestURI()}, true
	case ":scheme":
		if r.TLS != nil {
			return []string{"https"}, true
		}
		return []string{"http"}, true
	}
	values, found := r.Header[http.CanonicalHeaderKey(name)]
	return values, found
}

func compileHeaderMatch(h *routev3.HeaderMatcher) (headerMatch, error) {
	hm := headerMatch{name: h.GetName(), invert: h.GetInvertMatch(), missingIsEmpty: h.GetTreatMissingHeaderAsEmpty()}
	switch spec := h.GetHeaderMatchSpecifier().(type) {
	case *routev3.HeaderMatcher_PresentMatch:
		present := spec.PresentMatch
		hm.present = &present
	case *routev3.HeaderMatcher_StringMatch:
		match, err := compileStringMatch(spec.StringMatch)
		if err != nil {
			return hm, err
		}
		hm.value = match
	case *routev3.HeaderMatcher_ExactMatch:
		want := spec.ExactMatch
		hm.value = func(v string) bool { return v == want }
	case *routev3.HeaderMatcher_PrefixMatch:
		want := spec.PrefixMatch
		hm.value = func(v string) bool { return strings.HasPrefix(v, want) }
	case *routev3.HeaderMatcher_SuffixMatch:
		want := spec.SuffixMatch
		hm.value = func(v string) bool { return strings.HasSuffix(v, want) }
	case *routev3.HeaderMatcher_ContainsMatch:
		want := spec.ContainsMatch
		hm.value = func(v string) bool { return strings.Contains(v, want) }
	case *routev3.HeaderMatcher_SafeRegexMatch:
		re, err := compileFullRegex(spec.SafeRegexMatch.GetRegex())
		if err != nil {
			return hm, err
		}
		hm.value = re.MatchString
	case nil:
		// A matcher without a specifier only asks that the header be present.
		present := true
		hm.present = &present
	default:
		return hm, fmt.Errorf("only string_match, exact/prefix/suffix/contains/safe_regex_match and present_match are supported")
	}
	return hm, nil
}

// compileStringMatch compiles an Envoy StringMatcher into a predicate.
func compileStringMatch(m *matcherv3.StringMatcher) (func(string) bool, error) {
	fold := m.GetIgnoreCase()
	switch spec := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		want := spec.Exact
		if fold {
			return func(v string) bool { return strings.EqualFold(v, want) }, nil
		}
		return func(v string) bool { return v == want }, nil
	case *matcherv3.StringMatcher_Prefix:
		want := spec.Prefix
		if fold {
			return func(v string) bool { return hasPrefixFold(v, want) }, nil
		}
		return func(v string) bool { return strings.HasPrefix(v, want) }, nil
	case *matcherv3.StringMatcher_Suffix:
		want := spec.Suffix
		if fold {
			return func(v string) bool {
				return len(v) >= len(want) && strings.EqualFold(v[len(v)-len(want):], want)
			}, nil
		}
		return func(v string) bool { return strings.HasSuffix(v, want) }, nil
	case *matcherv3.StringMatcher_Contains:
		want := spec.Contains
		if fold {
			want = strings.ToLower(want)
			return func(v string) bool { return strings.Contains(strings.ToLower(v), want) }, nil
		}
		return func(v string) bool { return strings.Contains(v, want) }, nil
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := compileFullRegex(spec.SafeRegex.GetRegex())
		if err != nil {
			return nil, err
		}
		return re.MatchString, nil
	default:
		return nil, fmt.Errorf("string matcher: only exact, prefix, suffix, contains and safe_regex are supported")
	}
}

// compileFullRegex compiles an Envoy safe_regex (RE2 syntax, which Go's regexp implements), which
// must match the whole input, not a part of it.
func compileFullRegex(expr string) (*regexp.Regexp, error) {
	re, err := regexp.Compile(`^(?:` + expr + `)$`)
	if err != nil {
		return nil, fmt.Errorf("regex %q: %w", expr, err)
	}
	return re, nil
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

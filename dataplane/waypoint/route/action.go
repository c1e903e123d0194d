package route

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// Route is one compiled route: exactly one of Forward, Redirect and Direct is
// set. A Route is shared by all requests that match it: treat it as read-only.
type Route struct {
	Name        string
	VirtualHost string // name of the virtual host the route belongs to

	Forward  *Forward
	Redirect *Redirect
	Direct   *DirectResponse

	// Header operations of the route, its virtual host and the route
	// configuration, in evaluation order.
	RequestHeaders, ResponseHeaders HeaderOps

	// Fault is the fault filter's per-route configuration (route, else
	// virtual host, else route configuration); nil when there is none.
	Fault *Fault

	match routeMatch
}

const (
	// DefaultTimeout is Envoy's route timeout when none is configured.
	DefaultTimeout = 15 * time.Second
	// NoTimeout is the Forward.Timeout of a route whose timeout is
	// explicitly 0: the request may take as long as it takes.
	NoTimeout time.Duration = 0
)

// Forward is a `route` action: send the request to one of Clusters.
type Forward struct {
	// Clusters has one entry of weight 1 for `cluster`, the entries of
	// `weighted_clusters` otherwise (some may have weight 0).
	Clusters []WeightedCluster
	// Timeout bounds the whole request including retries: DefaultTimeout
	// when unset, NoTimeout when explicitly 0.
	Timeout time.Duration
	// Retry is nil when the request must not be retried.
	Retry *RetryPolicy
	// Mirrors are the request_mirror_policies of the route, else of its
	// virtual host, else of the route configuration.
	Mirrors []Mirror
	// HostRewrite replaces the Host header when not empty
	// (host_rewrite_literal).
	HostRewrite string
	// ClusterNotFoundStatus is answered when the chosen cluster does not
	// exist (cluster_not_found_response_code; 503 by default).
	ClusterNotFoundStatus int

	totalWeight uint64
	rewrite     pathRewrite
}

// WeightedCluster is one upstream cluster a Forward may choose.
type WeightedCluster struct {
	Name   string
	Weight uint32
	// Header operations applied before the route's when this cluster is
	// chosen.
	RequestHeaders, ResponseHeaders HeaderOps
	// HostRewrite replaces the Host header when not empty, in preference to
	// the route's.
	HostRewrite string
}

// Mirror is a request_mirror_policy: copy PerMillion of the requests to
// Cluster, fire and forget.
type Mirror struct {
	Cluster    string
	PerMillion uint32
	// HostRewrite replaces the mirrored request's Host when not empty.
	HostRewrite string
	// DisableShadowHostSuffix keeps the Host as it is instead of appending
	// "-shadow" (disable_shadow_host_suffix_append).
	DisableShadowHostSuffix bool
}

// PickCluster chooses a cluster by weight; rnd(n) must return a number in
// [0, n), for example rand.Uint64N.
func (f *Forward) PickCluster(rnd func(n uint64) uint64) *WeightedCluster {
	if len(f.Clusters) == 1 {
		return &f.Clusters[0]
	}
	x := rnd(f.totalWeight)
	for i := range f.Clusters {
		w := uint64(f.Clusters[i].Weight)
		if x < w {
			return &f.Clusters[i]
		}
		x -= w
	}
	// Only reached when rnd broke its promise.
	return &f.Clusters[len(f.Clusters)-1]
}

// ApplyRequest prepares r for the upstream: header operations (wc's first,
// when wc is not nil), then, for a Forward, the Host rewrite and the path
// rewrite, which keeps the query string. It updates r.Header, r.Host and
// r.URL (and r.RequestURI when it was set).
func (rt *Route) ApplyRequest(r *http.Request, wc *WeightedCluster) {
	if r.Header == nil {
		r.Header = make(http.Header)
	}
	if wc != nil {
		wc.RequestHeaders.Apply(r.Header)
	}
	rt.RequestHeaders.Apply(r.Header)
	if rt.Forward == nil {
		return
	}
	host := rt.Forward.HostRewrite
	if wc != nil && wc.HostRewrite != "" {
		host = wc.HostRewrite
	}
	if host != "" {
		r.Host = host
	}
	if r.URL == nil {
		return
	}
	if path, ok := rt.Forward.rewrite.apply(requestPath(r)); ok {
		setEscapedPath(r.URL, path)
		if r.RequestURI != "" {
			r.RequestURI = r.URL.RequestURI()
		}
	}
}

// ApplyResponse applies the response header operations (wc's first, when wc
// is not nil) to h. Direct responses and redirects get them too.
func (rt *Route) ApplyResponse(h http.Header, wc *WeightedCluster) {
	if wc != nil {
		wc.ResponseHeaders.Apply(h)
	}
	rt.ResponseHeaders.Apply(h)
}

func setEscapedPath(u *url.URL, escaped string) {
	if !strings.HasPrefix(escaped, "/") {
		// A request line needs an absolute path; Envoy would send it as is.
		escaped = "/" + escaped
	}
	if p, err := url.PathUnescape(escaped); err == nil {
		u.Path, u.RawPath = p, escaped
	} else {
		u.Path, u.RawPath = escaped, ""
	}
}

// pathRewrite is a compiled prefix_rewrite or regex_rewrite (at most one is
// set).
type pathRewrite struct {
	prefix     string
	matchedLen int // how much of the path prefix replaces; -1: all of it
	regex      *regexp.Regexp
	template   []substitutionPart
}

// apply rewrites an escaped path without query; ok is false when there is
// nothing to rewrite or the rewrite came out empty (Envoy keeps the path).
func (pr *pathRewrite) apply(path string) (newPath string, ok bool) {
	switch {
	case pr.prefix != "":
		rest := ""
		if pr.matchedLen >= 0 && pr.matchedLen < len(path) {
			rest = path[pr.matchedLen:]
		}
		// Rewriting "/api" to "/" must turn "/api/x" into "/x", not "//x".
		if strings.HasSuffix(pr.prefix, "/") && strings.HasPrefix(rest, "/") {
			rest = rest[1:]
		}
		return pr.prefix + rest, true
	case pr.regex != nil:
		newPath = replaceAll(pr.regex, path, pr.template)
		return newPath, newPath != ""
	}
	return "", false
}

func compilePathRewrite(prefix string, regex *matcherv3.RegexMatchAndSubstitute, matchedLen int) (pathRewrite, error) {
	pr := pathRewrite{prefix: prefix, matchedLen: matchedLen}
	if regex == nil {
		return pr, nil
	}
	if prefix != "" {
		return pr, errors.New("prefix_rewrite and regex_rewrite are both set")
	}
	re, err := regexp.Compile(regex.GetPattern().GetRegex())
	if err != nil {
		return pr, fmt.Errorf("regex_rewrite: %w", err)
	}
	template, err := parseSubstitution(regex.GetSubstitution(), re.NumSubexp())
	if err != nil {
		return pr, fmt.Errorf("regex_rewrite: %w", err)
	}
	pr.regex, pr.template = re, template
	return pr, nil
}

// substitutionPart is a literal (group < 0) or a capture group reference.
type substitutionPart struct {
	literal string
	group   int
}

// parseSubstitution reads an RE2 rewrite string: \0 to \9 name capture
// groups, \\ is a backslash, and any other backslash is an error.
func parseSubstitution(s string, groups int) ([]substitutionPart, error) {
	var parts []substitutionPart
	var lit strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			lit.WriteByte(s[i])
			continue
		}
		if i+1 == len(s) {
			return nil, fmt.Errorf("substitution %q ends with a backslash", s)
		}
		i++
		switch c := s[i]; {
		case c == '\\':
			lit.WriteByte('\\')
		case '0' <= c && c <= '9':
			g := int(c - '0')
			if g > groups {
				return nil, fmt.Errorf("substitution %q refers to group %d; the pattern has %d", s, g, groups)
			}
			if lit.Len() > 0 {
				parts = append(parts, substitutionPart{literal: lit.String(), group: -1})
				lit.Reset()
			}
			parts = append(parts, substitutionPart{group: g})
		default:
			return nil, fmt.Errorf("substitution %q has an invalid escape \\%c", s, c)
		}
	}
	if lit.Len() > 0 {
		parts = append(parts, substitutionPart{literal: lit.String(), group: -1})
	}
	return parts, nil
}

// replaceAll replaces every match of re in s with the template, like RE2's
// GlobalReplace.
func replaceAll(re *regexp.Regexp, s string, template []substitutionPart) string {
	matches := re.FindAllStringSubmatchIndex(s, -1)
	if matches == nil {
		return s
	}
	var b strings.Builder
	last := 0
	for _, m := range matches {
		b.WriteString(s[last:m[0]])
		for _, p := range template {
			if p.group < 0 {
				b.WriteString(p.literal)
			} else if start := m[2*p.group]; start >= 0 {
				b.WriteString(s[start:m[2*p.group+1]])
			}
		}
		last = m[1]
	}
	b.WriteString(s[last:])
	return b.String()
}

// DirectResponse is a `direct_response` action: answer Status with Body.
type DirectResponse struct {
	Status int
	Body   []byte
}

// Redirect is a `redirect` action.
type Redirect struct {
	scheme       string // "" keeps the request's
	host         string // "" keeps the request's
	port         uint32 // 0 keeps the request's (see Response)
	path         string // "" keeps the request's, after rewrite
	pathHasQuery bool
	rewrite      pathRewrite
	stripQuery   bool
	status       int
}

// Response returns the redirect's status and Location for req. As in Envoy,
// the request's port is dropped when port_redirect is set, or when the
// scheme changes and the port was the old scheme's default; a path_redirect
// with a query replaces the request's query even with strip_query.
func (rd *Redirect) Response(req *http.Request) (status int, location string) {
	reqScheme := requestScheme(req)
	scheme := rd.scheme
	if scheme == "" {
		scheme = reqScheme
	}
	host := rd.host
	if host == "" {
		host = requestHost(req)
		hostOnly, port := splitHostPort(host)
		defaultPort := (reqScheme == "http" && port == "80") || (reqScheme == "https" && port == "443")
		if rd.port != 0 || (scheme != reqScheme && defaultPort) {
			host = hostOnly
		}
	}
	if rd.port != 0 {
		host += ":" + strconv.FormatUint(uint64(rd.port), 10)
	}
	query := requestRawQuery(req)
	path := requestPath(req)
	switch {
	case rd.path != "" && rd.pathHasQuery:
		path, query = rd.path, ""
	case rd.path != "":
		path = rd.path
	default:
		if p, ok := rd.rewrite.apply(path); ok {
			path = p
		}
	}
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	if query != "" && !rd.stripQuery {
		path += "?" + query
	}
	return rd.status, scheme + "://" + host + path
}

// splitHostPort splits "host:port" or "[v6]:port"; port is "" when there is
// none.
func splitHostPort(hostport string) (host, port string) {
	if strings.HasPrefix(hostport, "[") {
		if end := strings.LastIndex(hostport, "]:"); end >= 0 {
			return hostport[:end+1], hostport[end+2:]
		}
		return hostport, ""
	}
	if i := strings.LastIndexByte(hostport, ':'); i >= 0 && strings.IndexByte(hostport, ':') == i {
		return hostport[:i], hostport[i+1:]
	}
	return hostport, ""
}

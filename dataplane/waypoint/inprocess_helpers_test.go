package waypoint_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"

	wt "github.com/ambientmesh/ambient-operator/dataplane/waypoint/waypointtest"
)

// reviewsRoutes is the name of the reviews listener and of its route configuration.
var reviewsRoutes = fmt.Sprintf("%s:%d", reviews, reviewsVIP.Port())

// echoed is what an echo backend answers: the request as the app saw it.
type echoed struct {
	Backend string      `json:"backend"`
	Method  string      `json:"method"`
	Host    string      `json:"host"`
	URI     string      `json:"uri"`
	Header  http.Header `json:"header"`
}

// echo answers with what it received, as JSON, and sets two response headers that the
// waypoint's response header operations can change.
func echo(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Served-By", name)
		w.Header().Set("X-Upstream-Secret", "leak")
		w.Header().Set("X-Upstream-Version", "upstream")
		w.Header().Set("Content-Type", "application/json")
		// A failed answer reaches the test as a body it cannot decode.
		_ = json.NewEncoder(w).Encode(echoed{Backend: name, Method: r.Method, Host: r.Host, URI: r.URL.RequestURI(), Header: r.Header})
	})
}

// pushReviews configures the reviews listener (with filters before fault and router)
// and its routes, after the clusters and endpoints in upstream.
func pushReviews(t testing.TB, m *wt.Mesh, filters []*hcmv3.HttpFilter, routes []*routev3.Route, upstream ...proto.Message) {
	t.Helper()
	resources := append(upstream, wt.HTTPListener(reviews, reviewsVIP, filters...), wt.RouteConfig(reviewsRoutes, routes...))
	if nacks := m.Push(resources...); len(nacks) > 0 {
		t.Fatalf("NACKed: %v", nacks)
	}
	m.WaitReady()
}

// upstreams is a cluster per backend set: name → its endpoints.
func upstreams(byCluster map[string][]*wt.Backend) []proto.Message {
	var out []proto.Message
	for name, backends := range byCluster {
		out = append(out, wt.Cluster(name), wt.Endpoints(name, backends...))
	}
	return out
}

func route(name string, match *routev3.RouteMatch, action *routev3.RouteAction) *routev3.Route {
	return &routev3.Route{Name: name, Match: match, Action: &routev3.Route_Route{Route: action}}
}

func prefix(p string) *routev3.RouteMatch {
	return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: p}}
}

func toCluster(cluster string) *routev3.RouteAction {
	return &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}
}

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func headerIs(name, value string) *routev3.HeaderMatcher {
	return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact(value)}}
}

// answer is what a client got for one request.
type answer struct {
	status   int
	body     string
	header   http.Header
	duration time.Duration
	// closing: the response said "Connection: close".
	closing bool
	err     error
}

// send sends method path to the reviews VIP with client c; a "Host" entry of header
// sets the request's Host.
func send(c *http.Client, method, path string, header http.Header, body string) answer {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://"+reviewsVIP.String()+path, rd)
	if err != nil {
		return answer{err: err}
	}
	for k, v := range header {
		if http.CanonicalHeaderKey(k) == "Host" {
			req.Host = v[0]
			continue
		}
		req.Header[k] = v
	}
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return answer{err: err, duration: time.Since(start)}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, body: string(b), header: resp.Header, duration: time.Since(start), closing: resp.Close, err: err}
}

// get sends GET path and fails the test when no answer came.
func get(t *testing.T, c *http.Client, path string, header http.Header) answer {
	t.Helper()
	a := send(c, http.MethodGet, path, header, "")
	if a.err != nil {
		t.Fatalf("GET %s: %v", path, a.err)
	}
	return a
}

// echoOf decodes an echo backend's answer.
func echoOf(t *testing.T, a answer) echoed {
	t.Helper()
	var e echoed
	if err := json.Unmarshal([]byte(a.body), &e); err != nil {
		t.Fatalf("answer %d %q is not an echo: %v", a.status, a.body, err)
	}
	return e
}

// metric sums the values of the waypoint's series of metric name whose labels include
// want (counters, and the sample count of histograms).
func metric(t *testing.T, m *wt.Mesh, name string, want map[string]string) float64 {
	t.Helper()
	families, err := m.Waypoint.Metrics().Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	series:
		for _, s := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range s.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue series
				}
			}
			sum += s.GetCounter().GetValue() + float64(s.GetHistogram().GetSampleCount())
		}
	}
	return sum
}

package waypoint_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ambientmesh/ambient-operator/internal/testwait"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/ambientmesh/ambient-operator/dataplane/waypoint"
	"github.com/ambientmesh/ambient-operator/dataplane/waypoint/upstream"
	wt "github.com/ambientmesh/ambient-operator/dataplane/waypoint/waypointtest"
)

// adminGet fetches path from the waypoint's admin endpoint, served over real HTTP.
func adminGet(t *testing.T, srv *httptest.Server, path string) string {
	t.Helper()
	resp, err := http.Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v %s", path, resp.StatusCode, err, b)
	}
	return string(b)
}

func TestAdminShowsConfigClustersAndStats(t *testing.T) {
	m := wt.Start(t, wt.Options{})
	good, sick := m.Backend("reviews-v1", echo("v1")), m.Backend("reviews-sick", echo("sick"))
	eps := wt.Endpoints(wt.ClusterName(reviews, 9080), good, sick)
	eps.Endpoints[0].LbEndpoints[1].HealthStatus = corev3.HealthStatus_UNHEALTHY
	pushReviews(t, m, nil, []*routev3.Route{route("default", prefix("/"), toCluster(wt.ClusterName(reviews, 9080)))},
		wt.Cluster(wt.ClusterName(reviews, 9080)), eps)
	if a := get(t, m.Client(wt.ClientID, netip.Addr{}, false), "/", nil); a.status != http.StatusOK {
		t.Fatalf("got %d %q", a.status, a.body)
	}
	srv := httptest.NewServer(m.Waypoint.AdminHandler())
	defer srv.Close()

	var dump waypoint.ConfigDump
	if err := json.Unmarshal([]byte(adminGet(t, srv, "/config_dump")), &dump); err != nil {
		t.Fatal(err)
	}
	names := func(typeURL string) []string {
		var out []string
		for _, r := range dump.Resources[typeURL] {
			out = append(out, r.Name)
		}
		return out
	}
	for typeURL, want := range map[string]string{
		resourcev3.ListenerType: reviewsRoutes,
		resourcev3.RouteType:    reviewsRoutes,
		resourcev3.ClusterType:  wt.ClusterName(reviews, 9080),
		resourcev3.EndpointType: wt.ClusterName(reviews, 9080),
	} {
		if got := names(typeURL); len(got) != 1 || got[0] != want {
			t.Errorf("/config_dump %s = %q, want [%s]", typeURL, got, want)
		}
	}
	if len(dump.Resources[resourcev3.ListenerType]) == 1 && !strings.Contains(string(dump.Resources[resourcev3.ListenerType][0].Resource), reviewsVIP.Addr().String()) {
		t.Errorf("/config_dump's listener does not show its address: %s", dump.Resources[resourcev3.ListenerType][0].Resource)
	}

	var clusters []upstream.ClusterStatus
	if err := json.Unmarshal([]byte(adminGet(t, srv, "/clusters")), &clusters); err != nil {
		t.Fatal(err)
	}
	health := map[string]string{}
	for _, c := range clusters {
		for _, h := range c.Hosts {
			health[h.Address] = h.Health
		}
	}
	if health[good.App.String()] != "HEALTHY" || health[sick.App.String()] != "UNHEALTHY" || len(health) != 2 {
		t.Errorf("/clusters hosts' health = %v, want %s HEALTHY and %s UNHEALTHY", health, good.App, sick.App)
	}

	stats := adminGet(t, srv, "/stats")
	for _, want := range []string{"ambientmesh_waypoint_fault_aborts_injected_total: 0", "ambientmesh_waypoint_fault_delays_injected_total: 0"} {
		if !strings.Contains(stats, want) {
			t.Errorf("/stats lacks %q:\n%s", want, stats)
		}
	}
	if prom := adminGet(t, srv, "/stats/prometheus"); !strings.Contains(prom, `istio_requests_total{`) {
		t.Errorf("/stats/prometheus lacks istio_requests_total")
	}
	// Go's profiles, for latency work on a running waypoint (docs/benchmarks.md).
	if goroutines := adminGet(t, srv, "/debug/pprof/goroutine?debug=1"); !strings.Contains(goroutines, "goroutine profile:") {
		t.Errorf("/debug/pprof/goroutine is not a goroutine profile:\n%.200s", goroutines)
	}
}

func TestStatsCountRetries(t *testing.T) {
	m := wt.Start(t, wt.Options{})
	b := m.Backend("reviews-v1", flaky("v1"))
	pushReviews(t, m, nil, []*routev3.Route{route("retry", prefix("/"), withRetry(toCluster("v1"), &routev3.RetryPolicy{RetryOn: "5xx"}))}, wt.Cluster("v1"), wt.Endpoints("v1", b))
	client := m.Client(wt.ClientID, netip.Addr{}, false)
	for range 3 {
		get(t, client, "/", nil)
	}
	srv := httptest.NewServer(m.Waypoint.AdminHandler())
	defer srv.Close()
	if stats := adminGet(t, srv, "/stats"); !strings.Contains(stats, `ambientmesh_waypoint_retries_total{cluster="v1"}: 3`) {
		t.Errorf("/stats does not count the 3 retries:\n%s", stats)
	}
}

func TestIstioRequestsTotalNamesBothIdentities(t *testing.T) {
	m, v1, _ := reviewsMesh(t, wt.PrefixRoute("default", "/", "v1"))
	client := m.Client(wt.ClientID, netip.Addr{}, true)
	for range 3 {
		get(t, client, "/", nil)
	}
	want := map[string]string{
		"reporter": "waypoint", "response_code": "200", "request_protocol": "http", "connection_security_policy": "mutual_tls",
		"source_principal": wt.ClientID.String(), "destination_principal": v1.ID.String(),
		"destination_service": reviews, "destination_service_name": "reviews", "destination_service_namespace": "shop",
	}
	if got := metric(t, m, "istio_requests_total", want); got != 3 {
		t.Errorf("istio_requests_total%v = %v, want 3", want, got)
	}
	if got := metric(t, m, "istio_request_duration_milliseconds", map[string]string{"source_principal": wt.ClientID.String()}); got != 3 {
		t.Errorf("istio_request_duration_milliseconds has %v samples, want 3", got)
	}
}

// lockedBuffer is an io.Writer that the waypoint's goroutines may share.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) lines() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Split(strings.TrimSuffix(b.buf.String(), "\n"), "\n")
}

func TestAccessLogLinePerRequest(t *testing.T) {
	log := &lockedBuffer{}
	m := wt.Start(t, wt.Options{AccessLog: log})
	v1 := m.Backend("reviews-v1", echo("v1"))
	pushReviews(t, m, nil, []*routev3.Route{route("default", prefix("/"), toCluster("v1"))}, wt.Cluster("v1"), wt.Endpoints("v1", v1))
	client := m.Client(wt.ClientID, netip.MustParseAddr("127.0.50.7"), false)
	for _, path := range []string{"/a", "/b?x=1"} {
		get(t, client, path, nil)
	}
	testwait.For(t, "two access log lines", 5*time.Second, func() bool { return len(log.lines()) == 2 })
	for i, line := range log.lines() {
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("line %d is not JSON: %v: %s", i, err, line)
		}
		want := map[string]any{
			"source_address": "127.0.50.7", "source_principal": wt.ClientID.String(), "method": "GET",
			"path": []string{"/a", "/b?x=1"}[i], "response_code": 200.0, "upstream_cluster": "v1", "upstream_host": v1.App.String(),
			"route_name": "default", "protocol": "HTTP/1.1",
		}
		for k, v := range want {
			if e[k] != v {
				t.Errorf("line %d: %s = %v, want %v\n%s", i, k, e[k], v, line)
			}
		}
	}
}

var traceParent = regexp.MustCompile(`^00-([0-9a-f]{32})-([0-9a-f]{16})-0[01]$`)

func TestTraceparentStartedOrContinued(t *testing.T) {
	_, client := echoMesh(t, route("default", prefix("/"), toCluster("v1")))

	seen := echoOf(t, get(t, client, "/", nil)).Header.Get("Traceparent")
	if !traceParent.MatchString(seen) || strings.Contains(seen, strings.Repeat("0", 32)) {
		t.Errorf("without a traceparent the backend saw %q, want a new valid one", seen)
	}

	const sent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	seen = echoOf(t, get(t, client, "/", http.Header{"Traceparent": {sent}})).Header.Get("Traceparent")
	parts := traceParent.FindStringSubmatch(seen)
	if parts == nil || parts[1] != "4bf92f3577b34da6a3ce929d0e0e4736" || parts[2] == "00f067aa0ba902b7" || !strings.HasSuffix(seen, "-01") {
		t.Errorf("with traceparent %s the backend saw %q, want the same trace id and sampled flag with the waypoint's span id", sent, seen)
	}
}

// A small body is read before it goes upstream (so that headers and body leave in one
// write); istio_request_bytes still counts it as received from the client.
func TestRequestBytesCountedForAnInlinedBody(t *testing.T) {
	m, client := echoMesh(t, route("default", prefix("/"), toCluster("v1")))
	body := strings.Repeat("x", 1024)
	resp, err := client.Post("http://"+reviewsVIP.String()+"/upload", "text/plain", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST status %d", resp.StatusCode)
	}
	families, err := m.Waypoint.Metrics().Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range families {
		if f.GetName() == "istio_request_bytes" {
			for _, s := range f.GetMetric() {
				sum += s.GetHistogram().GetSampleSum()
			}
		}
	}
	if sum != 1024 {
		t.Fatalf("istio_request_bytes sums to %v, want the 1024 bytes sent", sum)
	}
}

package waypoint_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ambientmesh/ambient-operator/internal/testwait"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	commonfaultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/ambientmesh/ambient-operator/dataplane/waypoint/upstream"
	wt "github.com/ambientmesh/ambient-operator/dataplane/waypoint/waypointtest"
)

// statusAnswer answers with status, naming the backend.
func statusAnswer(name string, status int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Served-By", name)
		w.WriteHeader(status)
		fmt.Fprintf(w, "%s answers %d", name, status)
	})
}

// flaky answers 503 to every other request, starting with the first.
func flaky(name string) http.Handler {
	var n atomic.Int64
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%2 == 1 {
			statusAnswer(name, http.StatusServiceUnavailable).ServeHTTP(w, r)
			return
		}
		echo(name).ServeHTTP(w, r)
	})
}

// slow answers after d (or gives up when the request goes away).
func slow(name string, d time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
		echo(name).ServeHTTP(w, r)
	})
}

// gate holds requests for /hold until released, and reports which backend holds one.
type gate struct {
	held    chan string
	release chan struct{}
}

func newGate() *gate { return &gate{held: make(chan string, 16), release: make(chan struct{})} }

func (g *gate) handler(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			g.held <- name
			select {
			case <-g.release:
			case <-r.Context().Done():
				return
			}
		}
		echo(name).ServeHTTP(w, r)
	})
}

func withRetry(a *routev3.RouteAction, p *routev3.RetryPolicy) *routev3.RouteAction {
	a.RetryPolicy = p
	return a
}

// dump is the admin /clusters answer.
func clustersDump(t *testing.T, m *wt.Mesh) map[string]upstream.ClusterStatus {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Waypoint.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/clusters", nil))
	var list []upstream.ClusterStatus
	if err := json.Unmarshal(rec.Body.Bytes(), &list); err != nil {
		t.Fatalf("/clusters: %v: %s", err, rec.Body)
	}
	out := map[string]upstream.ClusterStatus{}
	for _, c := range list {
		out[c.Name] = c
	}
	return out
}

func TestRetryTurnsFlaky503sInto200s(t *testing.T) {
	m := wt.Start(t, wt.Options{})
	b := m.Backend("reviews-v1", flaky("v1"))
	pushReviews(t, m, nil, []*routev3.Route{
		route("retry", prefix("/"), withRetry(toCluster("v1"), &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(2)})),
	}, upstreams(map[string][]*wt.Backend{"v1": {b}})...)
	client := m.Client(wt.ClientID, netip.Addr{}, false)

	const requests = 20
	for i := range requests {
		if a := get(t, client, fmt.Sprintf("/r/%d", i), nil); a.status != http.StatusOK {
			t.Fatalf("request %d: got %d %q, want 200 (the retry hides the 503)", i, a.status, a.body)
		}
	}
	// Every request met a 503 first and was retried once.
	if got := b.Requests.Load(); got != 2*requests {
		t.Errorf("the backend served %d requests, want %d (each request twice)", got, 2*requests)
	}
	if got := metric(t, m, "ambientmesh_waypoint_retries_total", map[string]string{"cluster": "v1"}); got != requests {
		t.Errorf("ambientmesh_waypoint_retries_total = %v, want %d", got, requests)
	}
}

func TestRetryOnConnectFailureReachesTheOtherEndpoint(t *testing.T) {
	m := wt.Start(t, wt.Options{})
	dead, good := m.Unreachable("reviews-dead"), m.Backend("reviews-v1", echo("v1"))
	pushReviews(t, m, nil, []*routev3.Route{
		route("retry", prefix("/"), withRetry(toCluster("v1"), &routev3.RetryPolicy{RetryOn: "connect-failure", NumRetries: wrapperspb.UInt32(2)})),
	}, wt.Cluster("v1"), wt.Endpoints("v1", dead, good))
	client := m.Client(wt.ClientID, netip.Addr{}, false)

	const requests = 10
	for i := range requests {
		if a := get(t, client, "/", nil); a.status != http.StatusOK || a.header.Get("X-Served-By") != "v1" {
			t.Fatalf("request %d: got %d %q, want 200 from the endpoint that listens", i, a.status, a.body)
		}
	}
	// Round robin sent half of the first tries to the dead endpoint.
	if got := metric(t, m, "ambientmesh_waypoint_retries_total", nil); got < requests/2-1 {
		t.Errorf("retries = %v, want about %d (every try that met the dead endpoint)", got, requests/2)
	}
	if got := good.Requests.Load(); got != requests {
		t.Errorf("the good endpoint served %d requests, want %d", got, requests)
	}
}

func TestRetriesStayWithinTheRetryBudget(t *testing.T) {
	m := wt.Start(t, wt.Options{})
	// Every try fails after a while, so the first tries of all requests fail at about the
	// same time and their retries compete for the budget.
	failing := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(300 * time.Millisecond)
		statusAnswer("v1", http.StatusServiceUnavailable).ServeHTTP(w, r)
	})
	b := m.Backend("reviews-v1", failing)
	cluster := wt.Cluster("v1")
	cluster.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		RetryBudget: &clusterv3.CircuitBreakers_Thresholds_RetryBudget{BudgetPercent: &typev3.Percent{Value: 50}, MinRetryConcurrency: wrapperspb.UInt32(1)},
	}}}
	pushReviews(t, m, nil, []*routev3.Route{
		route("retry", prefix("/"), withRetry(toCluster("v1"), &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(3)})),
	}, cluster, wt.Endpoints("v1", b))
	client := m.Client(wt.ClientID, netip.Addr{}, false)

	const requests = 6
	var wg sync.WaitGroup
	for range requests {
		wg.Go(func() {
			if a := send(client, http.MethodGet, "/", nil, ""); a.err != nil || a.status != http.StatusServiceUnavailable {
				t.Errorf("got %d %v, want the backend's 503", a.status, a.err)
			}
		})
	}
	wg.Wait()
	// 50% of 6 active requests: at most 3 retries run at once, and the requests that
	// hold them are answered only when their retries are done.
	retries := metric(t, m, "ambientmesh_waypoint_retries_total", nil)
	if retries < 1 || retries > requests/2 {
		t.Errorf("retries = %v, want between 1 and %d (the budget)", retries, requests/2)
	}
	if got := b.Requests.Load(); got != requests+int64(retries) {
		t.Errorf("the backend served %d tries, want %d requests + %v retries", got, requests, retries)
	}
	if c := clustersDump(t, m)["v1"]; c.RetryOverflow == 0 {
		t.Errorf("/clusters shows retry_overflow 0, want the retries the budget refused")
	}
}

func TestRouteTimeoutCutsASlowUpstream(t *testing.T) {
	m := wt.Start(t, wt.Options{})
	b := m.Backend("reviews-v1", slow("v1", 5*time.Second))
	timed := toCluster("v1")
	timed.Timeout = durationpb.New(2 * time.Second)
	pushReviews(t, m, nil, []*routev3.Route{route("timeout", prefix("/"), timed)}, wt.Cluster("v1"), wt.Endpoints("v1", b))

	a := get(t, m.Client(wt.ClientID, netip.Addr{}, false), "/", nil)
	if a.status != http.StatusGatewayTimeout || a.body != "upstream request timeout" {
		t.Errorf("got %d %q, want 504 upstream request timeout", a.status, a.body)
	}
	if a.duration < 2*time.Second || a.duration > 2500*time.Millisecond {
		t.Errorf("the answer took %v, want the 2s timeout (within 2.5s)", a.duration)
	}
	if got := metric(t, m, "istio_requests_total", map[string]string{"response_code": "504", "response_flags": "UT"}); got != 1 {
		t.Errorf("istio_requests_total{response_code=504,response_flags=UT} = %v, want 1", got)
	}
}

func TestPerTryTimeoutRetriesOnTheFastEndpoint(t *testing.T) {
	m := wt.Start(t, wt.Options{})
	slowOne, fast := m.Backend("reviews-slow", slow("slow", 3*time.Second)), m.Backend("reviews-fast", echo("fast"))
	pushReviews(t, m, nil, []*routev3.Route{
		route("per-try", prefix("/"), withRetry(toCluster("v1"), &routev3.RetryPolicy{
			RetryOn: "5xx", NumRetries: wrapperspb.UInt32(2), PerTryTimeout: durationpb.New(200 * time.Millisecond),
		})),
	}, wt.Cluster("v1"), wt.Endpoints("v1", slowOne, fast))
	client := m.Client(wt.ClientID, netip.Addr{}, false)

	for i := range 4 {
		a := get(t, client, "/", nil)
		if a.status != http.StatusOK || a.header.Get("X-Served-By") != "fast" || a.duration > time.Second {
			t.Errorf("request %d: got %d from %q after %v, want 200 from the fast endpoint well before the slow one answers",
				i, a.status, a.header.Get("X-Served-By"), a.duration)
		}
	}
	if slowOne.Requests.Load() == 0 || metric(t, m, "ambientmesh_waypoint_retries_total", nil) == 0 {
		t.Errorf("the slow endpoint saw %d tries and %v retries were made, want both > 0 (round robin reaches it)",
			slowOne.Requests.Load(), metric(t, m, "ambientmesh_waypoint_retries_total", nil))
	}
}

// faultRoute routes everything to v1 with the fault filter's per-route config f.
func faultRoute(f *faultv3.HTTPFault) *routev3.Route {
	r := route("fault", prefix("/"), toCluster("v1"))
	r.TypedPerFilterConfig = map[string]*anypb.Any{"envoy.filters.http.fault": wt.Any(f)}
	return r
}

func percent(n uint32) *typev3.FractionalPercent {
	return &typev3.FractionalPercent{Numerator: n, Denominator: typev3.FractionalPercent_HUNDRED}
}

func abort(status, pct uint32) *faultv3.FaultAbort {
	return &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: status}, Percentage: percent(pct)}
}

func TestFaultAbortAll(t *testing.T) {
	m := wt.Start(t, wt.Options{})
	b := m.Backend("reviews-v1", echo("v1"))
	pushReviews(t, m, nil, []*routev3.Route{faultRoute(&faultv3.HTTPFault{Abort: abort(418, 100)})}, wt.Cluster("v1"), wt.Endpoints("v1", b))
	client := m.Client(wt.ClientID, netip.Addr{}, true)
	for range 5 {
		if a := get(t, client, "/", nil); a.status != http.StatusTeapot || a.body != "fault filter abort" {
			t.Fatalf("got %d %q, want 418 fault filter abort", a.status, a.body)
		}
	}
	if got := b.Requests.Load(); got != 0 {
		t.Errorf("the backend served %d aborted requests, want 0", got)
	}
	if got := metric(t, m, "istio_requests_total", map[string]string{"response_code": "418", "response_flags": "FI"}); got != 5 {
		t.Errorf("istio_requests_total{response_code=418,response_flags=FI} = %v, want 5", got)
	}
}

func TestFaultAbortHalf(t *testing.T) {
	m := wt.Start(t, wt.Options{})
	b := m.Backend("reviews-v1", echo("v1"))
	pushReviews(t, m, nil, []*routev3.Route{faultRoute(&faultv3.HTTPFault{Abort: abort(503, 50)})}, wt.Cluster("v1"), wt.Endpoints("v1", b))
	client := m.Client(wt.ClientID, netip.Addr{}, false)
	const requests = 200
	aborted := 0
	for range requests {
		switch a := get(t, client, "/", nil); a.status {
		case http.StatusServiceUnavailable:
			aborted++
		case http.StatusOK:
		default:
			t.Fatalf("got %d %q, want 200 or the injected 503", a.status, a.body)
		}
	}
	// Binomial(200, 0.5): the standard deviation is about 7; ±30 is beyond chance.
	if aborted < 70 || aborted > 130 {
		t.Errorf("%d of %d requests were aborted, want about half", aborted, requests)
	}
	if got := b.Requests.Load(); got != int64(requests-aborted) {
		t.Errorf("the backend served %d requests, want the %d not aborted", got, requests-aborted)
	}
}

func TestFaultDelayAddsTheDelay(t *testing.T) {
	m := wt.Start(t, wt.Options{})
	b := m.Backend("reviews-v1", echo("v1"))
	const delay = 300 * time.Millisecond
	f := &faultv3.HTTPFault{Delay: &commonfaultv3.FaultDelay{
		FaultDelaySecifier: &commonfaultv3.FaultDelay_FixedDelay{FixedDelay: durationpb.New(delay)},
		Percentage:         percent(100),
	}}
	pushReviews(t, m, nil, []*routev3.Route{faultRoute(f)}, wt.Cluster("v1"), wt.Endpoints("v1", b))
	a := get(t, m.Client(wt.ClientID, netip.Addr{}, false), "/", nil)
	if a.status != http.StatusOK || a.duration < delay || a.duration > delay+time.Second {
		t.Errorf("got %d after %v, want 200 after the %v delay", a.status, a.duration, delay)
	}
	if got := metric(t, m, "ambientmesh_waypoint_fault_delays_injected_total", nil); got != 1 {
		t.Errorf("fault delays counted %v, want 1", got)
	}
}

func TestMirrorGetsACopyWithoutSlowingThePrimary(t *testing.T) {
	m := wt.Start(t, wt.Options{})
	var mu sync.Mutex
	var shadowHosts []string
	shadow := m.Backend("reviews-shadow", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		shadowHosts = append(shadowHosts, r.Host+" "+r.URL.Path)
		mu.Unlock()
		slow("shadow", time.Second).ServeHTTP(w, r)
	}))
	primary := m.Backend("reviews-v1", echo("v1"))
	mirrored := toCluster("v1")
	mirrored.RequestMirrorPolicies = []*routev3.RouteAction_RequestMirrorPolicy{{Cluster: "shadow"}}
	pushReviews(t, m, nil, []*routev3.Route{route("mirrored", prefix("/"), mirrored)},
		upstreams(map[string][]*wt.Backend{"v1": {primary}, "shadow": {shadow}})...)
	client := m.Client(wt.ClientID, netip.Addr{}, false)

	const requests = 5
	host := http.Header{"Host": {reviews + ":9080"}}
	for i := range requests {
		a := get(t, client, fmt.Sprintf("/m/%d", i), host)
		// The mirror answers after 1s; the primary's answer must not wait for it.
		if a.status != http.StatusOK || a.header.Get("X-Served-By") != "v1" || a.duration > 500*time.Millisecond {
			t.Errorf("request %d: got %d from %q after %v, want v1's 200 at once", i, a.status, a.header.Get("X-Served-By"), a.duration)
		}
	}
	testwait.For(t, "the mirror to receive every copy", 5*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(shadowHosts) == requests
	})
	// The copies' connections are not the primary cluster's (its max_connections).
	if got := clustersDump(t, m)["v1"].CxTotal; got != 1 {
		t.Errorf("/clusters: v1 opened %d connections, want 1 (the client's keep-alive one)", got)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, got := range shadowHosts {
		if !strings.HasPrefix(got, reviews+"-shadow:9080 /m/") {
			t.Errorf("the mirror saw %q, want Host %s-shadow:9080 and the request's path", got, reviews)
		}
	}
}

func TestRoundRobinIsEven(t *testing.T) {
	m := wt.Start(t, wt.Options{})
	backends := []*wt.Backend{m.Backend("r1", echo("r1")), m.Backend("r2", echo("r2")), m.Backend("r3", echo("r3"))}
	pushReviews(t, m, nil, []*routev3.Route{route("rr", prefix("/"), toCluster("v1"))}, wt.Cluster("v1"), wt.Endpoints("v1", backends...))
	client := m.Client(wt.ClientID, netip.Addr{}, false)
	for range 300 {
		if a := get(t, client, "/", nil); a.status != http.StatusOK {
			t.Fatalf("got %d %q", a.status, a.body)
		}
	}
	for _, b := range backends {
		if got := b.Requests.Load(); got != 100 {
			t.Errorf("%s served %d of 300 requests, want 100", b.ID.ServiceAccount, got)
		}
	}
}

func TestLeastRequestPrefersTheIdleEndpoint(t *testing.T) {
	m := wt.Start(t, wt.Options{})
	g := newGate()
	a, b := m.Backend("a", g.handler("a")), m.Backend("b", g.handler("b"))
	cluster := wt.Cluster("v1")
	cluster.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
	pushReviews(t, m, nil, []*routev3.Route{route("lr", prefix("/"), toCluster("v1"))}, cluster, wt.Endpoints("v1", a, b))
	client := m.Client(wt.ClientID, netip.Addr{}, false)

	held := make(chan answer, 1)
	go func() { held <- send(client, http.MethodGet, "/hold", nil, "") }()
	busy := <-g.held
	for i := range 10 {
		if got := get(t, client, "/", nil).header.Get("X-Served-By"); got == busy || got == "" {
			t.Errorf("request %d went to %q, want the idle endpoint (not %s, which holds a request)", i, got, busy)
		}
	}
	close(g.release)
	if a := <-held; a.status != http.StatusOK {
		t.Errorf("the held request got %d %v", a.status, a.err)
	}
}

func TestOutlierDetectionEjectsTheFailingEndpoint(t *testing.T) {
	m := wt.Start(t, wt.Options{})
	bad, good := m.Backend("bad", statusAnswer("bad", http.StatusInternalServerError)), m.Backend("good", echo("good"))
	cluster := wt.Cluster("v1")
	cluster.OutlierDetection = &clusterv3.OutlierDetection{
		Consecutive_5Xx:    wrapperspb.UInt32(3),
		MaxEjectionPercent: wrapperspb.UInt32(100),
		BaseEjectionTime:   durationpb.New(30 * time.Second),
	}
	pushReviews(t, m, nil, []*routev3.Route{route("od", prefix("/"), toCluster("v1"))}, cluster, wt.Endpoints("v1", bad, good))
	client := m.Client(wt.ClientID, netip.Addr{}, false)

	errors := 0
	for range 10 {
		if get(t, client, "/", nil).status != http.StatusOK {
			errors++
		}
	}
	// Round robin alternates, so the bad endpoint's third consecutive 5xx ejects it
	// within the first six requests; from then on only the good one answers.
	if errors != 3 {
		t.Errorf("%d of the first 10 requests failed, want 3 (consecutive_5xx)", errors)
	}
	for i := range 10 {
		if a := get(t, client, "/", nil); a.status != http.StatusOK || a.header.Get("X-Served-By") != "good" {
			t.Errorf("request %d after the ejection: got %d from %q, want 200 from good", i, a.status, a.header.Get("X-Served-By"))
		}
	}
	if got := bad.Requests.Load(); got != 3 {
		t.Errorf("the bad endpoint served %d requests, want 3", got)
	}
	c := clustersDump(t, m)["v1"]
	ejected := map[string]bool{}
	for _, h := range c.Hosts {
		ejected[h.Address] = !h.EjectedUntil.IsZero()
	}
	if c.EjectionsActive != 1 || !ejected[bad.App.String()] || ejected[good.App.String()] {
		t.Errorf("/clusters shows %d ejected, hosts %+v; want only %s ejected", c.EjectionsActive, c.Hosts, bad.App)
	}
}

func TestUnhealthyEndpointGetsNoTraffic(t *testing.T) {
	m := wt.Start(t, wt.Options{})
	backends := []*wt.Backend{m.Backend("r1", echo("r1")), m.Backend("r2", echo("r2")), m.Backend("sick", echo("sick"))}
	eps := wt.Endpoints("v1", backends...)
	eps.Endpoints[0].LbEndpoints[2].HealthStatus = corev3.HealthStatus_UNHEALTHY
	pushReviews(t, m, nil, []*routev3.Route{route("rr", prefix("/"), toCluster("v1"))}, wt.Cluster("v1"), eps)
	client := m.Client(wt.ClientID, netip.Addr{}, false)
	for range 30 {
		if a := get(t, client, "/", nil); a.status != http.StatusOK || a.header.Get("X-Served-By") == "sick" {
			t.Fatalf("got %d from %q, want 200 from a healthy endpoint", a.status, a.header.Get("X-Served-By"))
		}
	}
	if got := backends[2].Requests.Load(); got != 0 {
		t.Errorf("the unhealthy endpoint served %d requests, want 0", got)
	}
}

func TestCircuitBreakerMaxRequests(t *testing.T) {
	m := wt.Start(t, wt.Options{})
	g := newGate()
	b := m.Backend("reviews-v1", g.handler("v1"))
	cluster := wt.Cluster("v1")
	cluster.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxRequests: wrapperspb.UInt32(1)}}}
	pushReviews(t, m, nil, []*routev3.Route{route("cb", prefix("/"), toCluster("v1"))}, cluster, wt.Endpoints("v1", b))
	client := m.Client(wt.ClientID, netip.Addr{}, false)

	held := make(chan answer, 1)
	go func() { held <- send(client, http.MethodGet, "/hold", nil, "") }()
	<-g.held
	if a := get(t, client, "/", nil); a.status != http.StatusServiceUnavailable {
		t.Errorf("the concurrent request got %d %q, want 503 (max_requests 1)", a.status, a.body)
	}
	close(g.release)
	if a := <-held; a.status != http.StatusOK {
		t.Errorf("the first request got %d %v, want 200", a.status, a.err)
	}
	if a := get(t, client, "/", nil); a.status != http.StatusOK {
		t.Errorf("a request after the first one finished got %d, want 200", a.status)
	}
	if got := metric(t, m, "istio_requests_total", map[string]string{"response_code": "503", "response_flags": "UO"}); got != 1 {
		t.Errorf("istio_requests_total{response_code=503,response_flags=UO} = %v, want 1", got)
	}
}

func TestCircuitBreakerMaxConnectionsAndMaxPendingRequests(t *testing.T) {
	m := wt.Start(t, wt.Options{})
	g := newGate()
	b := m.Backend("reviews-v1", g.handler("v1"))
	cluster := wt.Cluster("v1")
	cluster.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		MaxConnections: wrapperspb.UInt32(1), MaxPendingRequests: wrapperspb.UInt32(1)}}}
	pushReviews(t, m, nil, []*routev3.Route{route("cb", prefix("/"), toCluster("v1"))}, cluster, wt.Endpoints("v1", b))
	client := m.Client(wt.ClientID, netip.Addr{}, false)

	// The first request holds the only upstream connection; the second waits for it.
	held := make(chan answer, 1)
	go func() { held <- send(client, http.MethodGet, "/hold", nil, "") }()
	<-g.held
	waiting := make(chan answer, 1)
	go func() { waiting <- send(client, http.MethodGet, "/", nil, "") }()
	testwait.For(t, "a pending request in /clusters", 5*time.Second, func() bool {
		return clustersDump(t, m)["v1"].RqPendingActive == 1
	})
	// A third finds the pending queue full.
	if a := get(t, client, "/", nil); a.status != http.StatusServiceUnavailable || !strings.Contains(a.body, "overflow") {
		t.Errorf("a request over max_pending_requests 1 got %d %q, want 503 ... overflow", a.status, a.body)
	}
	select {
	case a := <-waiting:
		t.Fatalf("the pending request was answered (%d %v) while the only connection was busy", a.status, a.err)
	default:
	}
	close(g.release)
	for name, ch := range map[string]chan answer{"held": held, "pending": waiting} {
		if a := <-ch; a.status != http.StatusOK {
			t.Errorf("the %s request got %d %v, want 200", name, a.status, a.err)
		}
	}
	if got := metric(t, m, "istio_requests_total", map[string]string{"response_code": "503", "response_flags": "UO"}); got != 1 {
		t.Errorf("istio_requests_total{response_code=503,response_flags=UO} = %v, want 1", got)
	}
	if cs := clustersDump(t, m)["v1"]; cs.RqPendingOverflow != 1 || cs.CxOverflow != 1 || cs.CxActive != 1 {
		t.Errorf("/clusters: pending overflow %d, connection overflow %d, connections %d; want 1, 1, 1 (one idle)",
			cs.RqPendingOverflow, cs.CxOverflow, cs.CxActive)
	}

	// The connection is now idle in the first client's pool (the waypoint keeps upstream
	// connections per client). Another client's request closes it to take its slot rather
	// than wait for its 90 s idle timeout.
	other := m.Client(wt.ClientID, netip.MustParseAddr("127.0.50.8"), false)
	other.Timeout = 5 * time.Second
	if a := get(t, other, "/", nil); a.status != http.StatusOK {
		t.Fatalf("another client's request got %d %v, want 200", a.status, a.err)
	}
	if cs := clustersDump(t, m)["v1"]; cs.CxActive != 1 {
		t.Errorf("/clusters: %d connections open, want 1 (max_connections)", cs.CxActive)
	}
}

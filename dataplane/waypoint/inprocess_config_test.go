package waypoint_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ambientmesh/ambient-operator/internal/testwait"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/ambientmesh/ambient-operator/dataplane/hbone"
	"github.com/ambientmesh/ambient-operator/dataplane/waypoint"
	wt "github.com/ambientmesh/ambient-operator/dataplane/waypoint/waypointtest"
	"github.com/ambientmesh/ambient-operator/internal/xdstest"
)

func TestListenerThatDoesNotCompileIsNACKedAndTheOldOneServes(t *testing.T) {
	m, _, _ := reviewsMesh(t, wt.PrefixRoute("default", "/", "v1"))
	client := m.Client(wt.ClientID, netip.Addr{}, false)

	nacks := m.Push(wt.HTTPListener(reviews, reviewsVIP, wt.HTTPFilter("envoy.filters.http.cors", &corsv3.Cors{})))
	if len(nacks) != 1 || !strings.Contains(nacks[0], "envoy.filters.http.cors") || !strings.Contains(nacks[0], "not supported") {
		t.Fatalf("NACKs %q, want one naming the unsupported cors filter", nacks)
	}
	if dump := m.Waypoint.ConfigDump(); !strings.Contains(dump.LastNack, "not supported") {
		t.Errorf("/config_dump lastNack = %q, want the reason", dump.LastNack)
	}
	// A new connection (the old one would prove less) still gets the last good listener.
	client.CloseIdleConnections()
	if a := get(t, client, "/", nil); a.status != http.StatusOK || a.body != "v1 GET /" {
		t.Errorf("after the NACK: got %d %q, want v1's answer from the previous configuration", a.status, a.body)
	}
	// Serving the old configuration, it says it is behind: not ready, and a gauge.
	if err := m.Waypoint.Ready(context.Background()); err == nil || !strings.Contains(err.Error(), "behind") {
		t.Errorf("readiness after the NACK: %v, want not ready, behind the control plane", err)
	}
	if got := metricValue(t, m, "ambientmesh_xds_config_behind", "Listener"); got != 1 {
		t.Errorf("ambientmesh_xds_config_behind{type=Listener} = %v after the NACK, want 1", got)
	}
	if nacks := m.Push(wt.HTTPListener(reviews, reviewsVIP)); len(nacks) > 0 {
		t.Fatalf("the corrected listener was NACKed: %v", nacks)
	}
	testwait.ForNoError(t, "ready once the listener is accepted", 5*time.Second, func() error { return m.Waypoint.Ready(context.Background()) })
}

// metricValue reads a waypoint metric by the value of its type label.
func metricValue(t *testing.T, m *wt.Mesh, name, typ string) float64 {
	t.Helper()
	families, err := m.Waypoint.Metrics().Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, metric := range f.GetMetric() {
			for _, l := range metric.GetLabel() {
				if l.GetName() == "type" && l.GetValue() == typ {
					return metric.GetGauge().GetValue() + metric.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s{type=%q} among the waypoint's metrics", name, typ)
	return 0
}

func TestRemovedListenerRefusesNewConnections(t *testing.T) {
	m, _, _ := reviewsMesh(t, wt.PrefixRoute("default", "/", "v1"))
	dial := m.Dialer(wt.ClientID, netip.Addr{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := dial(ctx, reviewsVIP)
	if err != nil {
		t.Fatalf("CONNECT before the removal: %v", err)
	}
	c.Close()

	m.Delete(resourcev3.ListenerType, reviewsRoutes)
	_, err = dial(ctx, reviewsVIP)
	var refused *hbone.StatusError
	if !errors.As(err, &refused) || refused.Code != http.StatusServiceUnavailable || !strings.Contains(refused.Reason, "no listener") {
		t.Fatalf("CONNECT after the removal: %v, want 503 no listener", err)
	}
}

func TestRDSChangeReroutesWithoutReconnecting(t *testing.T) {
	m, v1, v2 := reviewsMesh(t, wt.PrefixRoute("default", "/", "v1"))
	client := m.Client(wt.ClientID, netip.Addr{}, false)

	// reused reports whether the request went over a connection the client already had.
	request := func() (answer, bool) {
		var reused bool
		ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }})
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+reviewsVIP.String()+"/", nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		// Read to the end, so the connection can be reused.
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			t.Fatal(err)
		}
		return answer{status: resp.StatusCode, header: resp.Header}, reused
	}
	if a, _ := request(); a.header.Get("X-Served-By") != "v1" {
		t.Fatalf("before the change: served by %q, want v1", a.header.Get("X-Served-By"))
	}
	if nacks := m.Push(wt.RouteConfig(reviewsRoutes, wt.PrefixRoute("default", "/", "v2"))); len(nacks) > 0 {
		t.Fatalf("NACKed: %v", nacks)
	}
	a, reused := request()
	if a.header.Get("X-Served-By") != "v2" || !reused {
		t.Errorf("after the change: served by %q on a reused connection %v, want v2 on the same connection", a.header.Get("X-Served-By"), reused)
	}
	if v1.Requests.Load() != 1 || v2.Requests.Load() != 1 {
		t.Errorf("v1 served %d, v2 %d; want 1 each", v1.Requests.Load(), v2.Requests.Load())
	}
}

func TestDrainLetsAnInFlightRequestFinish(t *testing.T) {
	m := wt.Start(t, wt.Options{})
	arrived := make(chan struct{}, 1)
	b := m.Backend("reviews-v1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		time.Sleep(500 * time.Millisecond)
		named("v1").ServeHTTP(w, r)
	}))
	pushReviews(t, m, nil, []*routev3.Route{wt.PrefixRoute("default", "/", "v1")}, wt.Cluster("v1"), wt.Endpoints("v1", b))
	client := m.Client(wt.ClientID, netip.Addr{}, false)

	answered := make(chan answer, 1)
	go func() { answered <- send(client, http.MethodGet, "/slow", nil, "") }()
	<-arrived
	start := time.Now()
	stopped := make(chan error, 1)
	go func() { stopped <- m.Stop() }()

	if a := <-answered; a.err != nil || a.status != http.StatusOK || a.body != "v1 GET /slow" {
		t.Errorf("the in-flight request got %d %q (%v), want v1's 200", a.status, a.body, a.err)
	}
	if err := <-stopped; err != nil {
		t.Errorf("Run returned %v", err)
	}
	// With nothing left in flight the waypoint need not wait out its 2s drain period.
	if took := time.Since(start); took > 1500*time.Millisecond {
		t.Errorf("stopping took %v, want about the 500ms the request needed", took)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := m.Dialer(wt.ClientID, netip.Addr{})(ctx, reviewsVIP); err == nil {
		t.Errorf("a CONNECT after the waypoint stopped succeeded")
	}
}

// For its minimum drain period a stopping waypoint still serves new connections, since
// ztunnels keep sending them until they learn the pod is terminating; it reports not
// ready and closes each HTTP/1.1 connection after its response, so clients move on.
func TestDrainKeepsAcceptingForMinDrainPeriod(t *testing.T) {
	m := wt.Start(t, wt.Options{MinDrainPeriod: time.Second})
	b := m.Backend("reviews-v1", named("v1"))
	pushReviews(t, m, nil, []*routev3.Route{wt.PrefixRoute("default", "/", "v1")}, wt.Cluster("v1"), wt.Endpoints("v1", b))
	keepAlive := m.Client(wt.ClientID, netip.Addr{}, false)
	if a := send(keepAlive, http.MethodGet, "/", nil, ""); a.status != http.StatusOK || a.closing {
		t.Fatalf("before the drain: %d %v (%v), want 200 on a connection kept open", a.status, a.header, a.err)
	}

	ready := func() error { return m.Waypoint.Ready(context.Background()) }
	testwait.ForNoError(t, "the waypoint ready", 5*time.Second, ready)
	start := time.Now()
	stopped := make(chan error, 1)
	go func() { stopped <- m.Stop() }()
	testwait.For(t, "the stopping waypoint to report draining", 5*time.Second, func() bool {
		err := ready()
		return err != nil && strings.Contains(err.Error(), "draining")
	})
	for name, c := range map[string]*http.Client{
		"on the open connection": keepAlive,
		"on a new connection":    m.Client(wt.ClientID, netip.Addr{}, false),
	} {
		a := send(c, http.MethodGet, "/", nil, "")
		if a.err != nil || a.status != http.StatusOK || !a.closing {
			t.Errorf("draining, a request %s got %d %v (%v), want 200 with Connection: close", name, a.status, a.header, a.err)
		}
	}
	if since := time.Since(start); since >= time.Second {
		t.Fatalf("the requests took until %v into the drain, past its minimum period: the test proves nothing", since)
	}
	if err := <-stopped; err != nil {
		t.Errorf("Run returned %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := m.Dialer(wt.ClientID, netip.Addr{})(ctx, reviewsVIP); err == nil {
		t.Errorf("a CONNECT after the waypoint stopped succeeded")
	}
}

// The control plane restarts: while the stream is down the waypoint keeps serving what it
// holds, and when the new server is up it reconnects by itself, announcing the versions it
// holds, and takes what changed in the meantime.
func TestXDSReconnectResumes(t *testing.T) {
	m, v1, v2 := reviewsMesh(t, wt.PrefixRoute("default", "/", "v1"))
	client := m.Client(wt.ClientID, netip.Addr{}, false)
	url := "http://" + reviewsVIP.String() + "/"
	addr := m.XDS.Addr
	m.XDS.Stop()
	if code, body := wt.Get(client, url, nil); code != http.StatusOK || !strings.HasPrefix(body, "v1") {
		t.Fatalf("with the control plane down: %d %q, want v1's answer from the configuration held", code, body)
	}

	// The restarted control plane serves the same resources but for the route, now to v2.
	next := xdstest.New(waypoint.TypeURLs...)
	next.Set(t, resourcev3.ClusterType, map[string]proto.Message{"v1": wt.Cluster("v1"), "v2": wt.Cluster("v2")})
	next.Set(t, resourcev3.EndpointType, map[string]proto.Message{"v1": wt.Endpoints("v1", v1), "v2": wt.Endpoints("v2", v2)})
	listener := wt.HTTPListener(reviews, reviewsVIP)
	next.Set(t, resourcev3.ListenerType, map[string]proto.Message{listener.GetName(): listener})
	next.Set(t, resourcev3.RouteType, map[string]proto.Message{listener.GetName(): wt.RouteConfig(listener.GetName(), wt.PrefixRoute("default", "/", "v2"))})
	next.Serve(t, addr)
	m.XDS = next

	testwait.ForNoError(t, "v2's answer after the control plane came back (the route changed while it was down)", 10*time.Second, func() error {
		if code, body := wt.Get(client, url, nil); code != http.StatusOK || !strings.HasPrefix(body, "v2") {
			return fmt.Errorf("got %d %q", code, body)
		}
		return nil
	})
	if nacks := next.Nacks(); len(nacks) > 0 {
		t.Fatalf("the waypoint NACKed the restarted control plane: %v", nacks)
	}
}

package main

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
)

const (
	v1Cluster = "outbound|8080||reviews-v1.l7.svc.cluster.local"
	v2Cluster = "outbound|8080||reviews-v2.l7.svc.cluster.local"
)

// reviewsRoutes is the route configuration the control plane makes of an
// HTTPRoute sending end-user: jason to v2 and the rest 80/20.
func reviewsRoutes(t *testing.T) *routev3.RouteConfiguration {
	exact := func(s string) *matcherv3.StringMatcher {
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
	}
	rc := &routev3.RouteConfiguration{Name: "reviews.l7.svc.cluster.local:8080", VirtualHosts: []*routev3.VirtualHost{{
		Name: "*", Domains: []string{"*"},
		Routes: []*routev3.Route{
			{
				Name: "l7/reviews/0/0",
				Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"},
					Headers: []*routev3.HeaderMatcher{{Name: "end-user", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("jason")}}}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{
					ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: v2Cluster},
					Timeout:          durationpb.New(0),
				}},
			},
			{
				Name:  "l7/reviews/1/0",
				Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/ratings"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{
					ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
						Clusters: []*routev3.WeightedCluster_ClusterWeight{
							{Name: v1Cluster, Weight: wrapperspb.UInt32(80)},
							{Name: v2Cluster, Weight: wrapperspb.UInt32(20)},
						}}},
					Timeout:     durationpb.New(2 * time.Second),
					RetryPolicy: &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(3)},
				}},
			},
		},
	}}}
	if err := rc.ValidateAll(); err != nil {
		t.Fatal(err)
	}
	return rc
}

// dumpOf is the /config_dump of a waypoint holding rc, as the waypoint writes it.
func dumpOf(t *testing.T, rc *routev3.RouteConfiguration) configDump {
	raw, err := protojson.Marshal(rc)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(map[string]any{
		"node": "l7/waypoint",
		"resources": map[string]any{
			"type.googleapis.com/envoy.config.route.v3.RouteConfiguration": []any{map[string]any{"name": rc.Name, "version": "7", "resource": json.RawMessage(raw)}},
			"type.googleapis.com/envoy.config.cluster.v3.Cluster": []any{
				map[string]any{"name": v2Cluster, "version": "3", "resource": map[string]any{}},
				map[string]any{"name": v1Cluster, "version": "3", "resource": map[string]any{}},
			},
		},
		"lastNack": "cluster x: bad",
		"xds":      map[string]any{"Connected": true, "Connects": 1, "Acks": 9, "Nacks": 1},
	})
	var d configDump
	if err := json.Unmarshal(body, &d); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestRoutesTableShowsMatchesAndWeights(t *testing.T) {
	routes, err := routeConfigs(dumpOf(t, reviewsRoutes(t)))
	if err != nil {
		t.Fatal(err)
	}
	tab := routesTable(routes)
	if got := strings.Join(tab.Headers, " "); got != "ROUTE-CONFIG ROUTE MATCH ACTION" {
		t.Errorf("headers: %q", got)
	}
	want := [][]string{
		{"reviews.l7.svc.cluster.local:8080", "l7/reviews/0/0", "prefix / end-user=jason", v2Cluster},
		{"reviews.l7.svc.cluster.local:8080", "l7/reviews/1/0", "path /ratings", v1Cluster + " 80%, " + v2Cluster + " 20%; timeout 2s; retries 3"},
	}
	if len(tab.Rows) != len(want) {
		t.Fatalf("rows: got %q", tab.Rows)
	}
	for i := range want {
		if !slices.Equal(tab.Rows[i], want[i]) {
			t.Errorf("row %d:\n got %q\nwant %q", i, tab.Rows[i], want[i])
		}
	}
}

func TestRouteMatchAndActionForms(t *testing.T) {
	var r routeEntry
	raw := `{"match":{"safeRegex":{"regex":"/v[0-9]+"},"headers":[{"name":":method","stringMatch":{"exact":"POST"}},
	          {"name":"x-debug","presentMatch":true,"invertMatch":true}],"queryParameters":[{"name":"q","stringMatch":{"prefix":"a"}}]},
	         "directResponse":{"status":503},"typedPerFilterConfig":{"envoy.filters.http.fault":{}}}`
	if err := json.Unmarshal([]byte(raw), &r); err != nil {
		t.Fatal(err)
	}
	if got, want := r.match(), "path ~/v[0-9]+ :method=POST not x-debug present ?q=a*"; got != want {
		t.Errorf("match: got %q, want %q", got, want)
	}
	if got, want := r.action(), "respond 503; fault"; got != want {
		t.Errorf("action: got %q, want %q", got, want)
	}
	if got := percent(1, 3); got != "33.3%" {
		t.Errorf("percent(1, 3) = %q", got)
	}
}

func TestConfigTableOrdersByTypeThenName(t *testing.T) {
	tab := configTable(dumpOf(t, reviewsRoutes(t)))
	var got []string
	for _, r := range tab.Rows {
		got = append(got, strings.Join(r, " "))
	}
	want := []string{
		"RouteConfiguration reviews.l7.svc.cluster.local:8080 7",
		"Cluster " + v2Cluster + " 3", // as the waypoint lists them (it sorts by name)
		"Cluster " + v1Cluster + " 3",
	}
	if !slices.Equal(got, want) {
		t.Errorf("rows:\n got %q\nwant %q", got, want)
	}
}

func TestClustersTableOneRowPerEndpoint(t *testing.T) {
	var clusters []clusterStatus
	raw := `[{"name":"` + v1Cluster + `","rq_total":12,"hosts":[
	           {"address":"10.89.1.3:8080","tunnel":"hbone","identity":"spiffe://cluster.local/ns/l7/sa/reviews","health":"HEALTHY","active":1,"successes":10,"failures":2},
	           {"address":"10.89.2.3:8080","tunnel":"hbone","health":"HEALTHY","ejected_until":"2026-01-02T03:04:05Z"}]},
	         {"name":"` + v2Cluster + `","rq_total":0,"hosts":[]}]`
	if err := json.Unmarshal([]byte(raw), &clusters); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := clustersTable(clusters).write(&buf); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("want a header and 3 rows:\n%s", buf.String())
	}
	for i, want := range [][]string{
		{"CLUSTER", "ENDPOINT", "TUNNEL", "IDENTITY", "HEALTH"},
		{v1Cluster, "10.89.1.3:8080", "hbone", "spiffe://cluster.local/ns/l7/sa/reviews", "HEALTHY", "1", "10", "2", "12"},
		{v1Cluster, "10.89.2.3:8080", "<none>", "HEALTHY (ejected until 03:04:05)"},
		{v2Cluster, "<none>", "0"},
	} {
		for _, w := range want {
			if !strings.Contains(lines[i], w) {
				t.Errorf("line %d lacks %q: %q", i, w, lines[i])
			}
		}
	}
}

func TestWaypointStatusTable(t *testing.T) {
	st := &meshv1alpha1.WaypointStatus{
		Addresses: []meshv1alpha1.WaypointAddress{{Type: meshv1alpha1.AddressTypeIPAddress, Value: "10.96.0.9"}},
		Conditions: []metav1.Condition{
			{Type: meshv1alpha1.WaypointConditionProgrammed, Status: metav1.ConditionTrue, Reason: "Programmed"},
			{Type: meshv1alpha1.WaypointConditionReady, Status: metav1.ConditionTrue, Reason: "Ready", Message: "1/1 replicas available"},
		},
	}
	d := dumpOf(t, reviewsRoutes(t))
	pods := []podReport{
		{Name: "waypoint-abc-0", Node: "am-n1", IP: "10.89.1.7", Ready: true, Resources: map[string]int{"Listener": 4, "RouteConfiguration": 1, "Cluster": 2}},
		{Name: "waypoint-abc-1", Node: "am-n2", IP: "10.89.2.7", Error: "connection refused"},
	}
	var buf bytes.Buffer
	if err := waypointStatusTable("l7", "waypoint", st, pods, []*configDump{&d, nil}).write(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"Waypoint    l7/waypoint      True    Ready", "1/1 replicas available; address 10.96.0.9",
		"Condition   Programmed", "Pod         waypoint-abc-0   true    Connected",
		"holds 4 Listener, 1 RouteConfiguration, 2 Cluster, 0 ClusterLoadAssignment; 9 ACKs, 1 NACKs; last NACK: cluster x: bad",
		"waypoint-abc-1   false   Unreachable   node am-n2, IP 10.89.2.7; connection refused",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
}

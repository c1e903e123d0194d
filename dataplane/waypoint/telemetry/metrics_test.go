package telemetry

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
)

var productpage = Labels{
	SourceWorkload: "productpage-v1", SourceWorkloadNamespace: "bookinfo",
	SourcePrincipal: "spiffe://cluster.local/ns/bookinfo/sa/productpage", SourceApp: "productpage", SourceVersion: "v1",
	SourceCanonicalService: "productpage", SourceCanonicalRevision: "v1", SourceCluster: "Kubernetes",
	DestinationWorkload: "reviews-v2", DestinationWorkloadNamespace: "bookinfo",
	DestinationPrincipal: "spiffe://cluster.local/ns/bookinfo/sa/reviews", DestinationApp: "reviews", DestinationVersion: "v2",
	DestinationCanonicalService: "reviews", DestinationCanonicalRevision: "v2", DestinationCluster: "Kubernetes",
	DestinationService: "reviews.bookinfo.svc.cluster.local", DestinationServiceName: "reviews", DestinationServiceNamespace: "bookinfo",
	RequestProtocol: ProtocolHTTP, ResponseCode: 503, ResponseFlags: FlagUpstreamRetryLimitExceeded,
	ConnectionSecurityPolicy: SecurityMutualTLS,
}

// scrape gathers reg and returns the series of the named family, failing
// the test when the family is missing.
func scrape(t *testing.T, reg prometheus.Gatherer, name string) []*dto.Metric {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name {
			return f.GetMetric()
		}
	}
	t.Fatalf("%s is not in the scrape", name)
	return nil
}

func labelMap(m *dto.Metric) map[string]string {
	labels := map[string]string{}
	for _, l := range m.GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	return labels
}

func bucketBounds(h *dto.Histogram) []float64 {
	var bounds []float64
	for _, b := range h.GetBucket() {
		bounds = append(bounds, b.GetUpperBound())
	}
	return bounds
}

func TestObserveRequestIsScrapedWithIstioLabelsAndBuckets(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	m.ObserveRequest(productpage, 12500*time.Microsecond, 300, 2000)
	m.ObserveRequest(productpage, 40*time.Millisecond, 100, 0)

	wantLabels := map[string]string{
		"reporter":                       "waypoint",
		"source_workload":                "productpage-v1",
		"source_workload_namespace":      "bookinfo",
		"source_principal":               "spiffe://cluster.local/ns/bookinfo/sa/productpage",
		"source_app":                     "productpage",
		"source_version":                 "v1",
		"source_canonical_service":       "productpage",
		"source_canonical_revision":      "v1",
		"source_cluster":                 "Kubernetes",
		"destination_workload":           "reviews-v2",
		"destination_workload_namespace": "bookinfo",
		"destination_principal":          "spiffe://cluster.local/ns/bookinfo/sa/reviews",
		"destination_app":                "reviews",
		"destination_version":            "v2",
		"destination_canonical_service":  "reviews",
		"destination_canonical_revision": "v2",
		"destination_cluster":            "Kubernetes",
		"destination_service":            "reviews.bookinfo.svc.cluster.local",
		"destination_service_name":       "reviews",
		"destination_service_namespace":  "bookinfo",
		"request_protocol":               "http",
		"response_code":                  "503",
		"grpc_response_status":           "",
		"response_flags":                 "URX",
		"connection_security_policy":     "mutual_tls",
	}
	istioDurationBuckets := []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
		300000, 600000, 1800000, 3600000}
	sizeBuckets := []float64{1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000, 1000000000}

	requests := scrape(t, m.Registry(), "istio_requests_total")
	if len(requests) != 1 {
		t.Fatalf("istio_requests_total has %d series, want 1", len(requests))
	}
	if got := labelMap(requests[0]); fmt.Sprint(got) != fmt.Sprint(wantLabels) {
		t.Errorf("labels:\n got %v\nwant %v", got, wantLabels)
	}
	if got := requests[0].GetCounter().GetValue(); got != 2 {
		t.Errorf("istio_requests_total = %v, want 2", got)
	}

	for _, tc := range []struct {
		name    string
		buckets []float64
		sum     float64
	}{
		{"istio_request_duration_milliseconds", istioDurationBuckets, 52.5},
		{"istio_request_bytes", sizeBuckets, 400},
		{"istio_response_bytes", sizeBuckets, 2000},
	} {
		series := scrape(t, m.Registry(), tc.name)
		if len(series) != 1 {
			t.Fatalf("%s has %d series, want 1", tc.name, len(series))
		}
		if got := labelMap(series[0]); fmt.Sprint(got) != fmt.Sprint(wantLabels) {
			t.Errorf("%s labels:\n got %v\nwant %v", tc.name, got, wantLabels)
		}
		h := series[0].GetHistogram()
		if got := bucketBounds(h); fmt.Sprint(got) != fmt.Sprint(tc.buckets) {
			t.Errorf("%s buckets = %v, want %v", tc.name, got, tc.buckets)
		}
		if h.GetSampleCount() != 2 || h.GetSampleSum() != tc.sum {
			t.Errorf("%s count, sum = %d, %v; want 2, %v", tc.name, h.GetSampleCount(), h.GetSampleSum(), tc.sum)
		}
	}

	// 12.5 ms falls in the 25 ms bucket, 40 ms in the 50 ms one.
	buckets := scrape(t, m.Registry(), "istio_request_duration_milliseconds")[0].GetHistogram().GetBucket()
	for _, b := range buckets {
		var want uint64
		switch {
		case b.GetUpperBound() >= 50:
			want = 2
		case b.GetUpperBound() >= 25:
			want = 1
		}
		if b.GetCumulativeCount() != want {
			t.Errorf("duration bucket le=%v has %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), want)
		}
	}
}

func TestRequestLabelValues(t *testing.T) {
	for _, tc := range []struct {
		name   string
		labels Labels
		want   map[string]string // the labels to check; the others must be "unknown"
	}{
		{
			name:   "nothing known",
			labels: Labels{},
			want:   map[string]string{"response_code": "0", "grpc_response_status": "", "response_flags": "-"},
		},
		{
			name: "grpc",
			labels: Labels{RequestProtocol: ProtocolGRPC, ResponseCode: 200, GRPCResponseStatus: "14",
				ConnectionSecurityPolicy: SecurityNone},
			want: map[string]string{"request_protocol": "grpc", "response_code": "200", "grpc_response_status": "14",
				"response_flags": "-", "connection_security_policy": "none"},
		},
		{
			name:   "several flags",
			labels: Labels{RequestProtocol: ProtocolHTTP, ResponseCode: 504, ResponseFlags: "UT,URX"},
			want:   map[string]string{"request_protocol": "http", "response_code": "504", "grpc_response_status": "", "response_flags": "UT,URX"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := NewMetrics(nil)
			m.ObserveRequest(tc.labels, time.Millisecond, 0, 0)
			got := labelMap(scrape(t, m.Registry(), "istio_requests_total")[0])
			for name, value := range got {
				want, listed := tc.want[name]
				switch {
				case name == "reporter":
					want = "waypoint"
				case !listed:
					want = "unknown"
				}
				if value != want {
					t.Errorf("%s = %q, want %q", name, value, want)
				}
			}
			if len(got) != len(requestLabelNames) {
				t.Errorf("%d labels, want %d", len(got), len(requestLabelNames))
			}
		})
	}
}

func TestTCPMetrics(t *testing.T) {
	m := NewMetrics(nil)
	conn := Labels{
		SourceWorkload: "sleep", SourceWorkloadNamespace: "default", SourcePrincipal: "spiffe://cluster.local/ns/default/sa/sleep",
		DestinationWorkload: "db", DestinationWorkloadNamespace: "data", DestinationService: "db.data.svc.cluster.local",
		DestinationServiceName: "db", DestinationServiceNamespace: "data",
		RequestProtocol:          ProtocolHTTP, // ignored: TCP metrics say tcp
		ConnectionSecurityPolicy: SecurityMutualTLS,
	}
	m.TCPOpened(conn)
	m.TCPOpened(conn)
	m.TCPBytes(conn, 100, 40)
	m.TCPClosed(conn, 900, 60)

	wantLabels := map[string]string{
		"reporter":                       "waypoint",
		"source_workload":                "sleep",
		"source_workload_namespace":      "default",
		"source_principal":               "spiffe://cluster.local/ns/default/sa/sleep",
		"source_app":                     "unknown",
		"source_version":                 "unknown",
		"source_canonical_service":       "unknown",
		"source_canonical_revision":      "unknown",
		"source_cluster":                 "unknown",
		"destination_workload":           "db",
		"destination_workload_namespace": "data",
		"destination_principal":          "unknown",
		"destination_app":                "unknown",
		"destination_version":            "unknown",
		"destination_canonical_service":  "unknown",
		"destination_canonical_revision": "unknown",
		"destination_cluster":            "unknown",
		"destination_service":            "db.data.svc.cluster.local",
		"destination_service_name":       "db",
		"destination_service_namespace":  "data",
		"request_protocol":               "tcp",
		"response_flags":                 "-",
		"connection_security_policy":     "mutual_tls",
	}
	for name, want := range map[string]float64{
		"istio_tcp_connections_opened_total": 2,
		"istio_tcp_connections_closed_total": 1,
		"istio_tcp_sent_bytes_total":         1000,
		"istio_tcp_received_bytes_total":     100,
	} {
		series := scrape(t, m.Registry(), name)
		if len(series) != 1 {
			t.Fatalf("%s has %d series, want 1", name, len(series))
		}
		if got := labelMap(series[0]); fmt.Sprint(got) != fmt.Sprint(wantLabels) {
			t.Errorf("%s labels:\n got %v\nwant %v", name, got, wantLabels)
		}
		if got := series[0].GetCounter().GetValue(); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if families, _ := m.Registry().Gather(); hasFamily(families, "istio_requests_total") {
		t.Error("TCP connections made istio_requests_total series")
	}
}

func hasFamily(families []*dto.MetricFamily, name string) bool {
	for _, f := range families {
		if f.GetName() == name {
			return true
		}
	}
	return false
}

func TestFilterCountersAndStats(t *testing.T) {
	m := NewMetrics(nil)
	m.RBACDenied("deny")
	m.RBACDenied("deny")
	m.RBACAllowed("allow")
	m.JWTFailed(401)
	m.Retried("outbound|9080||reviews.bookinfo.svc.cluster.local")
	m.Mirrored("outbound|9080||reviews-shadow.bookinfo.svc.cluster.local")
	m.DelayInjected()
	m.AbortInjected()
	m.AbortInjected()

	var out bytes.Buffer
	if err := m.WriteStats(&out); err != nil {
		t.Fatal(err)
	}
	want := `ambientmesh_waypoint_fault_aborts_injected_total: 2
ambientmesh_waypoint_fault_delays_injected_total: 1
ambientmesh_waypoint_jwt_failures_total{response_code="401"}: 1
ambientmesh_waypoint_mirrored_requests_total{cluster="outbound|9080||reviews-shadow.bookinfo.svc.cluster.local"}: 1
ambientmesh_waypoint_rbac_allowed_total{listener="allow"}: 1
ambientmesh_waypoint_rbac_denied_total{listener="deny"}: 2
ambientmesh_waypoint_retries_total{cluster="outbound|9080||reviews.bookinfo.svc.cluster.local"}: 1
`
	if out.String() != want {
		t.Errorf("WriteStats:\n%s\nwant:\n%s", out.String(), want)
	}

	// The same counters are on the metrics port.
	denied := scrape(t, m.Registry(), "ambientmesh_waypoint_rbac_denied_total")
	if len(denied) != 1 || labelMap(denied[0])["listener"] != "deny" || denied[0].GetCounter().GetValue() != 2 {
		t.Errorf("ambientmesh_waypoint_rbac_denied_total = %v, want {listener=\"deny\"} 2", denied)
	}
}

func TestNewMetricsRegistersRuntimeCollectorsOnce(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector()) // e.g. registered by the waypoint's main already
	m := NewMetrics(reg)
	if m.Registry() != reg {
		t.Fatal("Registry() is not the registry given")
	}
	scrape(t, reg, "go_goroutines")
	scrape(t, NewMetrics(nil).Registry(), "go_goroutines")
}

func TestObserveRequestConcurrently(t *testing.T) {
	m := NewMetrics(nil)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			l := productpage
			l.ResponseCode = 200 + i%2
			for range 1000 {
				m.ObserveRequest(l, time.Millisecond, 1, 1)
			}
		})
	}
	wg.Wait()
	var total float64
	for _, s := range scrape(t, m.Registry(), "istio_requests_total") {
		total += s.GetCounter().GetValue()
	}
	if total != 8000 {
		t.Errorf("istio_requests_total sums to %v, want 8000", total)
	}
}

// The waypoint observes every request: once a label set has been seen,
// observing it again must not allocate.
func BenchmarkObserveRequest(b *testing.B) {
	m := NewMetrics(nil)
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m.ObserveRequest(productpage, 3*time.Millisecond, 512, 4096)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				m.ObserveRequest(productpage, 3*time.Millisecond, 512, 4096)
			}
		})
	})
}

func TestObserveRequestDoesNotAllocate(t *testing.T) {
	m := NewMetrics(nil)
	m.ObserveRequest(productpage, time.Millisecond, 1, 1)
	if allocs := testing.AllocsPerRun(100, func() {
		m.ObserveRequest(productpage, time.Millisecond, 1, 1)
		m.TCPOpened(productpage)
	}); allocs != 0 {
		t.Errorf("ObserveRequest/TCPOpened allocate %v times per call, want 0", allocs)
	}
}

package metrics

import (
	"maps"
	"testing"

	dto "github.com/prometheus/client_model/go"

	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
)

// seriesLabels records one connection with l and returns the labels of its
// istio_tcp_connections_opened_total series.
func seriesLabels(t *testing.T, l Labels) map[string]string {
	t.Helper()
	m := New()
	m.Opened(l)
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "istio_tcp_connections_opened_total" {
			continue
		}
		if len(f.GetMetric()) != 1 {
			t.Fatalf("%d series, want 1", len(f.GetMetric()))
		}
		return labelMap(f.GetMetric()[0])
	}
	t.Fatal("istio_tcp_connections_opened_total is not in the scrape")
	return nil
}

func labelMap(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// allUnknown is every label of a connection nothing is known of, but its reporter and
// security policy.
func allUnknown() map[string]string {
	out := map[string]string{}
	for _, name := range labelNames {
		out[name] = "unknown"
	}
	out["reporter"] = ReporterSource
	out["request_protocol"] = "tcp"
	out["response_flags"] = "-"
	out["connection_security_policy"] = SecurityMutualTLS
	return out
}

func TestLabelsFromWorkloadsAndService(t *testing.T) {
	productpage := &pb.Workload{Name: "productpage-v1-5d8f-abcde", Namespace: "bookinfo", WorkloadName: "productpage-v1",
		CanonicalName: "productpage", CanonicalRevision: "v1", App: "productpage", Version: "v1", ClusterId: "Kubernetes"}
	reviews := &pb.Workload{Name: "reviews-v2-x", Namespace: "bookinfo",
		CanonicalName: "reviews", CanonicalRevision: "latest", ClusterId: "east"}
	reviewsSvc := &pb.Service{Name: "reviews", Namespace: "bookinfo", Hostname: "reviews.bookinfo.svc.cluster.local"}

	for _, tc := range []struct {
		name string
		fill func(*Labels)
		want map[string]string // changes to allUnknown
	}{
		{"nothing known", func(*Labels) {}, nil},
		{"source workload", func(l *Labels) { l.SetSource(productpage) }, map[string]string{
			"source_workload": "productpage-v1", "source_workload_namespace": "bookinfo",
			"source_canonical_service": "productpage", "source_canonical_revision": "v1",
			"source_app": "productpage", "source_version": "v1", "source_cluster": "Kubernetes",
		}},
		{"destination workload without app and version labels: pod name, unknown app and version", func(l *Labels) { l.SetDestination(reviews) }, map[string]string{
			"destination_workload": "reviews-v2-x", "destination_workload_namespace": "bookinfo",
			"destination_canonical_service": "reviews", "destination_canonical_revision": "latest", "destination_cluster": "east",
		}},
		{"destination service", func(l *Labels) { l.SetDestinationService(reviewsSvc) }, map[string]string{
			"destination_service": "reviews.bookinfo.svc.cluster.local", "destination_service_name": "reviews",
			"destination_service_namespace": "bookinfo",
		}},
		{"nil workloads and service leave what is known", func(l *Labels) {
			l.SourcePrincipal = "spiffe://cluster.local/ns/bookinfo/sa/productpage"
			l.SetSource(nil)
			l.SetDestination(nil)
			l.SetDestinationService(nil)
		}, map[string]string{"source_principal": "spiffe://cluster.local/ns/bookinfo/sa/productpage"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := Labels{Reporter: ReporterSource, ConnectionSecurityPolicy: SecurityMutualTLS}
			tc.fill(&l)
			want := allUnknown()
			maps.Copy(want, tc.want)
			got := seriesLabels(t, l)
			if !maps.Equal(got, want) {
				t.Errorf("labels:\n got %v\nwant %v", got, want)
			}
		})
	}
}

func TestBytesCountsEachDirection(t *testing.T) {
	m := New()
	l := Labels{Reporter: ReporterDestination, ConnectionSecurityPolicy: SecurityNone}
	m.Bytes(l, 10, 0)
	m.Bytes(l, 5, 7)
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, s := range f.GetMetric() {
			got[f.GetName()] += s.GetCounter().GetValue()
		}
	}
	if got["istio_tcp_received_bytes_total"] != 15 || got["istio_tcp_sent_bytes_total"] != 7 {
		t.Errorf("received %v sent %v, want 15 and 7", got["istio_tcp_received_bytes_total"], got["istio_tcp_sent_bytes_total"])
	}
}

package ztunnel_test

import (
	"maps"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/internal/testwait"
)

// Both ztunnels name both ends of a connection with the telemetry fields of the
// Workloads the control plane sent (derived there from the pods' labels), and the
// destination Service by hostname, name and namespace.
func TestMetricsNameWorkloadsByTheirPodLabels(t *testing.T) {
	m := newMesh(t, true, 5*time.Second)
	const svcName = "shop/echo.shop.svc.cluster.local"
	client := workload("client-uid", "client", "client", "127.10.0.2")
	client.WorkloadName, client.CanonicalName, client.CanonicalRevision = "sleep", "sleep", "latest"
	client.App, client.ClusterId = "sleep", "Kubernetes"
	server := workload("server-uid", "server", "server", "127.10.0.3")
	server.WorkloadName, server.CanonicalName, server.CanonicalRevision = "echo-v2", "echo", "v2"
	server.App, server.Version, server.ClusterId = "echo", "v2", "Kubernetes"
	server.Services = map[string]*pb.PortList{svcName: {Ports: []*pb.Port{{ServicePort: 80, TargetPort: 8080}}}}
	m.xds.Set(t, pb.WorkloadTypeURL, map[string]proto.Message{"client-uid": client, "server-uid": server})
	m.xds.Set(t, pb.ServiceTypeURL, map[string]proto.Message{svcName: &pb.Service{Name: "echo", Namespace: "shop",
		Hostname: "echo.shop.svc.cluster.local", Vips: []string{"10.96.7.7"}, Ports: []*pb.Port{{ServicePort: 80, TargetPort: 8080}}}})
	testwait.For(t, "the telemetry fields and the service on both ztunnels", 10*time.Second, func() bool {
		return ready(m.a) && ready(m.b) && m.a.Store.ServiceByVIP(netip.MustParseAddr("10.96.7.7")) != nil &&
			m.a.Store.Workload("server-uid").GetCanonicalName() == "echo" && m.b.Store.Workload("client-uid").GetCanonicalName() == "sleep"
	})

	c := m.client.connect(t, 15001, "10.96.7.7:80")
	if got, err := roundTrip(c, "hi"); err != nil || got != "echo hi" {
		t.Fatalf("through the VIP: %q %v", got, err)
	}
	source := map[string]string{
		"source_workload": "sleep", "source_workload_namespace": "shop",
		"source_canonical_service": "sleep", "source_canonical_revision": "latest",
		"source_app": "sleep", "source_version": "unknown", "source_cluster": "Kubernetes",
	}
	destination := map[string]string{
		"destination_workload": "echo-v2", "destination_workload_namespace": "shop",
		"destination_canonical_service": "echo", "destination_canonical_revision": "v2",
		"destination_app": "echo", "destination_version": "v2", "destination_cluster": "Kubernetes",
		"response_flags": "-", "request_protocol": "tcp",
	}
	outbound := map[string]string{"reporter": "source", "destination_service": "echo.shop.svc.cluster.local",
		"destination_service_name": "echo", "destination_service_namespace": "shop"}
	maps.Copy(outbound, source)
	maps.Copy(outbound, destination)
	if v := counter(t, m.a, "istio_tcp_connections_opened_total", outbound); v != 1 {
		t.Errorf("source ztunnel: istio_tcp_connections_opened_total%v = %v, want 1", outbound, v)
	}
	inbound := map[string]string{"reporter": "destination"}
	maps.Copy(inbound, source)
	maps.Copy(inbound, destination)
	if v := counter(t, m.b, "istio_tcp_connections_opened_total", inbound); v != 1 {
		t.Errorf("destination ztunnel: istio_tcp_connections_opened_total%v = %v, want 1", inbound, v)
	}
}

// Istio's scrape configs read ztunnel's metrics at /stats/prometheus; /metrics stays.
func TestMetricsServedAtStatsPrometheus(t *testing.T) {
	m := newMesh(t, true, 5*time.Second)
	testwait.For(t, "both ztunnels ready", 10*time.Second, func() bool { return ready(m.a) && ready(m.b) })
	if got, err := roundTrip(m.client.connect(t, 15001, "127.10.0.3:8080"), "hi"); err != nil || got != "echo hi" {
		t.Fatalf("round trip: %q %v", got, err)
	}
	for _, path := range []string{"/stats/prometheus", "/metrics"} {
		rec := httptest.NewRecorder()
		m.a.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != 200 || !strings.Contains(rec.Body.String(), `istio_tcp_connections_opened_total{`) {
			t.Errorf("GET %s = %d, without istio_tcp_connections_opened_total:\n%.500s", path, rec.Code, rec.Body.String())
		}
	}
}

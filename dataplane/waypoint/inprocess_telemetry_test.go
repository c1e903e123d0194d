package waypoint_test

import (
	"net/netip"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/structpb"

	wt "github.com/ambientmesh/ambient-operator/dataplane/waypoint/waypointtest"
)

// The destination labels come from the telemetry names the control plane puts in the
// endpoint metadata; the client is known only by its identity, the rest of the source
// stays "unknown" (the waypoint has no workload API).
func TestMetricsNameTheDestinationFromEndpointMetadata(t *testing.T) {
	m := wt.Start(t, wt.Options{})
	v2 := m.Backend("reviews-v2", echo("v2"))
	endpoints := wt.Endpoints("v2", v2)
	md := endpoints.GetEndpoints()[0].GetLbEndpoints()[0].GetMetadata().GetFilterMetadata()["ambientmesh.dev/endpoint"]
	for k, v := range map[string]string{"workload": "reviews-v2", "canonical_service": "reviews", "canonical_revision": "v2",
		"app": "reviews", "version": "v2", "cluster": "Kubernetes"} {
		md.Fields[k] = structpb.NewStringValue(v)
	}
	pushReviews(t, m, nil, []*routev3.Route{route("default", prefix("/"), toCluster("v2"))}, wt.Cluster("v2"), endpoints)
	get(t, m.Client(wt.ClientID, netip.Addr{}, false), "/", nil)

	want := map[string]string{
		"response_code": "200", "response_flags": "-",
		"source_principal": wt.ClientID.String(), "source_workload_namespace": wt.ClientID.Namespace,
		"source_workload": "unknown", "source_canonical_service": "unknown", "source_canonical_revision": "unknown",
		"source_app": "unknown", "source_version": "unknown", "source_cluster": "unknown",
		"destination_principal": v2.ID.String(), "destination_workload_namespace": v2.ID.Namespace,
		"destination_workload": "reviews-v2", "destination_canonical_service": "reviews", "destination_canonical_revision": "v2",
		"destination_app": "reviews", "destination_version": "v2", "destination_cluster": "Kubernetes",
		"destination_service": reviews, "destination_service_name": "reviews", "destination_service_namespace": "shop",
	}
	if got := metric(t, m, "istio_requests_total", want); got != 1 {
		t.Errorf("istio_requests_total%v = %v, want 1", want, got)
	}
}

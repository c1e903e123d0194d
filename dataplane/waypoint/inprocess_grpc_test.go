package waypoint_test

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	wt "github.com/ambientmesh/ambient-operator/dataplane/waypoint/waypointtest"
)

// trailingHealth is the standard health service that also sends a trailer of its own,
// so the client can tell that trailers crossed the waypoint.
type trailingHealth struct{ *health.Server }

func (h trailingHealth) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	if err := grpc.SetTrailer(ctx, metadata.Pairs("x-checked-by", "reviews-grpc")); err != nil {
		return nil, err
	}
	return h.Server.Check(ctx, req)
}

func TestGRPCThroughTheWaypoint(t *testing.T) {
	m := wt.Start(t, wt.Options{})
	hs := health.NewServer()
	hs.SetServingStatus("reviews", healthpb.HealthCheckResponse_SERVING)
	b := m.GRPCBackend("reviews-grpc", func(s *grpc.Server) { healthpb.RegisterHealthServer(s, trailingHealth{hs}) })
	pushReviews(t, m, nil, []*routev3.Route{route("grpc", prefix("/"), toCluster("grpc"))}, wt.Cluster("grpc"), wt.Endpoints("grpc", b))

	// The gRPC client's connections are HBONE streams to the waypoint with the reviews
	// VIP as target, as a client's ztunnel would open them.
	tunnel := m.Dialer(wt.ClientID, netip.Addr{})
	conn, err := grpc.NewClient("passthrough:///"+reviewsVIP.String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return tunnel(ctx, netip.MustParseAddrPort(addr))
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := healthpb.NewHealthClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	var trailer metadata.MD
	resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "reviews"}, grpc.Trailer(&trailer))
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Check(reviews) = %v, %v; want SERVING", resp, err)
	}
	if got := trailer.Get("x-checked-by"); len(got) != 1 || got[0] != "reviews-grpc" {
		t.Errorf("trailer x-checked-by = %q, want the server's trailer", got)
	}

	trailer = nil
	_, err = client.Check(ctx, &healthpb.HealthCheckRequest{Service: "no-such-service"}, grpc.Trailer(&trailer))
	if st := status.Convert(err); st.Code() != codes.NotFound || st.Message() != "unknown service" {
		t.Errorf("Check(no-such-service) = %v, want NOT_FOUND unknown service (status trailers kept)", err)
	}
	if got := trailer.Get("x-checked-by"); len(got) != 1 || got[0] != "reviews-grpc" {
		t.Errorf("trailer x-checked-by with the error = %q, want the server's trailer", got)
	}
	if got := b.Requests.Load(); got != 2 {
		t.Errorf("the gRPC server served %d calls, want 2", got)
	}
	for _, code := range []string{"0", "5"} {
		if got := metric(t, m, "istio_requests_total", map[string]string{"request_protocol": "grpc", "response_code": "200", "grpc_response_status": code}); got != 1 {
			t.Errorf("istio_requests_total{request_protocol=grpc,grpc_response_status=%s} = %v, want 1", code, got)
		}
	}
}

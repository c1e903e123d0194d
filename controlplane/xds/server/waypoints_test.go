package server

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"net"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ambientmesh/ambient-operator/controlplane/xds/waypoint"
	"github.com/ambientmesh/ambient-operator/internal/testca"
)

// testPeer stands in for the mesh's authentication: the client names its service
// account in the "test-peer" metadata as <namespace>/<name>, and the node its credentials
// are bound to as <namespace>/<name>@<node>.
func testPeer(ctx context.Context) (Peer, bool) {
	md, _ := metadata.FromIncomingContext(ctx)
	v := md.Get("test-peer")
	if len(v) != 1 {
		return Peer{}, false
	}
	account, node, _ := strings.Cut(v[0], "@")
	ns, sa, ok := strings.Cut(account, "/")
	return Peer{Namespace: ns, ServiceAccount: sa, Node: node}, ok
}

func startServer(t *testing.T) (*Server, string) {
	t.Helper()
	return startServerWith(t, Options{Debounce: -1, PeerIdentity: testPeer, NodeAgents: []string{"ambient-system/ztunnel"}})
}

func startServerWith(t *testing.T, opts Options) (*Server, string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := New(ctx, opts)
	g := grpc.NewServer()
	s.Register(g)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(func() { g.Stop(); cancel() })
	return s, lis.Addr().String()
}

// deltaStream opens a delta ADS stream as peer, announcing node cluster.
func deltaStream(t *testing.T, addr, peer string) discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	ctx = metadata.AppendToOutgoingContext(ctx, "test-peer", peer)
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return stream
}

func subscribe(t *testing.T, s discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient, nodeCluster, typeURL string, names ...string) {
	t.Helper()
	req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: typeURL, ResourceNamesSubscribe: names}
	if nodeCluster != "" { // the node rides on the stream's first request only
		req.Node = &corev3.Node{Id: "pod-1.shop", Cluster: nodeCluster}
	}
	if err := s.Send(req); err != nil {
		t.Fatal(err)
	}
}

func ack(t *testing.T, s discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient, resp *discoveryv3.DeltaDiscoveryResponse) {
	t.Helper()
	if err := s.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()}); err != nil {
		t.Fatal(err)
	}
}

func names(resp *discoveryv3.DeltaDiscoveryResponse) []string {
	var out []string
	for _, r := range resp.GetResources() {
		out = append(out, r.GetName())
	}
	sort.Strings(out)
	return out
}

func listeners(names ...string) map[string]map[string]proto.Message {
	out := map[string]map[string]proto.Message{resourcev3.ListenerType: {}, resourcev3.RouteType: {}}
	for _, n := range names {
		out[resourcev3.ListenerType][n] = &listenerv3.Listener{Name: n}
		out[resourcev3.RouteType][n] = &routev3.RouteConfiguration{Name: n}
	}
	return out
}

func TestWaypointGetsOnlyItsOwnResources(t *testing.T) {
	s, addr := startServer(t)
	if _, err := s.Waypoints().Set("shop", "wp", listeners("web.shop.svc.cluster.local:80"), WaypointContents{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Waypoints().Set("shop", "other", listeners("api.shop.svc.cluster.local:80"), WaypointContents{}); err != nil {
		t.Fatal(err)
	}
	stream := deltaStream(t, addr, "shop/wp")
	subscribe(t, stream, waypoint.NodeCluster("shop", "wp"), resourcev3.ListenerType)
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if got := names(resp); len(got) != 1 || got[0] != "web.shop.svc.cluster.local:80" {
		t.Fatalf("wildcard LDS of shop/wp returned %v, want only its own listener", got)
	}

	// An edit that changes one RouteConfiguration sends that one resource.
	ack(t, stream, resp)
	subscribe(t, stream, "", resourcev3.RouteType, "web.shop.svc.cluster.local:80")
	if resp, err = stream.Recv(); err != nil {
		t.Fatal(err)
	}
	ack(t, stream, resp) // the server watches for the next version once the client ACKs
	edited := listeners("web.shop.svc.cluster.local:80")
	edited[resourcev3.RouteType]["web.shop.svc.cluster.local:80"] = &routev3.RouteConfiguration{
		Name: "web.shop.svc.cluster.local:80", VirtualHosts: []*routev3.VirtualHost{{Name: "x", Domains: []string{"*"}}},
	}
	changed, err := s.Waypoints().Set("shop", "wp", edited, WaypointContents{})
	if err != nil || changed != 1 {
		t.Fatalf("Set = %d, %v; want 1 changed resource", changed, err)
	}
	resp, err = stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetTypeUrl() != resourcev3.RouteType || len(resp.GetResources()) != 1 {
		t.Fatalf("push after the edit = %s with %v, want the one RouteConfiguration", resp.GetTypeUrl(), names(resp))
	}
}

func TestWaypointResourcesRefusedToOthers(t *testing.T) {
	_, addr := startServer(t)
	for _, tc := range []struct {
		name, peer, nodeCluster, want string
	}{
		{"another waypoint's identity", "shop/other", waypoint.NodeCluster("shop", "wp"), "authenticated as shop/other"},
		{"same name, other namespace", "prod/wp", waypoint.NodeCluster("shop", "wp"), "authenticated as prod/wp"},
		{"not a waypoint node", "ambient-system/ztunnel", "ztunnel", "neither a ztunnel"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stream := deltaStream(t, addr, tc.peer)
			subscribe(t, stream, tc.nodeCluster, resourcev3.ClusterType)
			_, err := stream.Recv()
			if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want PermissionDenied mentioning %q", err, tc.want)
			}
		})
	}
}

func TestWaypointNodeCannotChangeMidStream(t *testing.T) {
	_, addr := startServer(t)
	stream := deltaStream(t, addr, "shop/wp")
	subscribe(t, stream, waypoint.NodeCluster("shop", "wp"), resourcev3.ListenerType)
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	subscribe(t, stream, waypoint.NodeCluster("shop", "other"), resourcev3.ClusterType)
	if _, err := stream.Recv(); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("got %v, want InvalidArgument for a changed node", err)
	}
}

// rootCA reads the roots (PEM, one per certificate) of the ROOTCA Secret in a response,
// checking it as a waypoint would: ValidateAll, then every PEM block a certificate.
func rootCA(t *testing.T, resp *discoveryv3.DeltaDiscoveryResponse) []string {
	t.Helper()
	if got := names(resp); len(got) != 1 || got[0] != RootCASecretName {
		t.Fatalf("Secrets pushed: %v, want only %s", got, RootCASecretName)
	}
	secret := &tlsv3.Secret{}
	if err := resp.GetResources()[0].GetResource().UnmarshalTo(secret); err != nil {
		t.Fatal(err)
	}
	if err := secret.ValidateAll(); err != nil {
		t.Fatalf("ROOTCA does not validate: %v", err)
	}
	var roots []string
	rest := secret.GetValidationContext().GetTrustedCa().GetInlineBytes()
	for {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		if _, err := x509.ParseCertificate(block.Bytes); block.Type != "CERTIFICATE" || err != nil {
			t.Fatalf("ROOTCA holds a %s block that is not a certificate (%v)", block.Type, err)
		}
		roots = append(roots, string(pem.EncodeToMemory(block)))
	}
	return roots
}

func TestWaypointsGetTheTrustBundleAsROOTCA(t *testing.T) {
	s, addr := startServer(t)
	rootA, rootB := testca.New(t).PEM, testca.New(t).PEM

	// Before the control plane has a bundle, a waypoint still gets an answer (without
	// resources), so that its configuration is complete without one.
	early := deltaStream(t, addr, "shop/wp")
	subscribe(t, early, waypoint.NodeCluster("shop", "wp"), resourcev3.SecretType)
	resp, err := early.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetResources()) != 0 {
		t.Fatalf("Secrets before any bundle: %v, want none", names(resp))
	}
	ack(t, early, resp)

	if changed, err := s.Waypoints().SetTrustBundle([]string{rootA}); err != nil || !changed {
		t.Fatalf("SetTrustBundle(A) = %v, %v; want a change", changed, err)
	}
	if resp, err = early.Recv(); err != nil {
		t.Fatal(err)
	}
	if got := rootCA(t, resp); !slices.Equal(got, []string{rootA}) {
		t.Fatalf("ROOTCA holds %d roots, want root A only", len(got))
	}
	ack(t, early, resp)

	// A rotation: the bundle gains the new root; connected waypoints are pushed it,
	// and a waypoint connecting later gets the current bundle.
	if changed, err := s.Waypoints().SetTrustBundle([]string{rootB, rootA}); err != nil || !changed {
		t.Fatalf("SetTrustBundle(B, A) = %v, %v; want a change", changed, err)
	}
	if resp, err = early.Recv(); err != nil {
		t.Fatal(err)
	}
	if got := rootCA(t, resp); !slices.Equal(got, []string{rootB, rootA}) {
		t.Fatal("after the rotation ROOTCA does not hold root B then root A")
	}
	late := deltaStream(t, addr, "prod/other")
	subscribe(t, late, waypoint.NodeCluster("prod", "other"), resourcev3.SecretType)
	if resp, err = late.Recv(); err != nil {
		t.Fatal(err)
	}
	if got := rootCA(t, resp); !slices.Equal(got, []string{rootB, rootA}) {
		t.Fatal("a waypoint connecting after the rotation does not get root B then root A")
	}

	if changed, err := s.Waypoints().SetTrustBundle([]string{rootB, rootA}); err != nil || changed {
		t.Fatalf("SetTrustBundle with the same roots = %v, %v; want no change", changed, err)
	}
}

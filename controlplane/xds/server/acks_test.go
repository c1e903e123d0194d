package server

import (
	"context"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controlplane/xds/waypoint"
)

const listenerName = "web.shop.svc.cluster.local:80"

func oneListener(statPrefix string) map[string]map[string]proto.Message {
	return map[string]map[string]proto.Message{resourcev3.ListenerType: {
		listenerName: &listenerv3.Listener{Name: listenerName, StatPrefix: statPrefix},
	}}
}

func nack(t *testing.T, s discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient, resp *discoveryv3.DeltaDiscoveryResponse, reason string) {
	t.Helper()
	if err := s.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce(),
		ErrorDetail: &rpcstatus.Status{Code: 3, Message: reason}}); err != nil {
		t.Fatal(err)
	}
}

func recv(t *testing.T, s discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient) *discoveryv3.DeltaDiscoveryResponse {
	t.Helper()
	resp, err := s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// waitFor reads change notifications until cond holds: the state a test waits for must
// be announced on the channel, not found by polling.
func waitFor(t *testing.T, changes <-chan AckChange, what string, cond func() bool) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for !cond() {
		select {
		case <-changes:
		case <-timeout:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func watchAcks(t *testing.T, s *Server) <-chan AckChange {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return s.WatchAcks(ctx)
}

func TestWaypointSyncFollowsNackThenAck(t *testing.T) {
	s, addr := startServer(t)
	changes := watchAcks(t, s)
	contents := WaypointContents{Policies: map[string]int64{"shop/deny-post": 3}, Services: []string{"shop/web"}}
	if _, err := s.Waypoints().Set("shop", "wp", oneListener("v1"), contents); err != nil {
		t.Fatal(err)
	}
	st := s.Waypoint("shop", "wp")
	if !st.Published || st.Contents.Policies["shop/deny-post"] != 3 || st.Connected != 0 || st.Synced {
		t.Fatalf("before any proxy connects: %+v, want published, not connected, not synced", st)
	}

	stream := deltaStream(t, addr, "shop/wp")
	subscribe(t, stream, waypoint.NodeCluster("shop", "wp"), resourcev3.ListenerType)
	nack(t, stream, recv(t, stream), "listener web: unsupported filter")
	waitFor(t, changes, "the NACK", func() bool { return s.Waypoint("shop", "wp").LastNack != "" })
	if st := s.Waypoint("shop", "wp"); st.Synced || st.Connected != 1 || st.LastNack != "listener web: unsupported filter" {
		t.Fatalf("after a NACK: %+v, want connected, not synced, the NACK's reason", st)
	}

	if _, err := s.Waypoints().Set("shop", "wp", oneListener("v2"), contents); err != nil {
		t.Fatal(err)
	}
	if s.Waypoint("shop", "wp").Synced {
		t.Fatal("synced before the new version was even sent")
	}
	ack(t, stream, recv(t, stream))
	waitFor(t, changes, "the ACK", func() bool { return s.Waypoint("shop", "wp").Synced })
	if st := s.Waypoint("shop", "wp"); st.LastNack != "" {
		t.Fatalf("after the ACK the NACK is still reported: %q", st.LastNack)
	}

	// A second replica that has not answered yet holds the waypoint back.
	second := deltaStream(t, addr, "shop/wp")
	if err := second.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.ListenerType,
		Node: &corev3.Node{Id: "pod-2.shop", Cluster: waypoint.NodeCluster("shop", "wp")}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, changes, "the second replica", func() bool { return s.Waypoint("shop", "wp").Connected == 2 })
	if s.Waypoint("shop", "wp").Synced {
		t.Fatal("synced while the second replica holds nothing")
	}
	ack(t, second, recv(t, second))
	waitFor(t, changes, "the second replica's ACK", func() bool { return s.Waypoint("shop", "wp").Synced })
}

func TestReconnectingWaypointHoldsWhatItAnnounces(t *testing.T) {
	s, addr := startServer(t)
	changes := watchAcks(t, s)
	res := oneListener("v1")
	if _, err := s.Waypoints().Set("shop", "wp", res, WaypointContents{Services: []string{"shop/web"}}); err != nil {
		t.Fatal(err)
	}
	stream := deltaStream(t, addr, "shop/wp")
	if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{
		TypeUrl: resourcev3.ListenerType, Node: &corev3.Node{Id: "pod-1.shop", Cluster: waypoint.NodeCluster("shop", "wp")},
		InitialResourceVersions: map[string]string{listenerName: ResourceVersion(res[resourcev3.ListenerType][listenerName])},
	}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, changes, "the announced versions", func() bool { return s.Waypoint("shop", "wp").Synced })
}

func TestZTunnelSyncCountsOnlyTheNodesOwnZTunnel(t *testing.T) {
	s, addr := startServer(t)
	changes := watchAcks(t, s)
	name := pb.AuthorizationResourceName("shop", "allow-frontend")
	authz := &pb.Authorization{Name: "allow-frontend", Namespace: "shop", Action: pb.AuthorizationAction_AUTHORIZATION_ACTION_ALLOW}
	s.Publisher().Set(pb.AuthorizationTypeURL, name, authz)
	want := map[string]map[string]string{pb.AuthorizationTypeURL: {name: ResourceVersion(authz)}}

	for _, tc := range []struct{ peer, node, refusal string }{
		{"ambient-system/ztunnel@node-a", "node-a", ""},
		{"shop/web@node-b", "node-b", "not a ztunnel service account"},
		{"ambient-system/ztunnel@node-a", "node-b", `bound to node "node-a"`},
	} {
		stream := deltaStream(t, addr, tc.peer)
		if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: pb.AuthorizationTypeURL,
			Node: &corev3.Node{Id: ZTunnelNodeID(tc.node), Cluster: "ztunnel"}}); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if tc.refusal != "" {
			if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), tc.refusal) {
				t.Fatalf("%s claiming %s: got %v, want PermissionDenied mentioning %q", tc.peer, tc.node, err, tc.refusal)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.GetResources()[0].GetVersion(); got != want[pb.AuthorizationTypeURL][name] {
			t.Fatalf("the cache sent version %s, ResourceVersion says %s", got, want[pb.AuthorizationTypeURL][name])
		}
		ack(t, stream, resp)
	}
	waitFor(t, changes, "node-a's ACK", func() bool { return s.ZTunnel("node-a", want).Synced })
	if st := s.ZTunnel("node-b", want); st.Connected != 0 {
		t.Fatalf("a client claiming to be node-b's ztunnel counts: %+v", st)
	}
	stale := map[string]map[string]string{pb.AuthorizationTypeURL: {name: "another-version"}}
	if s.ZTunnel("node-a", stale).Synced {
		t.Fatal("node-a reported holding a version it was never sent")
	}
}

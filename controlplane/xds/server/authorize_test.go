package server

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controlplane/xds/waypoint"
	"github.com/ambientmesh/ambient-operator/internal/testwait"
)

var testNodeAgents = []string{"ambient-system/ztunnel"}

func TestAuthorize(t *testing.T) {
	ztunnelOn := func(node string) Peer {
		return Peer{Namespace: "ambient-system", ServiceAccount: "ztunnel", Node: node}
	}
	ztunnelNode := &corev3.Node{Id: ZTunnelNodeID("node-a"), Cluster: "ztunnel"}
	waypointNode := &corev3.Node{Id: "wp-1.shop", Cluster: waypoint.NodeCluster("shop", "wp")}
	wp := Peer{Namespace: "shop", ServiceAccount: "wp"}
	for _, tc := range []struct {
		name    string
		peer    Peer
		noPeer  bool
		node    *corev3.Node
		typeURL string
		refusal string // "" admits
	}{
		{"ztunnel bound to its node", ztunnelOn("node-a"), false, ztunnelNode, pb.WorkloadTypeURL, ""},
		{"ztunnel, every workload API type", ztunnelOn("node-a"), false, ztunnelNode, pb.TrustBundleTypeURL, ""},
		{"ztunnel claiming another node", ztunnelOn("node-b"), false, ztunnelNode, pb.WorkloadTypeURL, `bound to node "node-b"`},
		{"ztunnel credentials bound to no node", ztunnelOn(""), false, ztunnelNode, pb.WorkloadTypeURL, "bound to no node"},
		{"workload claiming a ztunnel", Peer{Namespace: "shop", ServiceAccount: "web", Node: "node-a"}, false, ztunnelNode, pb.WorkloadTypeURL, "not a ztunnel service account"},
		{"ztunnel asking for Envoy types", ztunnelOn("node-a"), false, ztunnelNode, resourcev3.ListenerType, "workload API only"},
		{"ztunnel id with an empty node", ztunnelOn(""), false, &corev3.Node{Id: ZTunnelNodeID("")}, pb.WorkloadTypeURL, "bound to no node"},
		{"waypoint as its own service account", wp, false, waypointNode, resourcev3.RouteType, ""},
		{"waypoint, the trust bundle (SDS Secret ROOTCA)", wp, false, waypointNode, resourcev3.SecretType, ""},
		{"ztunnel asking for the waypoints' trust bundle", ztunnelOn("node-a"), false, ztunnelNode, resourcev3.SecretType, "workload API only"},
		{"waypoint asking for workloads", wp, false, waypointNode, pb.WorkloadTypeURL, "Envoy resources only"},
		{"waypoint of another service account", Peer{Namespace: "shop", ServiceAccount: "other"}, false, waypointNode, resourcev3.ListenerType, "authenticated as shop/other"},
		{"waypoint of another namespace", Peer{Namespace: "prod", ServiceAccount: "wp"}, false, waypointNode, resourcev3.ListenerType, "authenticated as prod/wp"},
		{"node agent claiming a waypoint", ztunnelOn("node-a"), false, waypointNode, resourcev3.ListenerType, "not the waypoint's service account"},
		{"neither ztunnel nor waypoint", ztunnelOn("node-a"), false, &corev3.Node{Id: "debug-client"}, pb.WorkloadTypeURL, "neither a ztunnel"},
		{"not authenticated", Peer{}, true, ztunnelNode, pb.WorkloadTypeURL, "not authenticated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := authorize(tc.peer, !tc.noPeer, testNodeAgents, tc.node, tc.typeURL)
			if tc.refusal == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), tc.refusal) {
				t.Fatalf("got %v, want PermissionDenied mentioning %q", err, tc.refusal)
			}
		})
	}
}

// FuzzAuthorize: the node comes from the client. Whatever it claims, authorize must not
// panic, must refuse with PermissionDenied, and may admit only a ztunnel bound to the node
// it names or the waypoint whose service account it authenticated as.
func FuzzAuthorize(f *testing.F) {
	f.Add("ambient-system", "ztunnel", "node-a", "ztunnel~node-a", "ztunnel", pb.WorkloadTypeURL)
	f.Add("shop", "wp", "", "wp-1.shop", "waypoint/shop/wp", resourcev3.ListenerType)
	f.Add("shop", "wp", "", "ztunnel~", "waypoint/shop/wp/x", pb.WorkloadTypeURL)
	f.Fuzz(func(t *testing.T, ns, sa, boundNode, nodeID, cluster, typeURL string) {
		peer := Peer{Namespace: ns, ServiceAccount: sa, Node: boundNode}
		err := authorize(peer, true, testNodeAgents, &corev3.Node{Id: nodeID, Cluster: cluster}, typeURL)
		if err != nil {
			if status.Code(err) != codes.PermissionDenied {
				t.Fatalf("refused with %v, want PermissionDenied", err)
			}
			return
		}
		if wpNS, wpName, ok := waypoint.ParseNodeCluster(cluster); ok {
			if wpNS != ns || wpName != sa {
				t.Fatalf("%s admitted as waypoint %s/%s", peer, wpNS, wpName)
			}
			return
		}
		if peer.String() != "ambient-system/ztunnel" || nodeID != ZTunnelNodeID(boundNode) || boundNode == "" {
			t.Fatalf("%s bound to %q admitted as node %q", peer, boundNode, nodeID)
		}
	})
}

// TestMetricsNameTheAuthenticatedClient: the client label is the service account the
// stream authenticated as, never the node id the client sent.
func TestMetricsNameTheAuthenticatedClient(t *testing.T) {
	reg := prometheus.NewRegistry()
	s, addr := startServerWith(t, Options{Debounce: -1, Registerer: reg, PeerIdentity: testPeer, NodeAgents: testNodeAgents})
	s.Publisher().Set(pb.TrustBundleTypeURL, "cluster.local", &pb.TrustBundle{TrustDomain: "cluster.local"})
	for _, node := range []string{"node-a", "node-b"} {
		stream := deltaStream(t, addr, "ambient-system/ztunnel@"+node)
		if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: pb.TrustBundleTypeURL,
			Node: &corev3.Node{Id: ZTunnelNodeID(node)}}); err != nil {
			t.Fatal(err)
		}
		nack(t, stream, recv(t, stream), "bad bundle")
	}
	refused := deltaStream(t, addr, "shop/web")
	if err := refused.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: pb.TrustBundleTypeURL,
		Node: &corev3.Node{Id: "made-up-client-" + strings.Repeat("x", 10)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := refused.Recv(); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("got %v, want PermissionDenied", err)
	}
	testwait.For(t, "both NACKs counted", 5*time.Second, func() bool {
		return len(series(t, reg, "ambientmesh_xds_nacks_total")) == 1 &&
			series(t, reg, "ambientmesh_xds_nacks_total")["client=ambient-system/ztunnel,type=TrustBundle"] == 2
	})
	if got := series(t, reg, "ambientmesh_xds_connected_streams"); len(got) != 1 || got["client=ambient-system/ztunnel"] != 2 {
		t.Fatalf("connected streams = %v, want the two ztunnels under one label (the refused stream and node ids add none)", got)
	}
}

// series returns the values of a metric family by their labels ("name=value,...").
func series(t *testing.T, reg *prometheus.Registry, name string) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			out[strings.Join(labels, ",")] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return out
}

func TestCacheLoggerKeepsErrors(t *testing.T) {
	var lines []string
	log := funcr.New(func(prefix, args string) { lines = append(lines, args) }, funcr.Options{Verbosity: 0})
	l := cacheLogger{log}
	l.Debugf("watch %d opened", 1)
	l.Infof("responding to watch %d", 1)
	l.Errorf("failed to compute the response: %v", "boom")
	l.Warnf("slow client %s", "x")
	got := strings.Join(lines, "\n")
	if !strings.Contains(got, "failed to compute the response: boom") || !strings.Contains(got, "slow client x") {
		t.Fatalf("errors and warnings not logged: %q", got)
	}
	if strings.Contains(got, "watch 1") {
		t.Fatalf("per-watch chatter logged at V(0): %q", got)
	}
}

// TestMaxRequestSizeHoldsAReconnectOf50000Workloads: a reconnecting ztunnel announces the
// version of every workload it holds in one request, more than gRPC's default 4 MiB for
// 50,000 workloads.
func TestMaxRequestSizeHoldsAReconnectOf50000Workloads(t *testing.T) {
	req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: pb.WorkloadTypeURL, ResourceNamesSubscribe: []string{"*"},
		Node: &corev3.Node{Id: ZTunnelNodeID("worker-001")}, InitialResourceVersions: map[string]string{}}
	for i := range 50000 {
		w := &pb.Workload{Uid: fmt.Sprintf("3f1c9a2e-8b4d-4f6a-9c1e-%012d", i), Name: fmt.Sprintf("checkout-%05d", i)}
		req.InitialResourceVersions[w.GetUid()] = ResourceVersion(w)
	}
	if size := proto.Size(req); size <= 4<<20 || size > MaxRequestSize/2 {
		t.Fatalf("the announcement takes %d bytes: want more than 4 MiB (the default) and at most half of MaxRequestSize", size)
	}
}

package server

import (
	"context"
	"slices"
	"strings"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/go-logr/logr"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controlplane/xds/waypoint"
)

// Peer is who an xDS stream authenticated as.
type Peer struct {
	Namespace, ServiceAccount string
	// Node is the Kubernetes node the peer's credentials are bound to ("" when none).
	Node string
}

func (p Peer) String() string { return p.Namespace + "/" + p.ServiceAccount }

// PeerIdentity tells who an xDS stream authenticated as (from the stream's context).
type PeerIdentity func(ctx context.Context) (Peer, bool)

// authorize is the xDS access policy: may peer (authenticated when ok) be served typeURL
// as node? nodeAgents are the ztunnels' service accounts ("<namespace>/<name>").
//   - A waypoint (node cluster waypoint/<namespace>/<name>) must authenticate as the
//     service account <namespace>/<name> (the operator names it after the waypoint), and
//     is served its own Envoy resources and the mesh's trust bundle (Secret ROOTCA) only.
//   - A ztunnel (node id ztunnel~<node>) must authenticate as a node agent whose
//     credentials are bound to <node>, and is served the workload API only (the whole
//     mesh's, as Istio's ztunnel is).
//   - Nobody else is served anything.
//
// A refusal is a PermissionDenied status that says why.
func authorize(peer Peer, ok bool, nodeAgents []string, node *corev3.Node, typeURL string) error {
	if !ok {
		return status.Error(codes.PermissionDenied, "the stream is not authenticated")
	}
	if ns, name, isWaypoint := waypoint.ParseNodeCluster(node.GetCluster()); isWaypoint {
		if peer.Namespace != ns || peer.ServiceAccount != name {
			return status.Errorf(codes.PermissionDenied, "node claims waypoint %s/%s, but the client authenticated as %s, not the waypoint's service account %s/%s",
				ns, name, peer, ns, name)
		}
		if !slices.Contains(waypointTypeURLs, typeURL) {
			return status.Errorf(codes.PermissionDenied, "waypoint %s/%s is served its Envoy resources only, not %s", ns, name, typeURL)
		}
		return nil
	}
	if nodeName, isZTunnel := strings.CutPrefix(node.GetId(), ZTunnelNodeID("")); isZTunnel {
		switch {
		case !slices.Contains(nodeAgents, peer.String()):
			return status.Errorf(codes.PermissionDenied, "node id %q claims a ztunnel, but the client authenticated as %s, which is not a ztunnel service account", node.GetId(), peer)
		case peer.Node == "":
			return status.Errorf(codes.PermissionDenied, "node id %q claims the ztunnel of node %q, but the client's credentials are bound to no node: present the certificate the CA issued to the ztunnel pod, or a token bound to that pod", node.GetId(), nodeName)
		case peer.Node != nodeName:
			return status.Errorf(codes.PermissionDenied, "node id %q claims the ztunnel of node %q, but the client's credentials are bound to node %q", node.GetId(), nodeName, peer.Node)
		case !slices.Contains(pb.TypeURLs, typeURL):
			return status.Errorf(codes.PermissionDenied, "a ztunnel is served the workload API only, not %s", typeURL)
		}
		return nil
	}
	return status.Errorf(codes.PermissionDenied, "node (id %q, cluster %q) is neither a ztunnel (id %s<node>) nor a waypoint (cluster waypoint/<namespace>/<name>)",
		node.GetId(), node.GetCluster(), ZTunnelNodeID(""))
}

// access applies authorize to every request of every stream, and logs refusals (each
// ends its stream). A stream keeps the node of its first request; a later request naming
// another node is refused.
type access struct {
	peer       PeerIdentity
	nodeAgents []string
	log        logr.Logger

	mu      sync.Mutex
	streams map[int64]*streamAccess
}

type streamAccess struct {
	peer   Peer
	peerOK bool
	node   *corev3.Node
}

func newAccess(peer PeerIdentity, nodeAgents []string, log logr.Logger) *access {
	return &access{peer: peer, nodeAgents: nodeAgents, log: log, streams: map[int64]*streamAccess{}}
}

func (a *access) open(ctx context.Context, id int64) {
	st := &streamAccess{}
	if a.peer != nil {
		st.peer, st.peerOK = a.peer(ctx)
	}
	a.mu.Lock()
	a.streams[id] = st
	a.mu.Unlock()
}

func (a *access) close(id int64) {
	a.mu.Lock()
	delete(a.streams, id)
	a.mu.Unlock()
}

// check admits one request of stream id (n is nil when the request carries no node).
func (a *access) check(id int64, typeURL string, n *corev3.Node) error {
	err := a.admit(id, typeURL, n)
	if err != nil {
		a.log.Info("xDS request refused", "stream", id, "node", n.GetId(), "cluster", n.GetCluster(), "type", typeURL,
			"reason", status.Convert(err).Message())
	}
	return err
}

func (a *access) admit(id int64, typeURL string, n *corev3.Node) error {
	a.mu.Lock()
	st := a.streams[id]
	if st == nil {
		st = &streamAccess{} // not opened through open: authenticated as nobody
		a.streams[id] = st
	}
	if n != nil {
		if st.node != nil && (n.GetId() != st.node.GetId() || n.GetCluster() != st.node.GetCluster()) {
			a.mu.Unlock()
			return status.Errorf(codes.InvalidArgument, "the stream's node changed from (id %q, cluster %q) to (id %q, cluster %q)",
				st.node.GetId(), st.node.GetCluster(), n.GetId(), n.GetCluster())
		}
		st.node = n
	}
	node, peer, peerOK := st.node, st.peer, st.peerOK
	a.mu.Unlock()
	if node == nil {
		return status.Error(codes.InvalidArgument, "the stream's first request must name its node")
	}
	return authorize(peer, peerOK, a.nodeAgents, node, typeURL)
}

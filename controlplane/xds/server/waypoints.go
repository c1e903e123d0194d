package server

import (
	"context"
	"fmt"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ambientmesh/ambient-operator/controlplane/xds/waypoint"
)

// Waypoints are served the Envoy types (waypoint.TypeURLs) from caches of their own: one
// LinearCache per waypoint and type, chosen by the node's cluster
// ("waypoint/<namespace>/<name>"). A waypoint's wildcard LDS/CDS subscription therefore
// sees only its own listeners and clusters, and a change to one waypoint wakes only the
// streams of that waypoint. Which node may claim which waypoint is checked per stream
// (see access); the caches trust the node they are given.
type waypointCaches struct {
	mu     sync.Mutex
	caches map[string]map[string]*cache.LinearCache // node cluster → type URL → cache
}

func newWaypointCaches() *waypointCaches {
	return &waypointCaches{caches: map[string]map[string]*cache.LinearCache{}}
}

// of returns the caches of a waypoint, creating empty ones on first use (a waypoint may
// connect before its first translation, and a translation may precede any connection).
func (w *waypointCaches) of(nodeCluster string) map[string]*cache.LinearCache {
	w.mu.Lock()
	defer w.mu.Unlock()
	byType, ok := w.caches[nodeCluster]
	if !ok {
		byType = map[string]*cache.LinearCache{}
		for _, t := range waypoint.TypeURLs {
			byType[t] = cache.NewLinearCache(t, cache.WithLogger(quietLogger{}))
		}
		w.caches[nodeCluster] = byType
	}
	return byType
}

func (w *waypointCaches) cacheFor(node, typeURL string) (*cache.LinearCache, error) {
	if _, _, ok := waypoint.ParseNodeCluster(node); !ok {
		return nil, status.Errorf(codes.PermissionDenied, "%s is served to waypoints only (node cluster waypoint/<namespace>/<name>)", typeURL)
	}
	return w.of(node)[typeURL], nil
}

// CreateWatch implements cache.ConfigWatcher (state-of-the-world xDS).
func (w *waypointCaches) CreateWatch(req *cache.Request, sub cache.Subscription, out chan cache.Response) (func(), error) {
	c, err := w.cacheFor(req.GetNode().GetCluster(), req.GetTypeUrl())
	if err != nil {
		return nil, err
	}
	return c.CreateWatch(req, sub, out)
}

// CreateDeltaWatch implements cache.ConfigWatcher (delta xDS).
func (w *waypointCaches) CreateDeltaWatch(req *cache.DeltaRequest, sub cache.Subscription, out chan cache.DeltaResponse) (func(), error) {
	c, err := w.cacheFor(req.GetNode().GetCluster(), req.GetTypeUrl())
	if err != nil {
		return nil, err
	}
	return c.CreateDeltaWatch(req, sub, out)
}

// Fetch implements cache.ConfigFetcher.
func (w *waypointCaches) Fetch(ctx context.Context, req *cache.Request) (cache.Response, error) {
	c, err := w.cacheFor(req.GetNode().GetCluster(), req.GetTypeUrl())
	if err != nil {
		return nil, err
	}
	return c.Fetch(ctx, req)
}

// WaypointPublisher replaces a waypoint's whole resource set at once and pushes only
// what changed: an HTTPRoute edit that changes one RouteConfiguration sends that one
// resource.
type WaypointPublisher struct {
	caches  *waypointCaches
	updates *prometheus.CounterVec

	mu      sync.Mutex
	current map[string]map[string]map[string]proto.Message // node cluster → type → name → resource
}

// Set makes resources (type URL → name → resource) the complete set of the waypoint
// namespace/name; a nil or empty set removes everything. It reports how many resources
// changed.
func (p *WaypointPublisher) Set(namespace, name string, resources map[string]map[string]proto.Message) (int, error) {
	node := waypoint.NodeCluster(namespace, name)
	p.mu.Lock()
	defer p.mu.Unlock()
	current := p.current[node]
	if current == nil {
		current = map[string]map[string]proto.Message{}
	}
	changed := 0
	caches := p.caches.of(node)
	for _, t := range waypoint.TypeURLs {
		want, have := resources[t], current[t]
		toUpdate := map[string]types.Resource{}
		var toDelete []string
		for n, m := range want {
			if old, ok := have[n]; !ok || !proto.Equal(old, m) {
				toUpdate[n] = m
			}
		}
		for n := range have {
			if _, ok := want[n]; !ok {
				toDelete = append(toDelete, n)
			}
		}
		if len(toUpdate)+len(toDelete) == 0 {
			continue
		}
		if err := caches[t].UpdateResources(toUpdate, toDelete); err != nil {
			return changed, fmt.Errorf("waypoint %s/%s %s: %w", namespace, name, t, err)
		}
		changed += len(toUpdate) + len(toDelete)
		p.updates.WithLabelValues(shortType(t)).Add(float64(len(toUpdate) + len(toDelete)))
		next := make(map[string]proto.Message, len(want))
		for n, m := range want {
			next[n] = m
		}
		current[t] = next
	}
	p.current[node] = current
	return changed, nil
}

// Get returns a waypoint's resource as last published (nil when absent).
func (p *WaypointPublisher) Get(namespace, name, typeURL, resource string) proto.Message {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.current[waypoint.NodeCluster(namespace, name)][typeURL][resource]
}

// PeerIdentity tells who an xDS stream authenticated as (from the stream's context).
type PeerIdentity func(ctx context.Context) (namespace, serviceAccount string, ok bool)

// access checks, per stream, that a node asking for waypoint resources is the waypoint it
// names: its authenticated service account must be the Waypoint's (the operator names it
// after the Waypoint), in the Waypoint's namespace. A stream keeps the node of its first
// request; a later request naming another node is refused.
type access struct {
	peer PeerIdentity

	mu      sync.Mutex
	streams map[int64]*streamAccess
}

type streamAccess struct {
	ctx     context.Context
	node    string
	hasNode bool
}

func newAccess(peer PeerIdentity) *access {
	return &access{peer: peer, streams: map[int64]*streamAccess{}}
}

func (a *access) open(ctx context.Context, id int64) {
	a.mu.Lock()
	a.streams[id] = &streamAccess{ctx: ctx}
	a.mu.Unlock()
}

func (a *access) close(id int64) {
	a.mu.Lock()
	delete(a.streams, id)
	a.mu.Unlock()
}

// check admits one request of stream id (node is nil when the request carries none).
func (a *access) check(id int64, typeURL string, n *corev3.Node) error {
	a.mu.Lock()
	st := a.streams[id]
	if st == nil {
		st = &streamAccess{ctx: context.Background()}
		a.streams[id] = st
	}
	if n != nil {
		if st.hasNode && n.GetCluster() != st.node {
			a.mu.Unlock()
			return status.Errorf(codes.InvalidArgument, "the stream's node cluster changed from %q to %q", st.node, n.GetCluster())
		}
		st.node, st.hasNode = n.GetCluster(), true
	}
	node, ctx := st.node, st.ctx
	a.mu.Unlock()
	if !isWaypointType(typeURL) {
		return nil
	}
	ns, name, ok := waypoint.ParseNodeCluster(node)
	if !ok {
		return status.Errorf(codes.PermissionDenied, "%s is served to waypoints only (node cluster waypoint/<namespace>/<name>, got %q)", typeURL, node)
	}
	if a.peer == nil {
		return status.Error(codes.PermissionDenied, "waypoint resources are not served: no peer authentication configured")
	}
	peerNS, peerSA, ok := a.peer(ctx)
	if !ok || peerNS != ns || peerSA != name {
		return status.Errorf(codes.PermissionDenied, "node claims waypoint %s/%s, but the client authenticated as %s/%s, not the waypoint's service account %s/%s",
			ns, name, peerNS, peerSA, ns, name)
	}
	return nil
}

func isWaypointType(typeURL string) bool {
	for _, t := range waypoint.TypeURLs {
		if t == typeURL {
			return true
		}
	}
	return false
}

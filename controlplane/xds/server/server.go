// Package server serves delta ADS with go-control-plane: the workload API (one deltaCache
// per resource type, shared by every ztunnel: deltacache.go) and, on the same port, each
// waypoint's Envoy resources (LDS/RDS/CDS/EDS, one LinearCache per waypoint and type,
// chosen by the node cluster "waypoint/<namespace>/<name>") and the mesh's trust bundle
// as the SDS Secret ROOTCA (one LinearCache shared by every waypoint), all behind one
// MuxCache and go-control-plane's own xDS server. Every request is authorized
// (authorize.go): a waypoint gets only its own Envoy resources and the trust bundle, and
// only when it authenticated as the
// waypoint's service account; a ztunnel gets the workload API, and only when it
// authenticated as a node agent bound to the node it names; nobody else gets anything.
//
// Pushes never block on a slow client: each cache (deltaCache, LinearCache) answers a
// watch at most once on a buffered channel and then forgets it, and the client's stream
// goroutine opens the next watch only after it has sent the previous response. While a
// client is slow, its next response simply carries every resource that changed in the
// meantime.
//
// The server also follows what every delta client holds (acks.go): the versions of each
// response it ACKed, the versions it announced on reconnecting, and its last NACK. The
// status writers ask Waypoint and ZTunnel whether a waypoint's proxies or a node's
// ztunnel hold a given configuration, and WatchAcks tells them when that may have
// changed. State-of-the-world streams are served but not followed.
package server

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
)

// Options configure a Server.
type Options struct {
	// Debounce is how long changes are collected before they are pushed (default 50ms).
	Debounce time.Duration
	// Registerer receives the server's metrics; nil registers none.
	Registerer prometheus.Registerer
	// Log receives the server's logs, and go-control-plane's warnings and errors (its
	// per-watch chatter at V(2)).
	Log logr.Logger
	// PeerIdentity tells who a stream authenticated as (see authorize). Nil serves no one.
	PeerIdentity PeerIdentity
	// NodeAgents are the ztunnels' service accounts ("<namespace>/<name>").
	NodeAgents []string
}

// MaxRequestSize is the largest request the server accepts (gRPC's default is 4 MiB). A
// reconnecting ztunnel announces the version of every resource it holds, about 110 bytes
// each (a 36-byte uid and a 64-byte hash): 16 MiB holds the announcement of more than
// 150,000 workloads, three times the 50,000 the mesh is sized for.
const MaxRequestSize = 16 << 20

// Server is the delta ADS server: the workload API for ztunnels, and each waypoint's
// Envoy resources for that waypoint (see waypointCaches).
type Server struct {
	caches    map[string]*deltaCache
	xds       serverv3.Server
	publisher *Publisher
	waypoints *WaypointPublisher
	metrics   *metrics
	acks      *ackTracker
	started   time.Time
}

// New builds the caches and the xDS server. Register it on a gRPC server to serve.
func New(ctx context.Context, opts Options) *Server {
	if opts.Debounce == 0 {
		opts.Debounce = 50 * time.Millisecond
	}
	if opts.Log.GetSink() == nil {
		opts.Log = logr.Discard()
	}
	m := newMetrics(opts.Registerer)
	s := &Server{caches: map[string]*deltaCache{}, metrics: m, acks: newAckTracker(), started: time.Now()}
	muxed := map[string]cache.Cache{}
	forPublisher := map[string]resourceCache{}
	cacheLog := cacheLogger{opts.Log.WithName("cache")}
	for _, t := range pb.TypeURLs {
		c := newDeltaCache(t)
		s.caches[t], muxed[t], forPublisher[t] = c, c, c
	}
	wc := newWaypointCaches(cacheLog)
	for _, t := range waypointTypeURLs {
		muxed[t] = wc
	}
	mux := &cache.MuxCache{
		Classify:      func(r *cache.Request) string { return r.GetTypeUrl() },
		ClassifyDelta: func(r *cache.DeltaRequest) string { return r.GetTypeUrl() },
		Caches:        muxed,
	}
	s.publisher = newPublisher(forPublisher, opts.Debounce, m.updates)
	s.waypoints = &WaypointPublisher{caches: wc, updates: m.updates, acks: s.acks, published: map[string]*publishedWaypoint{}}
	s.xds = serverv3.NewServer(ctx, mux, callbacks(m.callbacks(opts.Log, opts.PeerIdentity),
		newAccess(opts.PeerIdentity, opts.NodeAgents, opts.Log), newAccess(opts.PeerIdentity, opts.NodeAgents, opts.Log), s.acks))
	return s
}

// callbacks adds the access checks (one per protocol: state-of-the-world and delta
// streams are numbered separately) and the ACK tracking of delta streams to the metrics
// callbacks. A request is tracked and counted only once admitted.
func callbacks(cb serverv3.CallbackFuncs, sotw, delta *access, acks *ackTracker) serverv3.CallbackFuncs {
	deltaOpen, deltaClosed, deltaRequest, deltaResponse := cb.DeltaStreamOpenFunc, cb.DeltaStreamClosedFunc, cb.StreamDeltaRequestFunc, cb.StreamDeltaResponseFunc
	cb.DeltaStreamOpenFunc = func(ctx context.Context, id int64, typeURL string) error {
		delta.open(ctx, id)
		acks.open(id)
		return deltaOpen(ctx, id, typeURL)
	}
	cb.DeltaStreamClosedFunc = func(id int64, node *corev3.Node) {
		delta.close(id)
		acks.close(id)
		deltaClosed(id, node)
	}
	cb.StreamDeltaRequestFunc = func(id int64, req *discoveryv3.DeltaDiscoveryRequest) error {
		if err := delta.check(id, req.GetTypeUrl(), req.GetNode()); err != nil {
			return err
		}
		acks.request(id, req)
		return deltaRequest(id, req)
	}
	cb.StreamDeltaResponseFunc = func(id int64, req *discoveryv3.DeltaDiscoveryRequest, resp *discoveryv3.DeltaDiscoveryResponse) {
		acks.response(id, resp)
		deltaResponse(id, req, resp)
	}
	cb.StreamOpenFunc = func(ctx context.Context, id int64, _ string) error {
		sotw.open(ctx, id)
		return nil
	}
	cb.StreamClosedFunc = func(id int64, _ *corev3.Node) { sotw.close(id) }
	cb.StreamRequestFunc = func(id int64, req *discoveryv3.DiscoveryRequest) error {
		return sotw.check(id, req.GetTypeUrl(), req.GetNode())
	}
	return cb
}

// Waypoints is where each waypoint's translated resources go.
func (s *Server) Waypoints() *WaypointPublisher { return s.waypoints }

// Waypoint reports the published configuration of the waypoint namespace/name and
// whether every one of its connected proxies (node cluster waypoint/<namespace>/<name>)
// has ACKed the current version of every resource in it.
func (s *Server) Waypoint(namespace, name string) WaypointState {
	return s.waypoints.state(namespace, name)
}

// ZTunnel reports whether the ztunnel of a node (a stream announcing ZTunnelNodeID(node),
// which authorize admits only from a node agent bound to that node) holds want: type URL
// → resource name → version (see ResourceVersion).
func (s *Server) ZTunnel(node string, want map[string]map[string]string) Sync {
	id := ZTunnelNodeID(node)
	return s.acks.sync(func(st *clientStream) bool { return st.client.NodeID == id }, want)
}

// WatchAcks delivers, until ctx ends, every client whose held configuration may have
// changed (see AckChange). Changes coalesce while the receiver is busy; no stream ever
// waits for it.
func (s *Server) WatchAcks(ctx context.Context) <-chan AckChange { return s.acks.watch(ctx) }

// Started is when the server was built: proxies that held configuration before a
// restart reconnect shortly after it and announce what they hold.
func (s *Server) Started() time.Time { return s.started }

// Register adds the Aggregated Discovery Service to a gRPC server.
func (s *Server) Register(g *grpc.Server) {
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, s.xds)
}

// Publisher is where translated resources go.
func (s *Server) Publisher() *Publisher { return s.publisher }

// Published returns a workload API resource as last published and its version
// (ResourceVersion); nil and "" when absent.
func (s *Server) Published(typeURL, name string) (proto.Message, string) {
	return s.publisher.GetWithVersion(typeURL, name)
}

// ResourceCount is the number of resources of a type in the cache (after the last flush).
func (s *Server) ResourceCount(typeURL string) int {
	if c, ok := s.caches[typeURL]; ok {
		return c.NumResources()
	}
	return 0
}

// Stats are totals over every client since start.
type Stats struct {
	Responses      int64
	Resources      int64
	Bytes          int64
	Nacks          int64
	ConnectedNodes int
}

// Stats returns the push totals (for benchmarks and dumps).
func (s *Server) Stats() Stats { return s.metrics.totals() }

// metrics are the server's Prometheus series, per client and type. The client label is
// the service account a stream authenticated as ("<namespace>/<name>"), which authorize
// admits only for node agents and waypoints: one series per waypoint and one for all the
// ztunnels, however many nodes there are and whatever node ids clients send.
type metrics struct {
	connected *prometheus.GaugeVec
	responses *prometheus.CounterVec
	resources *prometheus.CounterVec
	bytes     *prometheus.CounterVec
	nacks     *prometheus.CounterVec
	updates   *prometheus.CounterVec

	mu      sync.Mutex
	streams map[int64]*stream
	total   Stats
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		connected: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ambientmesh_xds_connected_streams",
			Help: "Open delta ADS streams, per client (its authenticated service account)."}, []string{"client"}),
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ambientmesh_xds_pushes_total",
			Help: "Delta xDS responses sent, per client and type."}, []string{"client", "type"}),
		resources: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ambientmesh_xds_pushed_resources_total",
			Help: "Resources (updated or removed) sent, per client and type."}, []string{"client", "type"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ambientmesh_xds_pushed_bytes_total",
			Help: "Bytes of delta xDS responses sent (protobuf size), per client and type."}, []string{"client", "type"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ambientmesh_xds_nacks_total",
			Help: "Responses a client rejected, per client and type."}, []string{"client", "type"}),
		updates: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ambientmesh_xds_resource_updates_total",
			Help: "Resource changes published to the caches (after dropping no-op updates), per type."}, []string{"type"}),
		streams: map[int64]*stream{},
	}
	if reg != nil {
		reg.MustRegister(m.connected, m.responses, m.resources, m.bytes, m.nacks, m.updates)
	}
	return m
}

// stream is one open delta ADS stream: client is its metric label, node the xDS node id
// of its first request (for logs).
type stream struct {
	client  string
	node    string
	counted bool
}

func (m *metrics) callbacks(log logr.Logger, peer PeerIdentity) serverv3.CallbackFuncs {
	return serverv3.CallbackFuncs{
		DeltaStreamOpenFunc: func(ctx context.Context, id int64, _ string) error {
			st := &stream{client: "unknown"}
			if peer != nil {
				if p, ok := peer(ctx); ok {
					st.client = p.String()
				}
			}
			m.mu.Lock()
			m.streams[id] = st
			m.mu.Unlock()
			return nil
		},
		DeltaStreamClosedFunc: func(id int64, _ *corev3.Node) {
			m.mu.Lock()
			st := m.streams[id]
			delete(m.streams, id)
			m.mu.Unlock()
			if st != nil && st.counted {
				m.connected.WithLabelValues(st.client).Dec()
				log.V(1).Info("xDS client disconnected", "client", st.client, "node", st.node, "stream", id)
			}
		},
		StreamDeltaRequestFunc: func(id int64, req *discoveryv3.DeltaDiscoveryRequest) error {
			m.onRequest(log, id, req)
			return nil
		},
		StreamDeltaResponseFunc: func(id int64, _ *discoveryv3.DeltaDiscoveryRequest, resp *discoveryv3.DeltaDiscoveryResponse) {
			m.onResponse(id, resp)
		},
	}
}

func (m *metrics) onRequest(log logr.Logger, id int64, req *discoveryv3.DeltaDiscoveryRequest) {
	m.mu.Lock()
	st := m.streams[id]
	if st == nil {
		st = &stream{client: "unknown"}
		m.streams[id] = st
	}
	first := !st.counted
	if first {
		st.node = req.GetNode().GetId()
		st.counted = true
	}
	client, node := st.client, st.node
	if req.GetErrorDetail() != nil {
		m.total.Nacks++
	}
	m.mu.Unlock()
	if first {
		m.connected.WithLabelValues(client).Inc()
		log.V(1).Info("xDS client connected", "client", client, "node", node, "stream", id)
	}
	if req.GetErrorDetail() != nil {
		m.nacks.WithLabelValues(client, shortType(req.GetTypeUrl())).Inc()
		log.Info("xDS client rejected a response", "client", client, "node", node, "type", req.GetTypeUrl(), "error", req.GetErrorDetail().GetMessage())
	}
}

func (m *metrics) onResponse(id int64, resp *discoveryv3.DeltaDiscoveryResponse) {
	m.mu.Lock()
	client := "unknown"
	if st := m.streams[id]; st != nil {
		client = st.client
	}
	n := int64(len(resp.GetResources()) + len(resp.GetRemovedResources()))
	size := int64(proto.Size(resp))
	m.total.Responses++
	m.total.Resources += n
	m.total.Bytes += size
	m.mu.Unlock()
	t := shortType(resp.GetTypeUrl())
	m.responses.WithLabelValues(client, t).Inc()
	m.resources.WithLabelValues(client, t).Add(float64(n))
	m.bytes.WithLabelValues(client, t).Add(float64(size))
}

func (m *metrics) totals() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.total
	st.ConnectedNodes = len(m.streams)
	return st
}

// shortType is the message name of a type URL, for metric labels.
func shortType(typeURL string) string {
	return typeURL[strings.LastIndex(typeURL, ".")+1:]
}

// cacheLogger passes go-control-plane's warnings and errors on, and its per-watch debug
// and info chatter (several lines per push per client) only at V(2).
type cacheLogger struct{ log logr.Logger }

func (l cacheLogger) Debugf(format string, args ...any) { l.chatter(format, args) }
func (l cacheLogger) Infof(format string, args ...any)  { l.chatter(format, args) }
func (l cacheLogger) Warnf(format string, args ...any)  { l.log.Info(fmt.Sprintf(format, args...)) }
func (l cacheLogger) Errorf(format string, args ...any) {
	l.log.Error(nil, fmt.Sprintf(format, args...))
}

func (l cacheLogger) chatter(format string, args []any) {
	if v := l.log.V(2); v.Enabled() { // format only what is printed: this is the hot path
		v.Info(fmt.Sprintf(format, args...))
	}
}

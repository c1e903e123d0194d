package server

import (
	"context"
	"maps"
	"sort"
	"sync"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
)

// What each client holds. A delta xDS client answers every response with a request that
// carries the response's nonce: an ACK (no error_detail), and it now holds the versions
// the response sent; or a NACK (error_detail), and it keeps what it had. A client that
// reconnects announces what it holds in initial_resource_versions of its first request
// of each type, and the server sends it only what differs, so that announcement counts
// as held too. The status writers ask what a waypoint's proxies or a node's ztunnel hold
// (Server.Waypoint, Server.ZTunnel) and learn when it changes (Server.WatchAcks).

// Client names an xDS client by the node it announced.
type Client struct {
	NodeID  string
	Cluster string
}

// ZTunnelNodeID is the node id the ztunnel of a Kubernetes node announces.
func ZTunnelNodeID(node string) string { return "ztunnel~" + node }

// AckChange says that what Client holds of TypeURL changed: it ACKed or NACKed a
// response, or announced what it holds. TypeURL is empty when a stream of the client
// opened or closed, and for a waypoint whose configuration was published.
type AckChange struct {
	Client  Client
	TypeURL string
}

// Sync is what the proxies behind one name (a waypoint's replicas, a node's ztunnel)
// hold of the configuration asked about.
type Sync struct {
	// Connected counts the proxies with an open stream.
	Connected int
	// Synced: at least one proxy is connected, and every connected one holds the
	// configuration asked about.
	Synced bool
	// LastNack is the reason a connected proxy gave for rejecting its last response of
	// some type, when it has not ACKed a later one of that type.
	LastNack string
}

// ResourceVersion is the version the caches give a resource (a hash of its
// deterministic encoding), which clients ACK.
func ResourceVersion(m proto.Message) string {
	r, err := encodeResource(m)
	if err != nil {
		return "" // never held by a client: the cache cannot send it either
	}
	return r.version
}

// ackTracker follows what every delta stream's client holds. It sees only admitted
// requests (authorize), so a stream that names a node speaks for it.
type ackTracker struct {
	mu       sync.Mutex
	streams  map[int64]*clientStream
	watchers map[*ackWatcher]struct{}
}

type clientStream struct {
	id      int64
	client  Client
	hasNode bool
	// pending is the response of each type that awaits its ACK or NACK; the server sends
	// the next one of a type only after the client answered.
	pending map[string]sentResponse
	// held: type → resource name → version the client holds.
	held map[string]map[string]string
	// nack: type → reason of the last NACK not followed by an ACK.
	nack map[string]string
}

type sentResponse struct {
	nonce   string
	updated map[string]string
	removed []string
}

func newAckTracker() *ackTracker {
	return &ackTracker{streams: map[int64]*clientStream{}, watchers: map[*ackWatcher]struct{}{}}
}

func (t *ackTracker) open(id int64) {
	st := &clientStream{id: id, pending: map[string]sentResponse{}, held: map[string]map[string]string{}, nack: map[string]string{}}
	t.mu.Lock()
	t.streams[id] = st
	t.mu.Unlock()
}

func (t *ackTracker) close(id int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.streams[id]
	delete(t.streams, id)
	if st != nil && st.hasNode {
		t.notifyLocked(AckChange{Client: st.client})
	}
}

// request records one admitted request of stream id.
func (t *ackTracker) request(id int64, req *discoveryv3.DeltaDiscoveryRequest) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.streams[id]
	if st == nil {
		return // opened before tracking started; go-control-plane always opens first
	}
	if n := req.GetNode(); n != nil && !st.hasNode {
		st.client, st.hasNode = Client{NodeID: n.GetId(), Cluster: n.GetCluster()}, true
		t.notifyLocked(AckChange{Client: st.client})
	}
	typeURL := req.GetTypeUrl()
	changed := false
	if _, seen := st.held[typeURL]; !seen {
		st.held[typeURL] = maps.Clone(req.GetInitialResourceVersions())
		if st.held[typeURL] == nil {
			st.held[typeURL] = map[string]string{}
		}
		changed = len(st.held[typeURL]) > 0
	}
	if sent, ok := st.pending[typeURL]; ok && req.GetResponseNonce() != "" && req.GetResponseNonce() == sent.nonce {
		delete(st.pending, typeURL)
		if req.GetErrorDetail() != nil {
			st.nack[typeURL] = req.GetErrorDetail().GetMessage()
		} else {
			delete(st.nack, typeURL)
			held := st.held[typeURL]
			for _, name := range sent.removed {
				delete(held, name)
			}
			maps.Copy(held, sent.updated)
		}
		changed = true
	}
	if changed && st.hasNode {
		t.notifyLocked(AckChange{Client: st.client, TypeURL: typeURL})
	}
}

// response records a response about to be sent on stream id.
func (t *ackTracker) response(id int64, resp *discoveryv3.DeltaDiscoveryResponse) {
	sent := sentResponse{nonce: resp.GetNonce(), updated: make(map[string]string, len(resp.GetResources())),
		removed: resp.GetRemovedResources()}
	for _, r := range resp.GetResources() {
		sent.updated[r.GetName()] = r.GetVersion()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if st := t.streams[id]; st != nil {
		st.pending[resp.GetTypeUrl()] = sent
	}
}

// sync reports whether the clients match selects hold want (type → name → version).
// A client's newest stream speaks for it: an older one is on its way out.
func (t *ackTracker) sync(match func(st *clientStream) bool, want map[string]map[string]string) Sync {
	t.mu.Lock()
	defer t.mu.Unlock()
	newest := map[string]*clientStream{}
	for _, st := range t.streams {
		if !st.hasNode || !match(st) {
			continue
		}
		if cur := newest[st.client.NodeID]; cur == nil || st.id > cur.id {
			newest[st.client.NodeID] = st
		}
	}
	nodes := make([]string, 0, len(newest))
	for n := range newest {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	out := Sync{Connected: len(nodes), Synced: len(nodes) > 0}
	for _, n := range nodes {
		st := newest[n]
		if !st.holds(want) {
			out.Synced = false
		}
		if out.LastNack == "" {
			out.LastNack = st.lastNack()
		}
	}
	return out
}

func (st *clientStream) holds(want map[string]map[string]string) bool {
	for typeURL, versions := range want {
		held := st.held[typeURL]
		for name, v := range versions {
			if held[name] != v {
				return false
			}
		}
	}
	return true
}

func (st *clientStream) lastNack() string {
	types := make([]string, 0, len(st.nack))
	for t := range st.nack {
		types = append(types, t)
	}
	sort.Strings(types)
	if len(types) == 0 {
		return ""
	}
	return st.nack[types[0]]
}

// ackWatcher collects changes for one WatchAcks caller; changes to the same client and
// type coalesce while the caller is busy, so a stream never waits for a watcher.
type ackWatcher struct {
	pending map[AckChange]struct{}
	wake    chan struct{}
}

func (t *ackTracker) notifyLocked(c AckChange) {
	for w := range t.watchers {
		w.pending[c] = struct{}{}
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

func (t *ackTracker) notify(c AckChange) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.notifyLocked(c)
}

// watch delivers changes until ctx ends, then closes the channel.
func (t *ackTracker) watch(ctx context.Context) <-chan AckChange {
	w := &ackWatcher{pending: map[AckChange]struct{}{}, wake: make(chan struct{}, 1)}
	t.mu.Lock()
	t.watchers[w] = struct{}{}
	t.mu.Unlock()
	out := make(chan AckChange)
	go func() {
		defer close(out)
		defer func() {
			t.mu.Lock()
			delete(t.watchers, w)
			t.mu.Unlock()
		}()
		for {
			select {
			case <-ctx.Done():
				return
			case <-w.wake:
			}
			t.mu.Lock()
			batch := make([]AckChange, 0, len(w.pending))
			for c := range w.pending {
				batch = append(batch, c)
			}
			clear(w.pending)
			t.mu.Unlock()
			for _, c := range batch {
				select {
				case out <- c:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out
}

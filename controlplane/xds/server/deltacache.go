package server

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// deltaCache holds one type of the workload API for the ztunnels' delta xDS streams (one
// wildcard stream per node, up to tens of thousands of resources) behind go-control-plane's
// server. It replaces cache.LinearCache there because LinearCache compares every resource
// of the type with what a stream holds on each push and again on each ACK, and copies the
// stream's whole version map into each response: at 50,000 workloads that was more than
// half of the control plane's CPU with one connected ztunnel (make bench-controlplane,
// docs/benchmarks.md), and it grows with the number of nodes. Here a push costs what
// changed:
//
//   - each flush of the publisher (apply) is numbered and logged with the names it changed;
//   - the version map a stream's Subscription holds (go-control-plane's delta server
//     stores each response's GetReturnedResources there as soon as it sent the response)
//     records, under the name syncedKey, the flush it reflects;
//   - a watch whose stream reflects flush n looks only at the names of later flushes, and
//     the response applies its changes to that same map instead of copying it.
//
// A stream's first request (which may announce what a reconnecting client holds), a change
// of subscription, and a stream further behind than the log reaches take the full
// comparison, as LinearCache does. Versions are LinearCache's (cache.HashResource of the
// deterministic encoding), so ResourceVersion and what clients announced to an earlier
// control plane still match. Only delta xDS is served: ztunnel speaks nothing else.
type deltaCache struct {
	typeURL string

	mu        sync.Mutex
	resources map[string]deltaResource
	flush     uint64       // number of the last flush
	log       []flushedSet // the last maxLoggedFlushes flushes, oldest first
	watches   map[*deltaWatch]struct{}
}

// syncedKey is the entry of a version map, ours alone (no resource is named ""), that
// records which flush the map reflects.
const syncedKey = ""

// maxLoggedFlushes bounds the log: with the publisher's 50 ms debounce it covers at least
// 12 s of changes, far more than a stream takes to answer a response.
const maxLoggedFlushes = 256

// deltaResource is a resource as the publisher and the cache keep it.
type deltaResource struct {
	raw     []byte // deterministic protobuf encoding
	version string // ResourceVersion: cache.HashResource(raw)
}

func encodeResource(m proto.Message) (deltaResource, error) {
	raw, err := cache.MarshalResource(m)
	if err != nil {
		return deltaResource{}, err
	}
	return deltaResource{raw: raw, version: cache.HashResource(raw)}, nil
}

type flushedSet struct {
	flush uint64
	names []string
}

// deltaWatch is a stream waiting for changes; synced is the flush its version map
// reflects.
type deltaWatch struct {
	req    *cache.DeltaRequest
	sub    cache.Subscription
	out    chan cache.DeltaResponse
	synced uint64
}

var _ cache.Cache = (*deltaCache)(nil)

func newDeltaCache(typeURL string) *deltaCache {
	return &deltaCache{typeURL: typeURL, resources: map[string]deltaResource{}, watches: map[*deltaWatch]struct{}{}}
}

// apply makes one flush of the publisher (name → new state, a zero value removing it)
// and answers every waiting stream with its changes.
func (c *deltaCache) apply(changes map[string]deltaResource) {
	names := slices.Collect(maps.Keys(changes))
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, r := range changes {
		if r.version == "" {
			delete(c.resources, name)
		} else {
			c.resources[name] = r
		}
	}
	c.flush++
	c.log = append(c.log, flushedSet{flush: c.flush, names: names})
	if len(c.log) > maxLoggedFlushes {
		c.log = c.log[len(c.log)-maxLoggedFlushes:]
	}
	for w := range c.watches {
		// The stream's version map is not read here: its goroutine may be applying an
		// earlier response to it. The response is trimmed against it when it is sent.
		w.out <- c.responseLocked(w.req, w.sub.ReturnedResources(), c.loggedSince(w.synced))
		delete(c.watches, w) // buffered by the server: one pending response per stream and type
	}
}

// CreateDeltaWatch answers at once when the stream lacks anything of the type (and on
// the first request of a wildcard stream), else waits for the next flush.
func (c *deltaCache) CreateDeltaWatch(req *cache.DeltaRequest, sub cache.Subscription, out chan cache.DeltaResponse) (func(), error) {
	if req.GetTypeUrl() != c.typeURL {
		return nil, fmt.Errorf("request type %s does not match cache type %s", req.GetTypeUrl(), c.typeURL)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	known := sub.ReturnedResources() // read on the stream's goroutine, which owns it
	var changed []string
	if synced, ok := c.syncedFlush(req, sub, known); ok {
		changed = c.loggedSince(synced)
	} else {
		changed = c.allDifferences(sub, known)
	}
	changed = trimKnown(changed, known, c.resources)
	if len(changed) > 0 || (sub.IsWildcard() && req.GetResponseNonce() == "") {
		out <- c.responseLocked(req, known, changed)
		return func() {}, nil
	}
	w := &deltaWatch{req: req, sub: sub, out: out, synced: c.flush}
	c.watches[w] = struct{}{}
	return func() {
		c.mu.Lock()
		delete(c.watches, w)
		c.mu.Unlock()
	}, nil
}

// syncedFlush is the flush the stream's version map reflects, when the log can say what
// changed since: a wildcard stream, unchanged subscription, a map this cache made.
func (c *deltaCache) syncedFlush(req *cache.DeltaRequest, sub cache.Subscription, known map[string]string) (uint64, bool) {
	if !sub.IsWildcard() || len(req.GetResourceNamesSubscribe()) > 0 || len(req.GetResourceNamesUnsubscribe()) > 0 {
		return 0, false
	}
	v, ok := known[syncedKey]
	if !ok {
		return 0, false
	}
	synced, err := strconv.ParseUint(v, 10, 64)
	if err != nil || synced > c.flush || (synced < c.flush && (len(c.log) == 0 || synced+1 < c.log[0].flush)) {
		return 0, false
	}
	return synced, true
}

// loggedSince lists the names of the flushes after synced (the log reaches that far).
func (c *deltaCache) loggedSince(synced uint64) []string {
	var names []string
	for _, f := range c.log {
		if f.flush > synced {
			names = append(names, f.names...)
		}
	}
	return names
}

// allDifferences lists every name whose state the stream may lack: for a wildcard stream
// every resource and every name it holds, else the names it subscribes to (go-control-plane
// forgets what a stream held of the names it unsubscribes).
func (c *deltaCache) allDifferences(sub cache.Subscription, known map[string]string) []string {
	if !sub.IsWildcard() {
		return slices.Collect(maps.Keys(sub.SubscribedResources()))
	}
	names := slices.Collect(maps.Keys(c.resources))
	for name := range known {
		names = append(names, name)
	}
	return names
}

// trimKnown keeps the names whose state differs from what the stream holds: another
// version, or gone while held. Each name is kept once.
func trimKnown(names []string, known map[string]string, resources map[string]deltaResource) []string {
	out := names[:0]
	seen := make(map[string]struct{}, len(names))
	for _, name := range names {
		if _, dup := seen[name]; dup || name == syncedKey {
			continue
		}
		seen[name] = struct{}{}
		held, isHeld := known[name]
		r, exists := resources[name]
		if (exists && (!isHeld || held != r.version)) || (!exists && isHeld) {
			out = append(out, name)
		}
	}
	return out
}

// responseLocked captures the current state of names for the stream of req, whose
// version map is held (read only later, on the stream's goroutine).
func (c *deltaCache) responseLocked(req *cache.DeltaRequest, held map[string]string, names []string) *deltaResponse {
	resp := &deltaResponse{req: req, typeURL: c.typeURL, flush: c.flush, held: held}
	seen := make(map[string]struct{}, len(names))
	for _, name := range names {
		if _, dup := seen[name]; dup {
			continue
		}
		seen[name] = struct{}{}
		if r, ok := c.resources[name]; ok {
			resp.updated = append(resp.updated, namedResource{name, r})
		} else {
			resp.removed = append(resp.removed, name)
		}
	}
	return resp
}

// NumResources is the number of resources held.
func (c *deltaCache) NumResources() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.resources)
}

var errDeltaOnly = errors.New("the workload API is served over delta xDS only")

// CreateWatch refuses state-of-the-world streams.
func (c *deltaCache) CreateWatch(*cache.Request, cache.Subscription, chan cache.Response) (func(), error) {
	return nil, errDeltaOnly
}

// Fetch refuses REST polling.
func (c *deltaCache) Fetch(context.Context, *cache.Request) (cache.Response, error) {
	return nil, errDeltaOnly
}

type namedResource struct {
	name string
	deltaResource
}

// deltaResponse is one response of a deltaCache. go-control-plane's server calls its
// methods on the stream's goroutine, GetDeltaDiscoveryResponse to send it and then
// GetReturnedResources to store what the client holds in the stream's Subscription; the
// stream's version map is read and written there only.
type deltaResponse struct {
	req     *cache.DeltaRequest
	typeURL string
	flush   uint64
	held    map[string]string // the stream's version map
	updated []namedResource
	removed []string

	once  sync.Once
	built *discoveryv3.DeltaDiscoveryResponse
	next  map[string]string
}

// GetDeltaDiscoveryResponse builds the message once, leaving out what the client already
// holds (a response made at a flush does not look at the stream's map, see
// apply).
func (r *deltaResponse) GetDeltaDiscoveryResponse() (*discoveryv3.DeltaDiscoveryResponse, error) {
	r.build()
	return r.built, nil
}

// GetReturnedResources is the client's version map once it applied this response:
// the stream's own map updated in place when this cache made it (copying it would cost
// as much as the comparison this cache avoids), else a copy. Applying it twice gives the
// same map.
func (r *deltaResponse) GetReturnedResources() map[string]string {
	r.build()
	return r.next
}

// GetDeltaRequest is the request the response answers.
func (r *deltaResponse) GetDeltaRequest() *cache.DeltaRequest { return r.req }

// GetResponseVersion is the number of the flush the response reflects.
func (r *deltaResponse) GetResponseVersion() string { return strconv.FormatUint(r.flush, 10) }

// GetSystemVersion is GetResponseVersion (the deprecated name).
func (r *deltaResponse) GetSystemVersion() (string, error) { return r.GetResponseVersion(), nil }

// GetContext is not used by delta streams.
func (r *deltaResponse) GetContext() context.Context { return context.Background() }

// GetNextVersionMap is GetReturnedResources (the deprecated name).
func (r *deltaResponse) GetNextVersionMap() map[string]string { return r.GetReturnedResources() }

func (r *deltaResponse) build() {
	r.once.Do(func() {
		held := r.held
		msg := &discoveryv3.DeltaDiscoveryResponse{TypeUrl: r.typeURL, SystemVersionInfo: r.GetResponseVersion()}
		for _, u := range r.updated {
			if v, ok := held[u.name]; ok && v == u.version {
				continue
			}
			msg.Resources = append(msg.Resources, &discoveryv3.Resource{Name: u.name, Version: u.version,
				Resource: &anypb.Any{TypeUrl: r.typeURL, Value: u.raw}})
		}
		for _, name := range r.removed {
			if _, ok := held[name]; ok {
				msg.RemovedResources = append(msg.RemovedResources, name)
			}
		}
		next := held
		if _, ours := held[syncedKey]; !ours {
			next = make(map[string]string, len(held)+len(msg.Resources))
			maps.Copy(next, held)
		}
		for _, res := range msg.Resources {
			next[res.GetName()] = res.GetVersion()
		}
		for _, name := range msg.RemovedResources {
			delete(next, name)
		}
		next[syncedKey] = r.GetResponseVersion()
		r.built, r.next = msg, next
	})
}

package server

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ambientmesh/ambient-operator/controlplane/xds/waypoint"
)

// RootCASecretName names the SDS Secret that carries the mesh's trust bundle to the
// waypoints (Istio's name for it): a validation_context whose trusted_ca holds every root
// of the bundle, PEM, inline.
const RootCASecretName = "ROOTCA"

// waypointTypeURLs are the types a waypoint is served: its translated Envoy resources
// (waypoint.TypeURLs) and the trust bundle (an SDS Secret).
var waypointTypeURLs = append(slices.Clone(waypoint.TypeURLs), resourcev3.SecretType)

// Waypoints are served their translated Envoy types (waypoint.TypeURLs) from caches of
// their own: one LinearCache per waypoint and type, chosen by the node's cluster
// ("waypoint/<namespace>/<name>"). A waypoint's wildcard LDS/CDS subscription therefore
// sees only its own listeners and clusters, and a change to one waypoint wakes only the
// streams of that waypoint. The trust bundle is the same for every waypoint: one
// LinearCache of Secrets, holding ROOTCA, serves them all. Which node may claim which
// waypoint is checked per request (see authorize); the caches trust the node they are
// given.
type waypointCaches struct {
	log    cacheLogger
	trust  *cache.LinearCache // the Secret ROOTCA, shared by every waypoint
	mu     sync.Mutex
	caches map[string]map[string]*cache.LinearCache // node cluster → type URL → cache
}

func newWaypointCaches(log cacheLogger) *waypointCaches {
	return &waypointCaches{log: log, caches: map[string]map[string]*cache.LinearCache{},
		trust: cache.NewLinearCache(resourcev3.SecretType, cache.WithLogger(log))}
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
			byType[t] = cache.NewLinearCache(t, cache.WithLogger(w.log))
		}
		w.caches[nodeCluster] = byType
	}
	return byType
}

func (w *waypointCaches) cacheFor(node, typeURL string) (*cache.LinearCache, error) {
	if _, _, ok := waypoint.ParseNodeCluster(node); !ok {
		return nil, status.Errorf(codes.PermissionDenied, "%s is served to waypoints only (node cluster waypoint/<namespace>/<name>)", typeURL)
	}
	if typeURL == resourcev3.SecretType {
		return w.trust, nil
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
// resource. With each set it keeps the resources' versions and what the set was built
// from (WaypointContents), so the status writers can tell whether a waypoint's proxies
// hold a given policy.
type WaypointPublisher struct {
	caches  *waypointCaches
	updates *prometheus.CounterVec
	acks    *ackTracker

	mu        sync.Mutex
	published map[string]*publishedWaypoint // node cluster → its current set
	rootCA    *tlsv3.Secret                 // as last published; nil: none
}

type publishedWaypoint struct {
	resources map[string]map[string]proto.Message // type → name → resource
	versions  map[string]map[string]string        // type → name → ResourceVersion
	contents  WaypointContents
}

// WaypointContents is what a waypoint's configuration was built from, as far as status
// needs to know: the generation of every MeshPolicy of its namespace that translation
// read, and the Services whose traffic it carries. Treat it as read-only.
type WaypointContents struct {
	// Policies: "<namespace>/<name>" → metadata.generation.
	Policies map[string]int64
	// Services are the Services it serves, as "<namespace>/<name>".
	Services []string
}

// WaypointState is what the control plane knows of one waypoint's configuration.
type WaypointState struct {
	// Published: a configuration was built for the waypoint (possibly an empty one).
	Published bool
	// Contents of the published configuration.
	Contents WaypointContents
	// Sync: whether its connected proxies hold every published resource at its current
	// version.
	Sync
}

// Set makes resources (type URL → name → resource) the complete set of the waypoint
// namespace/name, built from contents; nil resources remove everything (the waypoint is
// gone). It reports how many resources changed.
func (p *WaypointPublisher) Set(namespace, name string, resources map[string]map[string]proto.Message, contents WaypointContents) (int, error) {
	node := waypoint.NodeCluster(namespace, name)
	p.mu.Lock()
	defer p.mu.Unlock()
	current := p.published[node]
	wasPublished := current != nil
	if current == nil {
		current = &publishedWaypoint{resources: map[string]map[string]proto.Message{}, versions: map[string]map[string]string{}}
	}
	changed := 0
	caches := p.caches.of(node)
	for _, t := range waypoint.TypeURLs {
		want, have := resources[t], current.resources[t]
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
		versions := maps.Clone(current.versions[t])
		if versions == nil {
			versions = map[string]string{}
		}
		for _, n := range toDelete {
			delete(versions, n)
		}
		for n, m := range toUpdate {
			versions[n] = ResourceVersion(m)
		}
		current.resources[t], current.versions[t] = maps.Clone(want), versions
	}
	contentsChanged := !maps.Equal(current.contents.Policies, contents.Policies) || !slices.Equal(current.contents.Services, contents.Services)
	if resources == nil {
		delete(p.published, node)
	} else {
		current.contents = contents
		p.published[node] = current
	}
	if changed > 0 || contentsChanged || wasPublished != (resources != nil) {
		p.acks.notify(AckChange{Client: Client{Cluster: node}})
	}
	return changed, nil
}

// SetTrustBundle publishes roots (PEM), the mesh's trust bundle, to every waypoint as the
// Secret ROOTCA, at once: a waypoint then accepts clients whose certificates chain to any
// of them, and only those. No roots remove the Secret (waypoints fall back to the roots
// of their own certificate's answer). It reports whether the Secret changed.
func (p *WaypointPublisher) SetTrustBundle(roots []string) (bool, error) {
	var next *tlsv3.Secret
	if len(roots) > 0 {
		next = rootCASecret(roots)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if proto.Equal(next, p.rootCA) {
		return false, nil
	}
	var err error
	if next == nil {
		err = p.caches.trust.UpdateResources(nil, []string{RootCASecretName})
	} else {
		err = p.caches.trust.UpdateResources(map[string]types.Resource{RootCASecretName: next}, nil)
	}
	if err != nil {
		return false, fmt.Errorf("waypoints' trust bundle: %w", err)
	}
	p.rootCA = next
	p.updates.WithLabelValues(shortType(resourcev3.SecretType)).Inc()
	return true, nil
}

// rootCASecret is the Secret ROOTCA for a trust bundle: its roots (PEM) one after the
// other in validation_context.trusted_ca, as Envoy reads a CA file.
func rootCASecret(roots []string) *tlsv3.Secret {
	var bundle strings.Builder
	for _, r := range roots {
		bundle.WriteString(strings.TrimSpace(r))
		bundle.WriteByte('\n')
	}
	return &tlsv3.Secret{
		Name: RootCASecretName,
		Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: []byte(bundle.String())}},
		}},
	}
}

// Get returns a waypoint's resource as last published (nil when absent).
func (p *WaypointPublisher) Get(namespace, name, typeURL, resource string) proto.Message {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pw := p.published[waypoint.NodeCluster(namespace, name)]; pw != nil {
		return pw.resources[typeURL][resource]
	}
	return nil
}

// state reports the waypoint's published configuration and what its proxies hold of it.
func (p *WaypointPublisher) state(namespace, name string) WaypointState {
	node := waypoint.NodeCluster(namespace, name)
	p.mu.Lock()
	defer p.mu.Unlock()
	pw := p.published[node]
	var want map[string]map[string]string
	st := WaypointState{}
	if pw != nil {
		st.Published, st.Contents, want = true, pw.contents, pw.versions
	}
	st.Sync = p.acks.sync(func(s *clientStream) bool { return s.client.Cluster == node }, want)
	return st
}

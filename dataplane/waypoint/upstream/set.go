package upstream

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
)

// Options injects the clock and the random source (tests use fakes).
type Options struct {
	Now  func() time.Time // default time.Now
	Rand func(n int) int  // [0,n); default math/rand/v2's IntN; must be safe for concurrent use
}

// Set is the waypoint's whole set of clusters.
type Set struct {
	now  func() time.Time
	rand func(n int) int

	updateMu sync.Mutex                          // serializes Update
	clusters atomic.Pointer[map[string]*Cluster] // read without locks
}

// NewSet returns an empty Set.
func NewSet(opts Options) *Set {
	s := &Set{now: opts.Now, rand: opts.Rand}
	if s.now == nil {
		s.now = time.Now
	}
	if s.rand == nil {
		s.rand = rand.IntN
	}
	s.clusters.Store(&map[string]*Cluster{})
	return s
}

// Update replaces the whole configuration: clusters by name, and load
// assignments by EDS name (the cluster's eds service_name, or else its name).
// A cluster without a load assignment has no endpoints. Every resource is
// validated first; on any error nothing is applied and the error names each
// bad resource. Clusters and hosts that persist keep their state.
func (s *Set) Update(clusters map[string]*clusterv3.Cluster, loads map[string]*endpointv3.ClusterLoadAssignment) error {
	var errs []error
	configs := make(map[string]*clusterConfig, len(clusters))
	for _, name := range slices.Sorted(maps.Keys(clusters)) {
		cfg, err := compileNamedCluster(name, clusters[name])
		if err != nil {
			errs = append(errs, fmt.Errorf("cluster %q: %w", name, err))
			continue
		}
		configs[name] = cfg
	}
	assignments := make(map[string]*loadAssignment, len(loads))
	for _, name := range slices.Sorted(maps.Keys(loads)) {
		la, err := compileNamedLoadAssignment(name, loads[name])
		if err != nil {
			errs = append(errs, fmt.Errorf("load assignment %q: %w", name, err))
			continue
		}
		assignments[name] = la
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}

	s.updateMu.Lock()
	defer s.updateMu.Unlock()
	old := *s.clusters.Load()
	next := make(map[string]*Cluster, len(configs))
	for name, cfg := range configs {
		c := old[name]
		if c == nil {
			c = &Cluster{name: name, set: s}
		}
		c.apply(cfg, assignments[cfg.edsName])
		next[name] = c
	}
	for name, c := range old {
		if next[name] == nil {
			c.remove()
		}
	}
	s.clusters.Store(&next)
	return nil
}

func compileNamedCluster(name string, c *clusterv3.Cluster) (*clusterConfig, error) {
	if c == nil {
		return nil, errors.New("nil")
	}
	if c.GetName() != name {
		return nil, fmt.Errorf("listed under a different name than its own %q", c.GetName())
	}
	return compileCluster(c)
}

func compileNamedLoadAssignment(name string, cla *endpointv3.ClusterLoadAssignment) (*loadAssignment, error) {
	if cla == nil {
		return nil, errors.New("nil")
	}
	if cla.GetClusterName() != name {
		return nil, fmt.Errorf("listed under a different name than its cluster_name %q", cla.GetClusterName())
	}
	return compileLoadAssignment(cla)
}

// Cluster returns the named cluster, nil if unknown.
func (s *Set) Cluster(name string) *Cluster {
	return (*s.clusters.Load())[name]
}

// Dump reports every cluster, sorted by name, hosts sorted by address.
func (s *Set) Dump() []ClusterStatus {
	clusters := *s.clusters.Load()
	out := make([]ClusterStatus, 0, len(clusters))
	for _, c := range clusters {
		out = append(out, c.status())
	}
	slices.SortFunc(out, func(a, b ClusterStatus) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

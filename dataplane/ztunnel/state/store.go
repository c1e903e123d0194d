// Package state is the ztunnel's view of the mesh: the workload API resources received from
// the control plane, indexed for the data path (by address, by VIP, service membership,
// policies per workload). Updates are validated as a whole before any is applied, so an
// invalid response is NACKed and the last good configuration stays in force.
package state

import (
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"sync"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/dataplane/ztunnel/authz"
	"github.com/ambientmesh/ambient-operator/internal/pemcert"
)

// Store holds the current configuration. Returned messages are shared: never modify them.
type Store struct {
	mu        sync.RWMutex
	workloads map[string]*pb.Workload
	byAddr    map[netip.Addr]*pb.Workload
	services  map[string]*pb.Service
	byVIP     map[netip.Addr]*pb.Service
	members   map[string]map[string]struct{} // service name → workload uids
	policies  map[string]*authz.Policy
	bundles   map[string]*pb.TrustBundle
	roots     *x509.CertPool
	synced    map[string]bool
	changed   chan struct{}
	hooks     []func(typeURL string)
}

// New returns an empty store.
func New() *Store {
	return &Store{
		workloads: map[string]*pb.Workload{},
		byAddr:    map[netip.Addr]*pb.Workload{},
		services:  map[string]*pb.Service{},
		byVIP:     map[netip.Addr]*pb.Service{},
		members:   map[string]map[string]struct{}{},
		policies:  map[string]*authz.Policy{},
		bundles:   map[string]*pb.TrustBundle{},
		synced:    map[string]bool{},
		changed:   make(chan struct{}),
	}
}

// OnChange registers fn to run (outside the store's lock) after every applied update.
func (s *Store) OnChange(fn func(typeURL string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hooks = append(s.hooks, fn)
}

// Changed returns a channel closed at the next applied update (for waiters).
func (s *Store) Changed() <-chan struct{} {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.changed
}

// Apply validates and applies one xDS update of a type: resources added or replaced by name,
// and names removed. Nothing is applied when any resource is invalid; the error names each
// bad resource and field (it becomes the NACK's error detail).
func (s *Store) Apply(typeURL string, upserts map[string]*anypb.Any, removed []string) error {
	decoded, err := decodeAll(typeURL, upserts)
	if err != nil {
		return err
	}
	s.mu.Lock()
	switch typeURL {
	case pb.WorkloadTypeURL:
		s.applyWorkloads(decoded, removed)
	case pb.ServiceTypeURL:
		s.applyServices(decoded, removed)
	case pb.AuthorizationTypeURL:
		s.applyPolicies(decoded, removed)
	case pb.TrustBundleTypeURL:
		s.applyBundles(decoded, removed)
	}
	s.synced[typeURL] = true
	close(s.changed)
	s.changed = make(chan struct{})
	hooks := slices.Clone(s.hooks)
	s.mu.Unlock()
	for _, h := range hooks {
		h(typeURL)
	}
	return nil
}

// decodeAll unpacks and validates every resource of an update.
func decodeAll(typeURL string, upserts map[string]*anypb.Any) (map[string]any, error) {
	out := make(map[string]any, len(upserts))
	var errs []error
	for name, a := range upserts {
		v, err := decodeOne(typeURL, name, a)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			continue
		}
		out[name] = v
	}
	if len(errs) > 0 {
		sortErrors(errs)
		return nil, errors.Join(errs...)
	}
	return out, nil
}

func decodeOne(typeURL, name string, a *anypb.Any) (any, error) {
	if a.GetTypeUrl() != typeURL {
		return nil, fmt.Errorf("type_url %q in a %s update", a.GetTypeUrl(), typeURL)
	}
	var msg proto.Message
	switch typeURL {
	case pb.WorkloadTypeURL:
		msg = &pb.Workload{}
	case pb.ServiceTypeURL:
		msg = &pb.Service{}
	case pb.AuthorizationTypeURL:
		msg = &pb.Authorization{}
	case pb.TrustBundleTypeURL:
		msg = &pb.TrustBundle{}
	default:
		return nil, fmt.Errorf("unknown type %s", typeURL)
	}
	if err := proto.Unmarshal(a.GetValue(), msg); err != nil {
		return nil, fmt.Errorf("decoding: %w", err)
	}
	switch m := msg.(type) {
	case *pb.Workload:
		return m, pb.ValidateWorkload(name, m)
	case *pb.Service:
		return m, pb.ValidateService(name, m)
	case *pb.Authorization:
		return authz.Compile(m)
	case *pb.TrustBundle:
		if err := pb.ValidateTrustBundle(name, m); err != nil {
			return nil, err
		}
		if _, err := parseRoots(m.GetRoots()); err != nil {
			return nil, err
		}
		return m, nil
	}
	return nil, nil
}

func sortErrors(errs []error) {
	sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
}

func (s *Store) applyWorkloads(upserts map[string]any, removed []string) {
	for _, name := range removed {
		s.removeWorkload(name)
	}
	for name, v := range upserts {
		s.removeWorkload(name)
		w := v.(*pb.Workload)
		s.workloads[name] = w
		for _, a := range w.GetAddresses() {
			s.byAddr[netip.MustParseAddr(a).Unmap()] = w
		}
		for svc := range w.GetServices() {
			if s.members[svc] == nil {
				s.members[svc] = map[string]struct{}{}
			}
			s.members[svc][name] = struct{}{}
		}
	}
}

func (s *Store) removeWorkload(name string) {
	old := s.workloads[name]
	if old == nil {
		return
	}
	delete(s.workloads, name)
	for _, a := range old.GetAddresses() {
		addr := netip.MustParseAddr(a).Unmap()
		if s.byAddr[addr] == old {
			delete(s.byAddr, addr)
		}
	}
	for svc := range old.GetServices() {
		delete(s.members[svc], name)
		if len(s.members[svc]) == 0 {
			delete(s.members, svc)
		}
	}
}

func (s *Store) applyServices(upserts map[string]any, removed []string) {
	for _, name := range removed {
		s.removeService(name)
	}
	for name, v := range upserts {
		s.removeService(name)
		svc := v.(*pb.Service)
		s.services[name] = svc
		for _, vip := range svc.GetVips() {
			s.byVIP[netip.MustParseAddr(vip).Unmap()] = svc
		}
	}
}

func (s *Store) removeService(name string) {
	old := s.services[name]
	if old == nil {
		return
	}
	delete(s.services, name)
	for _, vip := range old.GetVips() {
		addr := netip.MustParseAddr(vip).Unmap()
		if s.byVIP[addr] == old {
			delete(s.byVIP, addr)
		}
	}
}

func (s *Store) applyPolicies(upserts map[string]any, removed []string) {
	for _, name := range removed {
		delete(s.policies, name)
	}
	for name, v := range upserts {
		s.policies[name] = v.(*authz.Policy)
	}
}

func (s *Store) applyBundles(upserts map[string]any, removed []string) {
	for _, name := range removed {
		delete(s.bundles, name)
	}
	for name, v := range upserts {
		s.bundles[name] = v.(*pb.TrustBundle)
	}
	pool := x509.NewCertPool()
	for _, b := range s.bundles {
		certs, _ := parseRoots(b.GetRoots())
		for _, c := range certs {
			pool.AddCert(c)
		}
	}
	if len(s.bundles) == 0 {
		pool = nil
	}
	s.roots = pool
}

// parseRoots parses PEM root certificates (each entry may hold several blocks).
func parseRoots(pems []string) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for i, p := range pems {
		certs, err := pemcert.Parse([]byte(p))
		if err != nil {
			return nil, fmt.Errorf("roots[%d]: %w", i, err)
		}
		if len(certs) == 0 {
			return nil, fmt.Errorf("roots[%d]: no PEM certificate", i)
		}
		out = append(out, certs...)
	}
	return out, nil
}

// Lookups used on the data path.

// Workload returns the workload with the given uid, or nil.
func (s *Store) Workload(uid string) *pb.Workload {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.workloads[uid]
}

// WorkloadByAddr returns the workload owning addr, or nil.
func (s *Store) WorkloadByAddr(addr netip.Addr) *pb.Workload {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.byAddr[addr.Unmap()]
}

// Service returns the service with the given resource name, or nil.
func (s *Store) Service(name string) *pb.Service {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.services[name]
}

// ServiceByVIP returns the service with VIP addr, or nil.
func (s *Store) ServiceByVIP(addr netip.Addr) *pb.Service {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.byVIP[addr.Unmap()]
}

// Endpoints returns the healthy workloads of a service (by resource name), ordered by uid.
func (s *Store) Endpoints(service string) []*pb.Workload {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*pb.Workload, 0, len(s.members[service]))
	for uid := range s.members[service] {
		if w := s.workloads[uid]; w.GetStatus() == pb.WorkloadStatus_WORKLOAD_STATUS_HEALTHY {
			out = append(out, w)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetUid() < out[j].GetUid() })
	return out
}

// PoliciesFor returns the policies that apply to w, ordered by name.
func (s *Store) PoliciesFor(w *pb.Workload) []*authz.Policy {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []*authz.Policy
	for _, p := range s.policies {
		if p.AppliesTo(w) {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// IsWaypointOf reports whether peer is the identity of w's waypoint or of the waypoint of
// one of the Services w backs: a Service's waypoint relays that Service's traffic to its
// endpoints, and only such a waypoint may speak for the original client (Forwarded).
func (s *Store) IsWaypointOf(w *pb.Workload, peer string) bool {
	if w.GetWaypoint().GetIdentity() == peer {
		return true
	}
	for name := range w.GetServices() {
		if s.Service(name).GetWaypoint().GetIdentity() == peer {
			return true
		}
	}
	return false
}

// Authorize decides an inbound connection to w under the current configuration:
// plaintext is refused when w requires mTLS (STRICT), then the policies that apply to w
// decide.
func (s *Store) Authorize(w *pb.Workload, c authz.Conn, plaintext bool) authz.Decision {
	if plaintext && w.GetMtlsMode() == pb.MTLSMode_MTLS_MODE_STRICT {
		return authz.Decision{Reason: "plaintext refused: workload requires mTLS (STRICT)"}
	}
	return authz.Evaluate(s.PoliciesFor(w), c)
}

// Roots returns the trust bundle's pool, nil before one arrived.
func (s *Store) Roots() *x509.CertPool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.roots
}

// Synced reports whether at least one update of each given type has been applied.
func (s *Store) Synced(typeURLs ...string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, t := range typeURLs {
		if !s.synced[t] {
			return false
		}
	}
	return true
}

// Dump is the admin view of the store.
type Dump struct {
	Workloads      []*pb.Workload      `json:"workloads"`
	Services       []*pb.Service       `json:"services"`
	Authorizations []*pb.Authorization `json:"authorizations"`
	TrustBundles   []*pb.TrustBundle   `json:"trustBundles"`
}

// Snapshot copies the current resources (ordered by name) for dumps.
func (s *Store) Snapshot() Dump {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var d Dump
	for _, k := range slices.Sorted(maps.Keys(s.workloads)) {
		d.Workloads = append(d.Workloads, s.workloads[k])
	}
	for _, k := range slices.Sorted(maps.Keys(s.services)) {
		d.Services = append(d.Services, s.services[k])
	}
	for _, k := range slices.Sorted(maps.Keys(s.policies)) {
		d.Authorizations = append(d.Authorizations, s.policies[k].Source)
	}
	for _, k := range slices.Sorted(maps.Keys(s.bundles)) {
		d.TrustBundles = append(d.TrustBundles, s.bundles[k])
	}
	return d
}

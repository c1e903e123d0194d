package upstream

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/ambientmesh/ambient-operator/internal/spiffe"
)

// EndpointMetadataKey is the filter_metadata key under which the control
// plane describes how to reach an endpoint.
const EndpointMetadataKey = "ambientmesh.dev/endpoint"

// Envoy's defaults for the fields this package reads.
const (
	defaultConnectTimeout         = 5 * time.Second
	defaultChoiceCount            = 2
	defaultPanicThreshold         = 50.0
	defaultOverprovisioningFactor = 140
	defaultMaxConnections         = 1024
	defaultMaxPendingRequests     = 1024
	defaultMaxRequests            = 1024
	defaultMaxRetries             = 3
	defaultBudgetPercent          = 20.0
	defaultMinRetryConcurrency    = 3
	defaultConsecutiveErrors      = 5
	defaultInterval               = 10 * time.Second
	defaultBaseEjectionTime       = 30 * time.Second
	defaultMaxEjectionTime        = 300 * time.Second
	defaultMaxEjectionPercent     = 10
)

// clusterConfig is a validated Cluster in the form the runtime uses.
type clusterConfig struct {
	edsName        string // the load assignment's key
	lbPolicy       clusterv3.Cluster_LbPolicy
	choiceCount    int
	panicThreshold float64 // percent; 0 disables panic mode
	connectTimeout time.Duration
	limits         limits
	outlier        *outlierConfig // nil: no outlier detection
}

type limits struct {
	maxRequests, maxPendingRequests, maxConnections, maxRetries int64
	budget                                                      *retryBudget // replaces maxRetries when set
}

type retryBudget struct {
	percent        float64
	minConcurrency int64
}

type outlierConfig struct {
	consecutive5xx, consecutiveGatewayFailure, consecutiveLocalOriginFailure uint32 // 0 disables
	enforcing5xx, enforcingGatewayFailure, enforcingLocalOriginFailure       uint32 // percent
	splitLocalOrigin                                                         bool
	interval, baseEjectionTime, maxEjectionTime, maxJitter                   time.Duration
	maxEjectionPercent                                                       uint32
	alwaysEjectOneHost                                                       bool
}

// endpoint is one validated LbEndpoint.
type endpoint struct {
	addr     netip.AddrPort
	tunnel   Tunnel
	identity spiffe.ID
	workload Workload
	health   corev3.HealthStatus
}

// loadAssignment is a validated ClusterLoadAssignment.
type loadAssignment struct {
	endpoints              []endpoint
	overprovisioningFactor float64 // percent
}

func compileCluster(c *clusterv3.Cluster) (*clusterConfig, error) {
	if err := c.ValidateAll(); err != nil {
		return nil, err
	}
	if c.GetType() != clusterv3.Cluster_EDS {
		return nil, fmt.Errorf("type must be EDS, not %s", c.GetType())
	}
	switch {
	case c.GetLoadBalancingPolicy() != nil:
		return nil, errors.New("load_balancing_policy is not supported: use lb_policy")
	case len(c.GetLbSubsetConfig().GetSubsetSelectors()) > 0:
		return nil, errors.New("lb_subset_config is not supported")
	case c.GetCommonLbConfig().GetLocalityWeightedLbConfig() != nil:
		return nil, errors.New("locality_weighted_lb_config is not supported")
	case c.GetTransportSocket() != nil || len(c.GetTransportSocketMatches()) > 0 || c.GetTransportSocketMatcher() != nil:
		return nil, errors.New("transport sockets are not supported: the tunnel comes from endpoint metadata")
	}
	cfg := &clusterConfig{
		edsName:        c.GetName(),
		lbPolicy:       c.GetLbPolicy(),
		choiceCount:    int(uint32Or(c.GetLeastRequestLbConfig().GetChoiceCount(), defaultChoiceCount)),
		panicThreshold: defaultPanicThreshold,
		connectTimeout: durationOr(c.GetConnectTimeout(), defaultConnectTimeout),
		limits:         compileLimits(c.GetCircuitBreakers()),
	}
	if name := c.GetEdsClusterConfig().GetServiceName(); name != "" {
		cfg.edsName = name
	}
	switch cfg.lbPolicy {
	case clusterv3.Cluster_ROUND_ROBIN, clusterv3.Cluster_LEAST_REQUEST, clusterv3.Cluster_RANDOM:
	default:
		return nil, fmt.Errorf("lb_policy %s is not supported", cfg.lbPolicy)
	}
	if p := c.GetCommonLbConfig().GetHealthyPanicThreshold(); p != nil {
		cfg.panicThreshold = p.GetValue()
	}
	if od := c.GetOutlierDetection(); od != nil {
		var err error
		if cfg.outlier, err = compileOutlier(od); err != nil {
			return nil, fmt.Errorf("outlier_detection: %w", err)
		}
	}
	return cfg, nil
}

func compileLimits(cb *clusterv3.CircuitBreakers) limits {
	l := limits{
		maxRequests:        defaultMaxRequests,
		maxPendingRequests: defaultMaxPendingRequests,
		maxConnections:     defaultMaxConnections,
		maxRetries:         defaultMaxRetries,
	}
	for _, t := range cb.GetThresholds() {
		if t.GetPriority() != corev3.RoutingPriority_DEFAULT {
			continue
		}
		l.maxRequests = int64(uint32Or(t.GetMaxRequests(), defaultMaxRequests))
		l.maxPendingRequests = int64(uint32Or(t.GetMaxPendingRequests(), defaultMaxPendingRequests))
		l.maxConnections = int64(uint32Or(t.GetMaxConnections(), defaultMaxConnections))
		l.maxRetries = int64(uint32Or(t.GetMaxRetries(), defaultMaxRetries))
		if b := t.GetRetryBudget(); b != nil {
			l.budget = &retryBudget{
				percent:        defaultBudgetPercent,
				minConcurrency: int64(uint32Or(b.GetMinRetryConcurrency(), defaultMinRetryConcurrency)),
			}
			if p := b.GetBudgetPercent(); p != nil {
				l.budget.percent = p.GetValue()
			}
		}
		break // Envoy uses the first thresholds of a priority
	}
	return l
}

func compileOutlier(od *clusterv3.OutlierDetection) (*outlierConfig, error) {
	o := &outlierConfig{
		consecutive5xx:                uint32Or(od.GetConsecutive_5Xx(), defaultConsecutiveErrors),
		consecutiveGatewayFailure:     uint32Or(od.GetConsecutiveGatewayFailure(), defaultConsecutiveErrors),
		consecutiveLocalOriginFailure: uint32Or(od.GetConsecutiveLocalOriginFailure(), defaultConsecutiveErrors),
		enforcing5xx:                  uint32Or(od.GetEnforcingConsecutive_5Xx(), 100),
		enforcingGatewayFailure:       uint32Or(od.GetEnforcingConsecutiveGatewayFailure(), 0),
		enforcingLocalOriginFailure:   uint32Or(od.GetEnforcingConsecutiveLocalOriginFailure(), 100),
		splitLocalOrigin:              od.GetSplitExternalLocalOriginErrors(),
		interval:                      durationOr(od.GetInterval(), defaultInterval),
		baseEjectionTime:              durationOr(od.GetBaseEjectionTime(), defaultBaseEjectionTime),
		maxJitter:                     durationOr(od.GetMaxEjectionTimeJitter(), 0),
		maxEjectionPercent:            min(100, uint32Or(od.GetMaxEjectionPercent(), defaultMaxEjectionPercent)),
		alwaysEjectOneHost:            od.GetAlwaysEjectOneHost().GetValue(),
	}
	o.maxEjectionTime = durationOr(od.GetMaxEjectionTime(), max(defaultMaxEjectionTime, o.baseEjectionTime))
	if o.maxEjectionTime < o.baseEjectionTime {
		return nil, fmt.Errorf("max_ejection_time %s is smaller than base_ejection_time %s", o.maxEjectionTime, o.baseEjectionTime)
	}
	if o.maxJitter < 0 {
		return nil, fmt.Errorf("max_ejection_time_jitter %s is negative", o.maxJitter)
	}
	return o, nil
}

func compileLoadAssignment(cla *endpointv3.ClusterLoadAssignment) (*loadAssignment, error) {
	if err := cla.ValidateAll(); err != nil {
		return nil, err
	}
	if len(cla.GetNamedEndpoints()) > 0 {
		return nil, errors.New("named_endpoints are not supported")
	}
	if len(cla.GetPolicy().GetDropOverloads()) > 0 {
		return nil, errors.New("drop_overloads are not supported")
	}
	la := &loadAssignment{
		overprovisioningFactor: float64(uint32Or(cla.GetPolicy().GetOverprovisioningFactor(), defaultOverprovisioningFactor)),
	}
	seen := map[netip.AddrPort]bool{}
	weight := uint32(0) // the weight every endpoint must share; 0 until the first
	for i, locality := range cla.GetEndpoints() {
		switch {
		case locality.GetPriority() != 0:
			return nil, fmt.Errorf("endpoints[%d]: priority %d is not supported: only priority 0", i, locality.GetPriority())
		case locality.GetLoadBalancerEndpoints() != nil || locality.GetLedsClusterLocalityConfig() != nil:
			return nil, fmt.Errorf("endpoints[%d]: only lb_endpoints is supported (not load_balancer_endpoints or LEDS)", i)
		}
		for j, lbe := range locality.GetLbEndpoints() {
			ep, err := compileEndpoint(lbe)
			if err != nil {
				return nil, fmt.Errorf("endpoints[%d].lb_endpoints[%d]: %w", i, j, err)
			}
			w := uint32Or(lbe.GetLoadBalancingWeight(), 1)
			if weight == 0 {
				weight = w
			} else if w != weight {
				return nil, fmt.Errorf("endpoints[%d].lb_endpoints[%d]: load_balancing_weight %d differs from %d: weighted endpoints are not supported", i, j, w, weight)
			}
			if seen[ep.addr] {
				continue
			}
			seen[ep.addr] = true
			la.endpoints = append(la.endpoints, ep)
		}
	}
	return la, nil
}

func compileEndpoint(lbe *endpointv3.LbEndpoint) (endpoint, error) {
	if lbe.GetEndpointName() != "" {
		return endpoint{}, errors.New("named endpoints are not supported")
	}
	addr, err := socketAddress(lbe.GetEndpoint().GetAddress())
	if err != nil {
		return endpoint{}, err
	}
	ep := endpoint{addr: addr, health: lbe.GetHealthStatus()}
	md := lbe.GetMetadata().GetFilterMetadata()[EndpointMetadataKey]
	ep.tunnel, ep.identity, err = endpointMetadata(md)
	if err == nil {
		ep.workload, err = endpointWorkload(md)
	}
	if err != nil {
		return endpoint{}, fmt.Errorf("metadata %q: %w", EndpointMetadataKey, err)
	}
	return ep, nil
}

func socketAddress(a *corev3.Address) (netip.AddrPort, error) {
	sa := a.GetSocketAddress()
	switch {
	case sa == nil:
		return netip.AddrPort{}, errors.New("address must be a socket_address")
	case sa.GetProtocol() != corev3.SocketAddress_TCP:
		return netip.AddrPort{}, fmt.Errorf("protocol %s is not supported: only TCP", sa.GetProtocol())
	case sa.GetResolverName() != "":
		return netip.AddrPort{}, errors.New("resolver_name is not supported: the address must be an IP")
	case sa.GetNamedPort() != "":
		return netip.AddrPort{}, errors.New("named_port is not supported")
	case sa.GetPortValue() == 0: // ValidateAll caps it at 65535
		return netip.AddrPort{}, fmt.Errorf("port_value %d is not a port", sa.GetPortValue())
	}
	ip, err := netip.ParseAddr(sa.GetAddress())
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("address %q is not an IP", sa.GetAddress())
	}
	return netip.AddrPortFrom(ip, uint16(sa.GetPortValue())), nil
}

// endpointMetadata reads {tunnel, identity}. Without the metadata the
// endpoint is plain TCP; with it, both fields must make sense.
func endpointMetadata(md *structpb.Struct) (Tunnel, spiffe.ID, error) {
	if md == nil {
		return TunnelNone, spiffe.ID{}, nil
	}
	tunnelName, err := stringField(md, "tunnel")
	if err != nil {
		return 0, spiffe.ID{}, err
	}
	identity, err := stringField(md, "identity")
	if err != nil {
		return 0, spiffe.ID{}, err
	}
	var tunnel Tunnel
	switch tunnelName {
	case "hbone":
		tunnel = TunnelHBONE
	case "none":
		tunnel = TunnelNone
	default:
		return 0, spiffe.ID{}, fmt.Errorf(`tunnel %q: must be "hbone" or "none"`, tunnelName)
	}
	var id spiffe.ID
	switch {
	case identity != "":
		if id, err = spiffe.Parse(identity); err != nil {
			return 0, spiffe.ID{}, fmt.Errorf("identity: %w", err)
		}
	case tunnel == TunnelHBONE:
		return 0, spiffe.ID{}, errors.New("identity is required with tunnel hbone")
	}
	return tunnel, id, nil
}

// endpointWorkload reads the telemetry keys: workload, canonical_service,
// canonical_revision, app, version and cluster, each optional.
func endpointWorkload(md *structpb.Struct) (Workload, error) {
	var w Workload
	for _, f := range []struct {
		key  string
		into *string
	}{
		{"workload", &w.Name},
		{"canonical_service", &w.CanonicalService},
		{"canonical_revision", &w.CanonicalRevision},
		{"app", &w.App},
		{"version", &w.Version},
		{"cluster", &w.Cluster},
	} {
		v, err := stringField(md, f.key)
		if err != nil {
			return Workload{}, err
		}
		*f.into = v
	}
	return w, nil
}

// stringField returns a string field, "" when absent.
func stringField(s *structpb.Struct, name string) (string, error) {
	v, ok := s.GetFields()[name]
	if !ok {
		return "", nil
	}
	str, ok := v.GetKind().(*structpb.Value_StringValue)
	if !ok {
		return "", fmt.Errorf("%s must be a string", name)
	}
	return str.StringValue, nil
}

func uint32Or(v *wrapperspb.UInt32Value, def uint32) uint32 {
	if v == nil {
		return def
	}
	return v.GetValue()
}

func durationOr(d *durationpb.Duration, def time.Duration) time.Duration {
	if d == nil {
		return def
	}
	return d.AsDuration()
}

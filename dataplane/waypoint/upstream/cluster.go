package upstream

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
)

var (
	// ErrNoHealthyUpstream means the cluster has no host to send to (Envoy's
	// "no healthy upstream", response flag UH).
	ErrNoHealthyUpstream = errors.New("upstream: no healthy upstream")
	// ErrOverflow means a circuit breaker or the retry budget refused (Envoy's
	// response flag UO). The Start methods' errors wrap it and name the limit.
	ErrOverflow = errors.New("upstream: circuit breaker overflow")
)

// Cluster is one CDS cluster with its endpoints. It keeps its identity across
// updates that keep its name.
type Cluster struct {
	name string
	set  *Set

	mu                     sync.Mutex
	cfg                    *clusterConfig
	overprovisioningFactor float64
	hosts                  []*Host // EDS order

	// Derived from hosts by refresh, read by Pick.
	available  []*Host   // healthy and not ejected
	panicMode  bool      // too few available: Pick uses all hosts
	nextReturn time.Time // earliest end of an ejection; zero when none

	nextRoundRobin uint64

	// Circuit breaker gauges and counters.
	rqActive, rqPending, cxActive, retriesActive int64
	rqTotal, rqOverflow, rqPendingOverflow       uint64
	cxTotal, cxOverflow, retries, retryOverflow  uint64
	ejectionsOverflow                            uint64

	// The connections counted in cxActive that are idle (see ConnSlot), and the
	// channel closed when a slot frees or a connection becomes idle (nil: nobody
	// waits).
	idleConns map[*ConnSlot]struct{}
	slotEvent chan struct{}
}

// Name returns the cluster's name, outbound|<port>||<hostname>.
func (c *Cluster) Name() string { return c.name }

// ConnectTimeout is the cluster's connect_timeout (default 5s), for the
// proxy core's dial.
func (c *Cluster) ConnectTimeout() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cfg.connectTimeout
}

// apply installs a new configuration; hosts whose address persists keep
// their state.
func (c *Cluster) apply(cfg *clusterConfig, la *loadAssignment) {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := make(map[netip.AddrPort]*hostState, len(c.hosts))
	for _, h := range c.hosts {
		old[h.Addr] = h.state
	}
	c.cfg = cfg
	c.signalSlotLocked() // max_connections may have grown
	c.overprovisioningFactor = defaultOverprovisioningFactor
	c.hosts = nil
	if la != nil {
		c.overprovisioningFactor = la.overprovisioningFactor
		c.hosts = make([]*Host, 0, len(la.endpoints))
		for _, ep := range la.endpoints {
			st := old[ep.addr]
			if st == nil {
				st = &hostState{cluster: c}
			}
			delete(old, ep.addr)
			h := &Host{Addr: ep.addr, Tunnel: ep.tunnel, PeerID: ep.identity, Workload: ep.workload,
				addr: ep.addr.String(), health: ep.health, state: st}
			if !ep.identity.IsZero() {
				h.Identity = ep.identity.String()
			}
			c.hosts = append(c.hosts, h)
		}
	}
	for _, st := range old {
		st.removed = true
	}
	if cfg.outlier == nil {
		// Outlier detection switched off: nothing stays ejected.
		for _, h := range c.hosts {
			h.state.ejected = false
		}
	}
	c.refresh()
}

// remove marks every host gone, when the cluster leaves the configuration.
func (c *Cluster) remove() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, h := range c.hosts {
		h.state.removed = true
	}
}

// refresh recomputes what Pick reads after the hosts or their ejections
// changed.
func (c *Cluster) refresh() {
	c.available = c.available[:0]
	c.nextReturn = time.Time{}
	for _, h := range c.hosts {
		if h.state.ejected {
			if c.nextReturn.IsZero() || h.state.ejectedUntil.Before(c.nextReturn) {
				c.nextReturn = h.state.ejectedUntil
			}
			continue
		}
		if h.healthy() {
			c.available = append(c.available, h)
		}
	}
	c.panicMode = inPanic(len(c.available), len(c.hosts), c.cfg.panicThreshold, c.overprovisioningFactor)
}

// inPanic is Envoy's panic decision for a single priority: the priority's
// availability (available share scaled by the overprovisioning factor,
// capped at 100%) is short of 100% and the available share is below the
// panic threshold.
func inPanic(available, total int, threshold, overprovisioningFactor float64) bool {
	if total == 0 {
		return false
	}
	availablePercent := 100 * float64(available) / float64(total)
	return availablePercent*overprovisioningFactor/100 < 100 && availablePercent < threshold
}

// Pick chooses a host by the cluster's lb_policy among the healthy,
// non-ejected hosts, or among all hosts in panic mode. It returns
// ErrNoHealthyUpstream when there is none; circuit breakers are the Start
// methods' business.
func (c *Cluster) Pick() (*Host, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.returnEjectedHosts(c.set.now())
	candidates := c.available
	if c.panicMode {
		candidates = c.hosts
	}
	if len(candidates) == 0 {
		return nil, ErrNoHealthyUpstream
	}
	switch c.cfg.lbPolicy {
	case clusterv3.Cluster_LEAST_REQUEST:
		return c.leastRequest(candidates), nil
	case clusterv3.Cluster_RANDOM:
		return candidates[c.set.rand(len(candidates))], nil
	default:
		h := candidates[c.nextRoundRobin%uint64(len(candidates))]
		c.nextRoundRobin++
		return h, nil
	}
}

// leastRequest is Envoy's unweighted least request: the fewest active
// requests among choiceCount random hosts, or among all hosts (ties broken at
// random) when there are no more than choiceCount.
func (c *Cluster) leastRequest(hosts []*Host) *Host {
	if len(hosts) <= c.cfg.choiceCount {
		var best *Host
		ties := 0
		for _, h := range hosts {
			switch {
			case best == nil || h.state.active < best.state.active:
				best, ties = h, 1
			case h.state.active == best.state.active:
				ties++
				if c.set.rand(ties) == 0 { // each of the tied hosts wins with chance 1/ties
					best = h
				}
			}
		}
		return best
	}
	var best *Host
	for range c.cfg.choiceCount {
		h := hosts[c.set.rand(len(hosts))]
		if best == nil || h.state.active < best.state.active {
			best = h
		}
	}
	return best
}

// StartRequest admits a request under max_requests. Call it once per
// downstream request, covering all its attempts, and call done when the
// request ends.
func (c *Cluster) StartRequest() (done func(), err error) {
	if err := c.AdmitRequest(); err != nil {
		return nil, err
	}
	var once sync.Once
	return func() { once.Do(c.EndRequest) }, nil
}

// AdmitRequest is StartRequest without a done function to allocate: a request it
// admits must call EndRequest exactly once.
func (c *Cluster) AdmitRequest() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rqActive >= c.cfg.limits.maxRequests {
		c.rqOverflow++
		return fmt.Errorf("%w: max_requests %d", ErrOverflow, c.cfg.limits.maxRequests)
	}
	c.rqTotal++
	c.rqActive++
	return nil
}

// EndRequest ends a request AdmitRequest admitted.
func (c *Cluster) EndRequest() {
	c.mu.Lock()
	c.rqActive--
	c.mu.Unlock()
}

// StartConnection counts a TCP listener's upstream connection under
// max_connections, refusing at the limit (Envoy's tcp_proxy); call done when it
// closes. HTTP connections wait for a slot instead (WaitConnection).
func (c *Cluster) StartConnection() (done func(), err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cxActive >= c.cfg.limits.maxConnections {
		c.cxOverflow++
		return nil, fmt.Errorf("%w: max_connections %d", ErrOverflow, c.cfg.limits.maxConnections)
	}
	return c.newConnSlotLocked().Release, nil
}

// StartRetry admits a retry attempt, under the retry budget when the
// thresholds have one and under max_retries otherwise; hold it while the
// attempt runs. With a budget, the limit is budget_percent of the active
// requests (retries are not requests), at least min_retry_concurrency.
func (c *Cluster) StartRetry() (done func(), err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	limit := c.cfg.limits.maxRetries
	what := "max_retries"
	if b := c.cfg.limits.budget; b != nil {
		limit = max(int64(b.percent/100*float64(c.rqActive)), b.minConcurrency)
		what = "retry budget"
	}
	if c.retriesActive >= limit {
		c.retryOverflow++
		return nil, fmt.Errorf("%w: %s %d", ErrOverflow, what, limit)
	}
	c.retries++
	return c.hold(&c.retriesActive), nil
}

// hold increments a gauge and returns the function that gives it back, once.
// Called with c.mu held.
func (c *Cluster) hold(gauge *int64) func() {
	*gauge++
	var released bool
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if !released {
			released = true
			*gauge--
		}
	}
}

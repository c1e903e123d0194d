package upstream

import (
	"math"
	"net/netip"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/ambientmesh/ambient-operator/internal/spiffe"
)

// Tunnel says how the proxy core reaches a host.
type Tunnel int

const (
	// TunnelNone is plain TCP to Addr.
	TunnelNone Tunnel = iota
	// TunnelHBONE is an HBONE CONNECT to Addr through the host's node,
	// verifying the peer as Identity.
	TunnelHBONE
)

func (t Tunnel) String() string {
	if t == TunnelHBONE {
		return "hbone"
	}
	return "none"
}

// Host is one endpoint of a cluster. Its exported fields never change: each
// Update makes new Host values, sharing the state of the hosts whose address
// persists, so a Host picked before an Update may still Begin and End.
type Host struct {
	Addr     netip.AddrPort
	Tunnel   Tunnel
	Identity string    // the SPIFFE ID the peer must present; "" without one
	PeerID   spiffe.ID // Identity, parsed
	Workload Workload  // how telemetry names the host's workload

	addr   string // Addr as text, formatted once (see AddrString)
	health corev3.HealthStatus
	state  *hostState
}

// AddrString is Addr as text ("ip:port"): requests and access-log lines name the host
// with it, and a Host made by its cluster formats it once instead of per request.
func (h *Host) AddrString() string {
	if h.addr != "" {
		return h.addr
	}
	return h.Addr.String()
}

// Workload names a host's workload for telemetry, as the endpoint metadata's
// telemetry keys say; a field the control plane did not send is "".
type Workload struct {
	Name, CanonicalService, CanonicalRevision, App, Version, Cluster string
}

// healthy reports the EDS health: UNKNOWN and HEALTHY hosts take traffic.
func (h *Host) healthy() bool {
	return h.health == corev3.HealthStatus_UNKNOWN || h.health == corev3.HealthStatus_HEALTHY
}

// hostState is what a host accumulates while it serves; it lives as long as
// the host's address stays in the cluster. Guarded by cluster.mu.
type hostState struct {
	cluster *Cluster
	removed bool // no longer in the cluster: outcomes no longer eject

	active              int64
	successes, failures uint64

	consecutive5xx, consecutiveGatewayFailure, consecutiveLocalOriginFailure uint32

	ejected      bool
	ejectedUntil time.Time
	returnedAt   time.Time // when the last ejection ended; zero if never ejected
	ejections    uint64    // how many times ever ejected
	multiplier   int64     // Envoy's ejection time backoff
}

// Outcome is how a request to a host ended. Status is the response status,
// 0 when no response came; ConnectFailure means the connection (or HBONE
// tunnel) could not be established; Reset means the stream or connection
// broke before the response completed.
type Outcome struct {
	Status         int
	ConnectFailure bool
	Reset          bool
}

func (o Outcome) localOriginFailure() bool { return o.ConnectFailure || o.Reset }

// failed reports whether the outcome is an error for the host's counters.
func (o Outcome) failed() bool { return o.localOriginFailure() || is5xx(o.Status) }

func is5xx(status int) bool { return status >= 500 && status < 600 }

func isGatewayError(status int) bool { return status == 502 || status == 503 || status == 504 }

// Begin marks a request active on h, for LEAST_REQUEST and the dump. Call End
// exactly once for every Begin.
func (h *Host) Begin() {
	c := h.state.cluster
	c.mu.Lock()
	h.state.active++
	c.mu.Unlock()
}

// End ends a request begun on h and feeds its outcome to outlier detection.
// An outcome with neither a status nor a failure (the downstream gave up)
// says nothing about the host: it only ends the request.
func (h *Host) End(o Outcome) {
	c := h.state.cluster
	c.mu.Lock()
	defer c.mu.Unlock()
	st := h.state
	st.active--
	if o.Status == 0 && !o.localOriginFailure() {
		return
	}
	if o.failed() {
		st.failures++
	} else {
		st.successes++
	}
	if st.removed || c.cfg.outlier == nil {
		return
	}
	now := c.set.now()
	c.returnEjectedHosts(now)
	if st.ejected {
		// Envoy ignores errors of an ejected host (its counts are cleared when it returns).
		return
	}
	c.recordOutcome(st, o, now)
}

// recordOutcome counts consecutive errors as Envoy's outlier detector does.
func (c *Cluster) recordOutcome(st *hostState, o Outcome, now time.Time) {
	od := c.cfg.outlier
	status := o.Status
	if o.localOriginFailure() {
		if od.splitLocalOrigin {
			st.consecutiveLocalOriginFailure++
			if reached(st.consecutiveLocalOriginFailure, od.consecutiveLocalOriginFailure) {
				st.consecutiveLocalOriginFailure = 0
				c.tryEject(st, od.enforcingLocalOriginFailure, now)
			}
			return
		}
		status = 503 // what Envoy's router would answer for it
	} else if od.splitLocalOrigin {
		st.consecutiveLocalOriginFailure = 0 // a response means the connection worked
	}

	if !is5xx(status) {
		st.consecutive5xx = 0
		st.consecutiveGatewayFailure = 0
		return
	}
	if isGatewayError(status) {
		st.consecutiveGatewayFailure++
		if reached(st.consecutiveGatewayFailure, od.consecutiveGatewayFailure) {
			st.consecutiveGatewayFailure = 0
			c.tryEject(st, od.enforcingGatewayFailure, now)
		}
	} else {
		st.consecutiveGatewayFailure = 0
	}
	st.consecutive5xx++
	// Unless the gateway failure just ejected the host; Envoy then keeps the
	// 5xx count until the host returns, which clears it anyway.
	if reached(st.consecutive5xx, od.consecutive5xx) && !st.ejected {
		st.consecutive5xx = 0
		c.tryEject(st, od.enforcing5xx, now)
	}
}

// reached reports whether count has hit an enabled threshold (0 disables).
func reached(count, threshold uint32) bool { return threshold > 0 && count >= threshold }

// tryEject ejects st if max_ejection_percent allows it and the enforcing
// percentage says so.
func (c *Cluster) tryEject(st *hostState, enforcing uint32, now time.Time) {
	od := c.cfg.outlier
	ejected := c.ejectedCount()
	allowed := uint64(ejected+1)*100 <= uint64(od.maxEjectionPercent)*uint64(len(c.hosts)) ||
		(od.alwaysEjectOneHost && ejected == 0)
	if !allowed {
		c.ejectionsOverflow++
		return
	}
	if enforcing == 0 || (enforcing < 100 && c.set.rand(100) >= int(enforcing)) {
		return
	}

	// Envoy lowers the multiplier by one at every interval tick the host
	// spends in service; counting those ticks now gives the same value.
	if !st.returnedAt.IsZero() {
		st.multiplier = max(0, st.multiplier-int64(now.Sub(st.returnedAt)/od.interval))
	}
	// Envoy's cap on the multiplier: it grows while base×multiplier < max+base.
	if st.multiplier == 0 || saturatingMul(od.baseEjectionTime, st.multiplier-1) < od.maxEjectionTime {
		st.multiplier++
	}
	ejectFor := min(saturatingMul(od.baseEjectionTime, st.multiplier), od.maxEjectionTime)
	if od.maxJitter > 0 {
		ejectFor += time.Duration(c.set.rand(int(min(od.maxJitter.Milliseconds(), math.MaxInt-1))+1)) * time.Millisecond
	}

	st.ejected = true
	st.ejectedUntil = now.Add(ejectFor)
	st.ejections++
	c.refresh()
}

// ejectedCount counts the cluster's ejected hosts.
func (c *Cluster) ejectedCount() int {
	n := 0
	for _, h := range c.hosts {
		if h.state.ejected {
			n++
		}
	}
	return n
}

// returnEjectedHosts brings back the hosts whose ejection is over.
func (c *Cluster) returnEjectedHosts(now time.Time) {
	if c.nextReturn.IsZero() || now.Before(c.nextReturn) {
		return
	}
	for _, h := range c.hosts {
		st := h.state
		if st.ejected && !now.Before(st.ejectedUntil) {
			st.ejected = false
			st.returnedAt = st.ejectedUntil
			st.consecutive5xx, st.consecutiveGatewayFailure, st.consecutiveLocalOriginFailure = 0, 0, 0
		}
	}
	c.refresh()
}

// saturatingMul is d×n (n ≥ 0), capped at the longest Duration.
func saturatingMul(d time.Duration, n int64) time.Duration {
	if n > 0 && d > math.MaxInt64/time.Duration(n) {
		return math.MaxInt64
	}
	return d * time.Duration(n)
}

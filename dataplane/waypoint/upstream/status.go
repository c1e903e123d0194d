package upstream

import (
	"slices"
	"time"
)

// ClusterStatus is a cluster's state for the admin /clusters dump and
// /stats. Names follow Envoy's cluster stats where one exists.
type ClusterStatus struct {
	Name              string       `json:"name"`
	LbPolicy          string       `json:"lb_policy"`
	Panic             bool         `json:"panic"` // fewer hosts available than the panic threshold
	RqActive          int64        `json:"rq_active"`
	RqPendingActive   int64        `json:"rq_pending_active"`
	RqTotal           uint64       `json:"rq_total"`
	RqOverflow        uint64       `json:"rq_overflow"`
	RqPendingOverflow uint64       `json:"rq_pending_overflow"`
	CxActive          int64        `json:"cx_active"`
	CxTotal           uint64       `json:"cx_total"`
	CxOverflow        uint64       `json:"cx_overflow"`
	RetriesActive     int64        `json:"retries_active"`
	Retries           uint64       `json:"retries"`
	RetryOverflow     uint64       `json:"retry_overflow"`
	EjectionsActive   int          `json:"ejections_active"`
	EjectionsOverflow uint64       `json:"ejections_overflow"` // ejections refused by max_ejection_percent
	Hosts             []HostStatus `json:"hosts"`
}

// HostStatus is one host's state.
type HostStatus struct {
	Address      string    `json:"address"`
	Tunnel       string    `json:"tunnel"`
	Identity     string    `json:"identity,omitempty"`
	Health       string    `json:"health"` // the EDS health_status
	EjectedUntil time.Time `json:"ejected_until,omitzero"`
	Ejections    uint64    `json:"ejections"`
	Active       int64     `json:"active"`
	Successes    uint64    `json:"successes"`
	Failures     uint64    `json:"failures"` // 5xx, connect failures and resets
}

func (c *Cluster) status() ClusterStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.returnEjectedHosts(c.set.now())
	cs := ClusterStatus{
		Name:              c.name,
		LbPolicy:          c.cfg.lbPolicy.String(),
		Panic:             c.panicMode,
		RqActive:          c.rqActive,
		RqPendingActive:   c.rqPending,
		RqTotal:           c.rqTotal,
		RqOverflow:        c.rqOverflow,
		RqPendingOverflow: c.rqPendingOverflow,
		CxActive:          c.cxActive,
		CxTotal:           c.cxTotal,
		CxOverflow:        c.cxOverflow,
		RetriesActive:     c.retriesActive,
		Retries:           c.retries,
		RetryOverflow:     c.retryOverflow,
		EjectionsActive:   c.ejectedCount(),
		EjectionsOverflow: c.ejectionsOverflow,
		Hosts:             make([]HostStatus, 0, len(c.hosts)),
	}
	hosts := slices.Clone(c.hosts)
	slices.SortFunc(hosts, func(a, b *Host) int { return a.Addr.Compare(b.Addr) })
	for _, h := range hosts {
		st := h.state
		hs := HostStatus{
			Address:   h.Addr.String(),
			Tunnel:    h.Tunnel.String(),
			Identity:  h.Identity,
			Health:    h.health.String(),
			Ejections: st.ejections,
			Active:    st.active,
			Successes: st.successes,
			Failures:  st.failures,
		}
		if st.ejected {
			hs.EjectedUntil = st.ejectedUntil
		}
		cs.Hosts = append(cs.Hosts, hs)
	}
	return cs
}

package ztunnel

import (
	"net"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"github.com/ambientmesh/ambient-operator/dataplane/hbone"
	"github.com/ambientmesh/ambient-operator/dataplane/ztunnel/metrics"
)

// Connection directions.
const (
	DirOutbound         = "outbound"
	DirInbound          = "inbound"
	DirInboundPlaintext = "inbound_plaintext"
)

// conn is one proxied connection, from acceptance until both halves are done.
type conn struct {
	id        uint64
	direction string
	podUID    string
	pod       string // namespace/name
	src, dst  netip.AddrPort
	srcID     string
	dstID     string
	labels    metrics.Labels
	started   time.Time
	stats     hbone.JoinStats
	// sides are closed to end the connection (client side first).
	sides []net.Conn
	// recheck re-authorizes an inbound connection under the current policy; nil for
	// outbound connections (authorization happens at the destination).
	recheck func() (allowed bool, reason string)

	// guarded by registry.mu
	reportedRecv, reportedSent int64
	closedReason               string
}

// registry tracks open connections for dumps, metrics and policy re-evaluation.
type registry struct {
	metrics *metrics.Metrics
	log     logr.Logger

	mu    sync.Mutex
	next  uint64
	conns map[uint64]*conn
	// handlers counts connection handlers still running, from accept on. A connection
	// joins conns only once its upstream is dialled, so without this a drain would see
	// "idle" while a just-accepted connection is still dialling, and cut it.
	handlers int
	idle     chan struct{} // closed when nothing is open or being set up, if someone waits
}

func newRegistry(m *metrics.Metrics, log logr.Logger) *registry {
	return &registry{metrics: m, log: log, conns: map[uint64]*conn{}}
}

func (r *registry) add(c *conn) {
	r.mu.Lock()
	r.next++
	c.id = r.next
	c.started = time.Now()
	r.conns[c.id] = c
	r.mu.Unlock()
	r.metrics.Opened(c.labels)
}

// remove reports the connection's last bytes and closes it in the metrics.
func (r *registry) remove(c *conn) (reason string) {
	r.mu.Lock()
	delete(r.conns, c.id)
	r.flushLocked(c)
	reason = c.closedReason
	r.signalIdleLocked()
	r.mu.Unlock()
	r.metrics.Closed(c.labels)
	return reason
}

func (r *registry) flushLocked(c *conn) {
	recv, sent := c.stats.AToB.Load(), c.stats.BToA.Load()
	r.metrics.Bytes(c.labels, recv-c.reportedRecv, sent-c.reportedSent)
	c.reportedRecv, c.reportedSent = recv, sent
}

// flush reports the bytes of open connections (called before each scrape, so long-lived
// connections show up in byte counters while they run).
func (r *registry) flush() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.conns {
		r.flushLocked(c)
	}
}

// recheckAll closes inbound connections the current policy denies.
func (r *registry) recheckAll() {
	r.mu.Lock()
	var open []*conn
	for _, c := range r.conns {
		if c.recheck != nil && c.closedReason == "" {
			open = append(open, c)
		}
	}
	r.mu.Unlock()
	for _, c := range open {
		allowed, reason := c.recheck()
		if allowed {
			continue
		}
		r.mu.Lock()
		c.closedReason = reason
		r.mu.Unlock()
		r.log.Info("closing open connection: policy now denies it", "src", c.src, "src.identity", c.srcID, "dst", c.dst, "dst.workload", c.pod, "reason", reason)
		closeSides(c)
	}
}

func closeSides(c *conn) {
	for _, s := range c.sides {
		_ = s.Close()
	}
}

// closePod closes every connection of a pod.
func (r *registry) closePod(uid string) {
	r.mu.Lock()
	var victims []*conn
	for _, c := range r.conns {
		if c.podUID == uid {
			victims = append(victims, c)
		}
	}
	r.mu.Unlock()
	for _, c := range victims {
		closeSides(c)
	}
}

// handlerStarted is called as a connection is accepted, before its handler runs;
// handlerDone when the handler returns.
func (r *registry) handlerStarted() {
	r.mu.Lock()
	r.handlers++
	r.mu.Unlock()
}

func (r *registry) handlerDone() {
	r.mu.Lock()
	r.handlers--
	r.signalIdleLocked()
	r.mu.Unlock()
}

func (r *registry) idleLocked() bool { return len(r.conns) == 0 && r.handlers == 0 }

func (r *registry) signalIdleLocked() {
	if r.idleLocked() && r.idle != nil {
		close(r.idle)
		r.idle = nil
	}
}

// waitIdle returns a channel closed when no connection is open or being set up.
func (r *registry) waitIdle() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	ch := make(chan struct{})
	if r.idleLocked() {
		close(ch)
		return ch
	}
	if r.idle == nil {
		r.idle = make(chan struct{})
	}
	return r.idle
}

func (r *registry) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.conns)
}

// ConnInfo is the admin view of an open connection.
type ConnInfo struct {
	Direction   string    `json:"direction"`
	Pod         string    `json:"pod"`
	Source      string    `json:"source"`
	Destination string    `json:"destination"`
	SrcIdentity string    `json:"sourceIdentity,omitempty"`
	DstIdentity string    `json:"destinationIdentity,omitempty"`
	Started     time.Time `json:"started"`
	BytesRecv   int64     `json:"bytesReceived"`
	BytesSent   int64     `json:"bytesSent"`
}

func (r *registry) dump() []ConnInfo {
	r.mu.Lock()
	out := make([]ConnInfo, 0, len(r.conns))
	for _, c := range r.conns {
		out = append(out, ConnInfo{
			Direction: c.direction, Pod: c.pod, Source: c.src.String(), Destination: c.dst.String(),
			SrcIdentity: c.srcID, DstIdentity: c.dstID, Started: c.started,
			BytesRecv: c.stats.AToB.Load(), BytesSent: c.stats.BToA.Load(),
		})
	}
	r.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Started.Before(out[j].Started) })
	return out
}

package upstream

import (
	"context"
	"fmt"
	"io"
)

// ConnSlot is one upstream connection counted under the cluster's max_connections.
// Its holder marks the connection idle while it waits in a pool, so that a request
// waiting for a slot can close it to make room, and claims it back before use.
type ConnSlot struct {
	c *Cluster
	// Guarded by c.mu.
	idleConn io.Closer // set while the connection is idle
	evicted  bool      // the cluster closed it while idle
	released bool
}

// WaitConnection admits a new upstream HTTP connection under max_connections, as
// Envoy's HTTP connection pools do. At the limit, the request waits for a slot as
// a pending request, counted under max_pending_requests (over it: ErrOverflow, at
// once). While it waits, it closes idle connections of the cluster to make room,
// since the waypoint keeps idle connections per client and endpoint and they would
// otherwise hold their slots until their idle timeout. It returns ctx's error when
// ctx ends first. Release the slot when the connection closes.
func (c *Cluster) WaitConnection(ctx context.Context) (*ConnSlot, error) {
	c.mu.Lock()
	pending := false
	for c.cxActive >= c.cfg.limits.maxConnections {
		if !pending {
			if c.rqPending >= c.cfg.limits.maxPendingRequests {
				c.rqPendingOverflow++
				c.mu.Unlock()
				return nil, fmt.Errorf("%w: max_pending_requests %d (max_connections %d reached)",
					ErrOverflow, c.cfg.limits.maxPendingRequests, c.cfg.limits.maxConnections)
			}
			pending = true
			c.rqPending++
			c.cxOverflow++
		}
		evict := c.evictIdleLocked()
		if c.slotEvent == nil {
			c.slotEvent = make(chan struct{})
		}
		event := c.slotEvent
		c.mu.Unlock()
		if evict != nil {
			_ = evict.Close() // its Release frees a slot
		}
		select {
		case <-event:
		case <-ctx.Done():
			c.mu.Lock()
			c.rqPending--
			c.mu.Unlock()
			return nil, ctx.Err()
		}
		c.mu.Lock()
	}
	if pending {
		c.rqPending--
	}
	s := c.newConnSlotLocked()
	c.mu.Unlock()
	return s, nil
}

func (c *Cluster) newConnSlotLocked() *ConnSlot {
	c.cxActive++
	c.cxTotal++
	return &ConnSlot{c: c}
}

// evictIdleLocked takes one idle connection away from its pool, for the caller to
// close (nil: none is idle).
func (c *Cluster) evictIdleLocked() io.Closer {
	for s := range c.idleConns {
		delete(c.idleConns, s)
		s.evicted = true
		idle := s.idleConn
		s.idleConn = nil
		return idle
	}
	return nil
}

// signalSlotLocked wakes the requests waiting for a slot.
func (c *Cluster) signalSlotLocked() {
	if c.slotEvent != nil {
		close(c.slotEvent)
		c.slotEvent = nil
	}
}

// Idle marks the slot's connection idle in a pool: closing conn must Release the
// slot. A waiting request is woken to take the room.
func (s *ConnSlot) Idle(conn io.Closer) {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.released || s.evicted {
		return
	}
	s.idleConn = conn
	if c.idleConns == nil {
		c.idleConns = map[*ConnSlot]struct{}{}
	}
	c.idleConns[s] = struct{}{}
	c.signalSlotLocked()
}

// Claim takes the slot's idle connection back for a request. It is false when the
// cluster closed (or is closing) the connection to make room: the pool drops it.
func (s *ConnSlot) Claim() bool {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.idleConns, s)
	s.idleConn = nil
	return !s.evicted && !s.released
}

// Release gives the slot back once the connection is closed; it may be called more
// than once.
func (s *ConnSlot) Release() {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.released {
		return
	}
	s.released = true
	delete(c.idleConns, s)
	c.cxActive--
	c.signalSlotLocked()
}

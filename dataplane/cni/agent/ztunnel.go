package agent

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"github.com/ambientmesh/ambient-operator/dataplane/handoff"
)

// ErrZtunnelNotConnected is returned when a pod cannot be handed to ztunnel
// right now; the pod stays in the set and is replayed on connect.
var ErrZtunnelNotConnected = handoff.ErrNotConnected

// Workload is one enrolled pod as ztunnel needs it.
type Workload = handoff.Workload

// Ztunnel is the agent's side of the hand-off: the set of enrolled workloads,
// which a handoff.ReconnectingClient replays to ztunnel on every (re)connect
// and keeps ztunnel told of as it changes.
type Ztunnel struct {
	SocketPath string
	Log        logr.Logger
	// RetryInterval is the first pause between connection attempts (default
	// handoff.DefaultRetryInterval, doubling up to handoff.DefaultMaxRetryInterval).
	RetryInterval time.Duration
	// AckTimeout bounds each message's round trip (default handoff.DefaultAckTimeout).
	AckTimeout time.Duration
	// OnConnection, when set, is told of every connect/disconnect (metrics).
	OnConnection func(connected bool)

	mu  sync.Mutex
	set map[string]Workload

	clientOnce sync.Once
	client     *handoff.ReconnectingClient
}

// handoff returns the client, built from the fields on first use.
func (z *Ztunnel) handoff() *handoff.ReconnectingClient {
	z.clientOnce.Do(func() {
		z.client = &handoff.ReconnectingClient{
			SocketPath: z.SocketPath, Snapshot: z.snapshot, Log: z.Log,
			RetryInterval: z.RetryInterval, AckTimeout: z.AckTimeout, OnConnection: z.OnConnection,
		}
	})
	return z.client
}

func (z *Ztunnel) snapshot() []Workload {
	z.mu.Lock()
	defer z.mu.Unlock()
	return slices.Collect(maps.Values(z.set))
}

// Connected reports whether the last snapshot was acknowledged and the
// connection is still up.
func (z *Ztunnel) Connected() bool { return z.handoff().Connected() }

// Snapshots counts completed replays.
func (z *Ztunnel) Snapshots() int64 { return z.handoff().Snapshots() }

// Has reports whether uid is in the set.
func (z *Ztunnel) Has(uid string) bool {
	z.mu.Lock()
	defer z.mu.Unlock()
	_, ok := z.set[uid]
	return ok
}

// Add puts w in the set and, when connected, hands its netns to ztunnel and
// waits for the Ack.
func (z *Ztunnel) Add(w Workload) error {
	z.mu.Lock()
	if z.set == nil {
		z.set = map[string]Workload{}
	}
	z.set[w.UID] = w
	z.mu.Unlock()
	return z.handoff().Add(w)
}

// Del takes uid out of the set and, when connected, tells ztunnel.
func (z *Ztunnel) Del(uid string) error {
	z.Forget(uid)
	return z.handoff().Del(uid)
}

// Forget takes uid out of the set without telling ztunnel (rollback of an
// Add that was never acknowledged).
func (z *Ztunnel) Forget(uid string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	delete(z.set, uid)
}

// Run keeps a connection to ztunnel until ctx ends.
func (z *Ztunnel) Run(ctx context.Context) error { return z.handoff().Run(ctx) }

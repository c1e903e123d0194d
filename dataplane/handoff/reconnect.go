package handoff

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"

	pb "github.com/ambientmesh/ambient-operator/api/handoff/v1alpha1"
)

// Defaults of ReconnectingClient's pauses between connection attempts.
const (
	DefaultRetryInterval    = 200 * time.Millisecond
	DefaultMaxRetryInterval = 2 * time.Second
)

// ErrNotConnected is returned by ReconnectingClient.Add when ztunnel is not connected right
// now; a pod the agent keeps in its snapshot reaches ztunnel at the next replay.
var ErrNotConnected = errors.New("ztunnel is not connected to the node agent")

// Workload is one pod as the node agent hands it to ztunnel.
type Workload struct {
	UID            string
	Name           string
	Namespace      string
	ServiceAccount string
	// NetnsPath is reopened for every hand-off (each replay sends a fresh descriptor).
	NetnsPath string
}

func (w Workload) message() *pb.AddWorkload {
	return &pb.AddWorkload{Uid: w.UID, Name: w.Name, Namespace: w.Namespace, ServiceAccount: w.ServiceAccount}
}

// ReconnectingClient is the node agent's side of the hand-off for as long as Run runs: it
// keeps one connection to ztunnel, and on every (re)connect replays the agent's whole set of
// pods, as Snapshot returns it, before it reports itself connected. Add and Del are safe
// for concurrent use with each other and with a replay.
type ReconnectingClient struct {
	// SocketPath is ztunnel's hand-off socket.
	SocketPath string
	// Snapshot returns every pod the agent has enrolled. It is called once per connection,
	// and the pods are replayed in UID order: AddWorkload with the netns opened afresh, or
	// KeepWorkload when the netns has gone from its path (ztunnel keeps the one it holds).
	Snapshot func() []Workload
	Log      logr.Logger
	// RetryInterval is the first pause before dialing again, after a failed attempt or a
	// lost connection (default DefaultRetryInterval); it doubles with every failed attempt
	// up to MaxRetryInterval (default DefaultMaxRetryInterval).
	RetryInterval    time.Duration
	MaxRetryInterval time.Duration
	// AckTimeout bounds each message's round trip (default DefaultAckTimeout).
	AckTimeout time.Duration
	// OnConnection, when set, is told of every connect and disconnect (metrics).
	OnConnection func(connected bool)

	mu        sync.Mutex // serializes replays, Add and Del on the connection
	conn      *Client    // nil while disconnected
	connected atomic.Bool
	snapshots atomic.Int64
}

// Connected reports whether the last snapshot was acknowledged and the connection is still
// up.
func (r *ReconnectingClient) Connected() bool { return r.connected.Load() }

// Snapshots counts completed replays.
func (r *ReconnectingClient) Snapshots() int64 { return r.snapshots.Load() }

// Add hands w's netns to ztunnel and waits for the Ack. The caller puts w in its snapshot
// first: while disconnected Add returns ErrNotConnected and the next replay delivers w; an
// Add that races a replay already carrying w sends it twice, which ztunnel takes as the
// same pod again. A refusal (RefusedError) keeps the connection; an undeliverable message
// drops it and Run reconnects.
func (r *ReconnectingClient) Add(w Workload) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conn == nil {
		return ErrNotConnected
	}
	netns, err := os.Open(w.NetnsPath)
	if err != nil {
		return fmt.Errorf("open netns of pod %s/%s: %w", w.Namespace, w.Name, err)
	}
	defer netns.Close()
	return r.dropOnTransportError(r.conn.AddWorkload(w.message(), int(netns.Fd())))
}

// Del tells ztunnel to stop serving uid and waits for the Ack. The caller takes uid out of
// its snapshot first: while disconnected Del does nothing, since the next snapshot will not
// name the pod and ztunnel drops it then.
func (r *ReconnectingClient) Del(uid string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conn == nil {
		return nil
	}
	return r.dropOnTransportError(r.conn.DelWorkload(uid))
}

// dropOnTransportError closes the connection unless err is a refusal by ztunnel (which
// leaves the conversation intact); Run notices and reconnects.
func (r *ReconnectingClient) dropOnTransportError(err error) error {
	var refused *RefusedError
	if err != nil && !errors.As(err, &refused) {
		r.disconnectLocked()
	}
	return err
}

func (r *ReconnectingClient) disconnectLocked() {
	if r.conn == nil {
		return
	}
	_ = r.conn.Close()
	r.conn = nil
	r.connected.Store(false)
	if r.OnConnection != nil {
		r.OnConnection(false)
	}
}

// Run keeps a connection to ztunnel until ctx ends, then closes it.
func (r *ReconnectingClient) Run(ctx context.Context) error {
	defer func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.disconnectLocked()
	}()
	first := cmp.Or(r.RetryInterval, DefaultRetryInterval)
	limit := max(first, cmp.Or(r.MaxRetryInterval, DefaultMaxRetryInterval))
	pause := first
	for {
		conn, err := r.connect(ctx)
		if err != nil {
			r.Log.V(1).Info("ztunnel not reachable yet", "socket", r.SocketPath, "error", err.Error())
		} else {
			r.watch(ctx, conn)
			pause = first
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(pause):
		}
		pause = min(2*pause, limit)
	}
}

// connect dials and replays the snapshot; on success the connection is live.
func (r *ReconnectingClient) connect(ctx context.Context) (*Client, error) {
	conn, err := dial(ctx, r.SocketPath, cmp.Or(r.AckTimeout, DefaultAckTimeout))
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var pods []Workload
	if r.Snapshot != nil {
		pods = slices.SortedFunc(slices.Values(r.Snapshot()), func(a, b Workload) int { return cmp.Compare(a.UID, b.UID) })
	}
	if err := r.replay(conn, pods); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("replaying to ztunnel: %w", err)
	}
	r.conn = conn
	r.connected.Store(true)
	r.snapshots.Add(1)
	if r.OnConnection != nil {
		r.OnConnection(true)
	}
	r.Log.Info("connected to ztunnel and replayed enrolled pods", "pods", len(pods))
	return conn, nil
}

func (r *ReconnectingClient) replay(conn *Client, pods []Workload) error {
	var refused *RefusedError
	for _, w := range pods {
		err := replayOne(conn, w)
		if errors.As(err, &refused) {
			r.Log.Error(err, "ztunnel refused a replayed pod", "pod", w.Namespace+"/"+w.Name)
			continue
		}
		if err != nil {
			return err
		}
	}
	return conn.SnapshotSent()
}

func replayOne(conn *Client, w Workload) error {
	netns, err := os.Open(w.NetnsPath)
	if err != nil {
		if _, statErr := os.Stat(w.NetnsPath); statErr != nil {
			// The netns can no longer be reached (its sandbox is going away): ztunnel keeps
			// serving the one it holds until the pod is deleted.
			return conn.KeepWorkload(w.UID)
		}
		return fmt.Errorf("open netns of pod %s/%s: %w", w.Namespace, w.Name, err)
	}
	defer netns.Close()
	return conn.AddWorkload(w.message(), int(netns.Fd()))
}

// watch returns once conn is gone — hung up by ztunnel, closed after a message could not
// be delivered, or replaced: a new ztunnel listens on the socket path (it binds the path as
// it starts, beside the old one during a surge update, and becomes ready only once it has
// the pods) — or ctx ends. Run then dials again and replays to the ztunnel on the path.
func (r *ReconnectingClient) watch(ctx context.Context, conn *Client) {
	replaced, err := conn.WaitGone(ctx)
	if err != nil {
		return // ctx ended; Run closes the connection
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conn == conn {
		if replaced {
			r.Log.Info("a new ztunnel listens on the hand-off socket: handing the pods over to it")
		} else {
			r.Log.Info("ztunnel closed the hand-off connection")
		}
		r.disconnectLocked()
	}
}

package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sys/unix"

	pb "github.com/ambientmesh/ambient-operator/api/handoff/v1alpha1"
	"github.com/ambientmesh/ambient-operator/dataplane/ztunnel/handoff"
)

// ErrZtunnelNotConnected is returned when a pod cannot be handed to ztunnel
// right now; the pod stays in the set and is replayed on connect.
var ErrZtunnelNotConnected = errors.New("ztunnel is not connected to the node agent")

// Workload is one enrolled pod as ztunnel needs it.
type Workload struct {
	UID            string
	Name           string
	Namespace      string
	ServiceAccount string
	// NetnsPath is reopened for every hand-off (each replay sends a fresh fd).
	NetnsPath string
}

func (w Workload) message() *pb.AddWorkload {
	return &pb.AddWorkload{Uid: w.UID, Name: w.Name, Namespace: w.Namespace, ServiceAccount: w.ServiceAccount}
}

// Ztunnel is the agent's side of the hand-off: it owns the set of enrolled
// workloads and one connection to ztunnel, and on every (re)connect replays
// the whole set and then SnapshotSent.
type Ztunnel struct {
	SocketPath string
	Log        logr.Logger
	// RetryInterval is the pause between connection attempts (default 1s).
	RetryInterval time.Duration
	// AckTimeout bounds each message's round trip (default 10s).
	AckTimeout time.Duration
	// OnConnection, when set, is told of every connect/disconnect (metrics).
	OnConnection func(connected bool)

	mu   sync.Mutex
	set  map[string]Workload
	conn *net.UnixConn

	connected atomic.Bool
	snapshots atomic.Int64
}

// Connected reports whether the last snapshot was acknowledged and the
// connection is still up.
func (z *Ztunnel) Connected() bool { return z.connected.Load() }

// Snapshots counts completed replays.
func (z *Ztunnel) Snapshots() int64 { return z.snapshots.Load() }

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
	defer z.mu.Unlock()
	if z.set == nil {
		z.set = map[string]Workload{}
	}
	z.set[w.UID] = w
	if z.conn == nil {
		return ErrZtunnelNotConnected
	}
	return z.dropOnTransportError(z.sendAdd(z.conn, w))
}

// Del takes uid out of the set and, when connected, tells ztunnel.
func (z *Ztunnel) Del(uid string) error {
	z.mu.Lock()
	defer z.mu.Unlock()
	delete(z.set, uid)
	if z.conn == nil {
		return nil // the next snapshot will not name it, so ztunnel drops it
	}
	return z.dropOnTransportError(z.send(z.conn, handoff.Del(uid), handoff.NoFD))
}

// Forget takes uid out of the set without telling ztunnel (rollback of an
// Add that was never acknowledged).
func (z *Ztunnel) Forget(uid string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	delete(z.set, uid)
}

// dropOnTransportError closes the connection unless err is a refusal by
// ztunnel (which leaves the conversation intact); Run reconnects.
func (z *Ztunnel) dropOnTransportError(err error) error {
	var refused *handoff.RefusedError
	if err != nil && !errors.As(err, &refused) {
		z.closeLocked()
	}
	return err
}

func (z *Ztunnel) closeLocked() {
	if z.conn != nil {
		_ = z.conn.Close()
		z.conn = nil
		z.connected.Store(false)
		if z.OnConnection != nil {
			z.OnConnection(false)
		}
	}
}

func (z *Ztunnel) sendAdd(conn *net.UnixConn, w Workload) error {
	f, err := os.Open(w.NetnsPath)
	if err != nil {
		return fmt.Errorf("open netns of pod %s/%s: %w", w.Namespace, w.Name, err)
	}
	defer f.Close()
	return z.send(conn, handoff.Add(w.message()), int(f.Fd()))
}

func (z *Ztunnel) send(conn *net.UnixConn, msg *pb.Message, fd int) error {
	timeout := z.AckTimeout
	if timeout == 0 {
		timeout = handoff.DefaultAckTimeout
	}
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	if err := handoff.WriteMessage(conn, msg, fd); err != nil {
		return err
	}
	reply, _, err := handoff.ReadMessage(conn)
	if err != nil {
		return fmt.Errorf("waiting for ztunnel's ack: %w", err)
	}
	ack := reply.GetAck()
	if ack == nil {
		return errors.New("ztunnel answered with something other than an ack")
	}
	if ack.GetError() != "" {
		return &handoff.RefusedError{Reason: ack.GetError()}
	}
	return nil
}

// Run keeps a connection to ztunnel until ctx ends.
func (z *Ztunnel) Run(ctx context.Context) error {
	retry := z.RetryInterval
	if retry == 0 {
		retry = time.Second
	}
	defer func() {
		z.mu.Lock()
		z.closeLocked()
		z.mu.Unlock()
	}()
	for ctx.Err() == nil {
		if err := z.connect(ctx); err != nil {
			z.Log.V(1).Info("ztunnel not reachable yet", "socket", z.SocketPath, "error", err.Error())
		} else {
			z.watch(ctx)
		}
		select {
		case <-ctx.Done():
		case <-time.After(retry):
		}
	}
	return nil
}

// connect dials and replays the set; on success the connection is live.
func (z *Ztunnel) connect(ctx context.Context) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unixpacket", z.SocketPath)
	if err != nil {
		return err
	}
	conn := c.(*net.UnixConn)
	z.mu.Lock()
	defer z.mu.Unlock()
	if err := z.replayLocked(conn); err != nil {
		_ = conn.Close()
		return fmt.Errorf("replaying to ztunnel: %w", err)
	}
	z.conn = conn
	z.connected.Store(true)
	z.snapshots.Add(1)
	if z.OnConnection != nil {
		z.OnConnection(true)
	}
	z.Log.Info("connected to ztunnel and replayed enrolled pods", "pods", len(z.set))
	return nil
}

func (z *Ztunnel) replayLocked(conn *net.UnixConn) error {
	if err := z.send(conn, handoff.Hello(), handoff.NoFD); err != nil {
		return err
	}
	uids := slices.Sorted(func(yield func(string) bool) {
		for uid := range z.set {
			if !yield(uid) {
				return
			}
		}
	})
	var refused *handoff.RefusedError
	for _, uid := range uids {
		w := z.set[uid]
		err := z.sendAdd(conn, w)
		if err != nil && !errors.As(err, &refused) {
			// The netns could not be reopened: ztunnel keeps the one it holds.
			if _, statErr := os.Stat(w.NetnsPath); statErr != nil {
				err = z.send(conn, handoff.Keep(uid), handoff.NoFD)
			}
		}
		if errors.As(err, &refused) {
			z.Log.Error(err, "ztunnel refused a replayed pod", "pod", w.Namespace+"/"+w.Name)
			continue
		}
		if err != nil {
			return err
		}
	}
	return z.send(conn, handoff.SnapshotSent(), handoff.NoFD)
}

// watch returns once the connection is gone (closed by a failed send, or
// hung up by ztunnel) or ctx ends. The protocol is strictly request/answer,
// so an idle connection that becomes readable has been hung up.
func (z *Ztunnel) watch(ctx context.Context) {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		z.mu.Lock()
		if z.conn == nil {
			z.mu.Unlock()
			return
		}
		if hungUp(z.conn) {
			z.Log.Info("ztunnel closed the hand-off connection")
			z.closeLocked()
			z.mu.Unlock()
			return
		}
		z.mu.Unlock()
	}
}

func hungUp(conn *net.UnixConn) bool {
	raw, err := conn.SyscallConn()
	if err != nil {
		return true
	}
	gone := false
	_ = raw.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLRDHUP}}
		n, err := unix.Poll(fds, 0)
		gone = err == nil && n > 0 && fds[0].Revents != 0
	})
	return gone
}

package handoff

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	pb "github.com/ambientmesh/ambient-operator/api/handoff/v1alpha1"
)

// DefaultAckTimeout bounds how long the client waits for ztunnel's answer to one message.
const DefaultAckTimeout = 10 * time.Second

// RefusedError is ztunnel's refusal of a message (a non-empty Ack.error). The connection
// stays usable after one.
type RefusedError struct{ Reason string }

func (e *RefusedError) Error() string { return "ztunnel refused: " + e.Reason }

// Client is one connection from the node agent to ztunnel. Its methods send one message
// each and wait for the Ack; they are safe for concurrent use. ReconnectingClient builds
// the agent's lasting side of the hand-off on it.
type Client struct {
	mu         sync.Mutex
	conn       *net.UnixConn
	path       string
	inode      uint64 // of the socket file when dialed
	AckTimeout time.Duration
}

// Dial connects to ztunnel's hand-off socket at path and exchanges Hello.
func Dial(ctx context.Context, path string) (*Client, error) {
	return dial(ctx, path, DefaultAckTimeout)
}

func dial(ctx context.Context, path string, ackTimeout time.Duration) (*Client, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unixpacket", path)
	if err != nil {
		return nil, fmt.Errorf("connecting to ztunnel hand-off socket %s: %w", path, err)
	}
	cl := &Client{conn: c.(*net.UnixConn), path: path, inode: socketInode(path), AckTimeout: ackTimeout}
	if err := cl.send(Hello(), NoFD); err != nil {
		_ = c.Close()
		return nil, err
	}
	return cl, nil
}

// AddWorkload hands a pod's netns to ztunnel. netnsFD stays owned by the caller.
func (c *Client) AddWorkload(w *pb.AddWorkload, netnsFD int) error {
	if netnsFD < 0 {
		return errors.New("AddWorkload needs the pod's netns file descriptor")
	}
	return c.send(Add(w), netnsFD)
}

// KeepWorkload asks ztunnel, during a snapshot, to keep a pod whose netns it already holds.
func (c *Client) KeepWorkload(uid string) error { return c.send(Keep(uid), NoFD) }

// DelWorkload tells ztunnel to stop serving a pod.
func (c *Client) DelWorkload(uid string) error { return c.send(Del(uid), NoFD) }

// SnapshotSent ends the replay; ztunnel drops the workloads not named since Dial.
func (c *Client) SnapshotSent() error { return c.send(SnapshotSent(), NoFD) }

// Close closes the connection. ztunnel keeps its workloads until the next snapshot.
func (c *Client) Close() error { return c.conn.Close() }

func (c *Client) send(msg *pb.Message, fd int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.conn.SetDeadline(time.Now().Add(c.AckTimeout)); err != nil {
		return err
	}
	if err := WriteMessage(c.conn, msg, fd); err != nil {
		return err
	}
	reply, _, err := ReadMessage(c.conn)
	if err != nil {
		return fmt.Errorf("waiting for ztunnel's ack of %s: %w", payloadName(msg), err)
	}
	ack := reply.GetAck()
	if ack == nil {
		return fmt.Errorf("ztunnel answered %s with %s instead of an ack", payloadName(msg), payloadName(reply))
	}
	if ack.GetError() != "" {
		return &RefusedError{Reason: ack.GetError()}
	}
	return nil
}

// dialWithoutHello connects without sending Hello (tests of the server's ordering rules).
func dialWithoutHello(path string) (*Client, error) {
	conn, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, err
	}
	return &Client{conn: conn, AckTimeout: DefaultAckTimeout}, nil
}

func socketInode(path string) uint64 {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return 0
	}
	return st.Ino
}

// Replaced reports whether another ztunnel now listens on the socket path (a new ztunnel
// binds the path as it starts, before the old one stops).
func (c *Client) Replaced() bool {
	ino := socketInode(c.path)
	return ino != 0 && ino != c.inode
}

// WaitGone blocks until this ztunnel is gone or replaced: the connection was closed, or a
// new ztunnel listens on the socket path. Either way the agent should dial again and replay
// its pods; connecting to a new ztunnel as soon as it appears lets it take the pods over
// while the old one still serves them, so a restart (even a crash of the old one) opens no
// window without listeners. It returns ctx.Err() when ctx ends first.
func (c *Client) WaitGone(ctx context.Context) (replaced bool, err error) {
	for {
		if c.Replaced() {
			return true, nil
		}
		wctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		err := c.WaitClosed(wctx)
		cancel()
		if err == nil {
			return false, nil
		}
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
	}
}

// WaitClosed blocks until the connection is gone — ztunnel closed it (it restarted or is
// shutting down: time to reconnect and replay) or Close was called — or ctx ends. It only
// polls the socket, so it may run while other goroutines send.
func (c *Client) WaitClosed(ctx context.Context) error {
	poll := time.NewTicker(100 * time.Millisecond)
	defer poll.Stop()
	for !c.hungUp() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-poll.C:
		}
	}
	return nil
}

// hungUp reports whether the connection is closed at either end. It asks for hang-up
// events only, never readability, so an Ack on its way to a concurrent send does not count.
func (c *Client) hungUp() bool {
	raw, err := c.conn.SyscallConn()
	if err != nil {
		return true
	}
	hung := false
	cerr := raw.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
		n, err := unix.Poll(fds, 0)
		hung = err == nil && n > 0 && fds[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0
	})
	return cerr != nil || hung
}

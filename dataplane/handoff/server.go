package handoff

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"

	"github.com/go-logr/logr"

	pb "github.com/ambientmesh/ambient-operator/api/handoff/v1alpha1"
	"github.com/ambientmesh/ambient-operator/internal/unixsock"
)

// Workloads is what the server drives: ztunnel's set of served pods.
type Workloads interface {
	// Add starts (or restarts, for a known uid) serving a pod in the given netns. It takes
	// ownership of netns, also on error.
	Add(w *pb.AddWorkload, netns *os.File) error
	// Has reports whether the pod is served.
	Has(uid string) bool
	// Del stops serving a pod; unknown uids are not an error.
	Del(uid string) error
	// Retain stops serving every pod whose uid is not in keep.
	Retain(keep map[string]struct{})
}

// Server is ztunnel's side of the hand-off. It serves one agent connection at a time: a new
// connection (an agent that restarted) replaces the previous one.
type Server struct {
	Workloads Workloads
	Log       logr.Logger

	mu        sync.Mutex
	current   *net.UnixConn
	snapshots atomic.Int64
}

// Listen opens the hand-off socket at path: mode 0600 from the moment it appears there,
// replacing a stale socket file (or a draining predecessor's) in one step; see unixsock.
func Listen(path string) (*net.UnixListener, error) {
	ln, err := unixsock.Listen("unixpacket", path)
	if err != nil {
		return nil, fmt.Errorf("listening on hand-off socket %s: %w", path, err)
	}
	return ln, nil
}

// SnapshotsReceived counts completed snapshots; ztunnel is ready once it has had one.
func (s *Server) SnapshotsReceived() int64 { return s.snapshots.Load() }

// Serve accepts agent connections until ctx ends, then closes ln and the current connection.
// Only a peer running as root or as ztunnel's own user (SO_PEERCRED) is served (the node
// agent runs as root): a connection from anyone else is closed before it can replace the
// agent's and hand over namespaces.
func (s *Server) Serve(ctx context.Context, ln *net.UnixListener) error {
	go func() {
		<-ctx.Done()
		_ = ln.Close()
		s.replace(nil)
	}()
	agents := &unixsock.Listener{UnixListener: ln, Refused: func(err error) {
		s.Log.Error(err, "hand-off connection refused", "component", "handoff")
	}}
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		conn, err := agents.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accepting hand-off connection: %w", err)
		}
		s.replace(conn)
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveConn(conn)
		}()
	}
}

func (s *Server) replace(conn *net.UnixConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.current != nil {
		_ = s.current.Close()
	}
	s.current = conn
}

// connState is what one connection has said so far.
type connState struct {
	helloDone    bool
	snapshotDone bool
	named        map[string]struct{}
}

func (s *Server) serveConn(conn *net.UnixConn) {
	defer conn.Close()
	log := s.Log.WithValues("component", "handoff")
	log.Info("node agent connected")
	st := &connState{named: map[string]struct{}{}}
	for {
		msg, fd, err := ReadMessage(conn)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				log.Info("node agent disconnected")
				return
			}
			// A malformed datagram: refuse it and go on; the framing is intact.
			log.Error(err, "bad hand-off message")
			if werr := WriteMessage(conn, Ack(err), NoFD); werr != nil {
				return
			}
			continue
		}
		herr := s.handle(st, msg, fd)
		if herr != nil {
			log.Error(herr, "hand-off message refused")
		}
		if err := WriteMessage(conn, Ack(herr), NoFD); err != nil {
			log.Error(err, "answering node agent")
			return
		}
	}
}

func (s *Server) handle(st *connState, msg *pb.Message, fd int) error {
	if hello := msg.GetHello(); hello != nil {
		if hello.GetVersion() != ProtocolVersion {
			return fmt.Errorf("hello.version %d not supported, this ztunnel speaks %d", hello.GetVersion(), ProtocolVersion)
		}
		st.helloDone = true
		return nil
	}
	if !st.helloDone {
		if fd != NoFD {
			_ = os.NewFile(uintptr(fd), "netns").Close()
		}
		return errors.New("the first message must be hello")
	}
	switch p := msg.GetPayload().(type) {
	case *pb.Message_AddWorkload:
		st.named[p.AddWorkload.GetUid()] = struct{}{}
		return s.Workloads.Add(p.AddWorkload, os.NewFile(uintptr(fd), "netns:"+p.AddWorkload.GetUid()))
	case *pb.Message_KeepWorkload:
		uid := p.KeepWorkload.GetUid()
		if st.snapshotDone {
			return fmt.Errorf("keep_workload %s after snapshot_sent", uid)
		}
		if !s.Workloads.Has(uid) {
			return fmt.Errorf("keep_workload: unknown workload %s", uid)
		}
		st.named[uid] = struct{}{}
		return nil
	case *pb.Message_DelWorkload:
		delete(st.named, p.DelWorkload.GetUid())
		return s.Workloads.Del(p.DelWorkload.GetUid())
	case *pb.Message_SnapshotSent:
		if st.snapshotDone {
			return errors.New("snapshot_sent twice on one connection")
		}
		st.snapshotDone = true
		s.Workloads.Retain(st.named)
		s.snapshots.Add(1)
		return nil
	default:
		return fmt.Errorf("unexpected %s from the node agent", payloadName(msg))
	}
}

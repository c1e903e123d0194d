package agent

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/go-logr/logr/testr"

	pb "github.com/ambientmesh/ambient-operator/api/handoff/v1alpha1"
	"github.com/ambientmesh/ambient-operator/dataplane/handoff"
	"github.com/ambientmesh/ambient-operator/internal/netnstest"
)

// fakeZtunnel is the real hand-off server (ztunnel's package) with a
// workload set that records what it was given. When listenPort is set it
// proves each received netns fd usable by opening a listener inside it, as
// ztunnel does.
type fakeZtunnel struct {
	Socket     string
	listenPort int

	mu        sync.Mutex
	workloads map[string]receivedWorkload
	listeners map[string]net.Listener

	srv    *handoff.Server
	cancel context.CancelFunc
	done   chan error
}

type receivedWorkload struct {
	msg   *pb.AddWorkload
	inode uint64
}

// tb is what the helpers need: *testing.T and GinkgoT() both fit.
type tb interface {
	netnstest.T
	Log(args ...any)
}

func startFakeZtunnel(t tb, listenPort int) *fakeZtunnel {
	t.Helper()
	dir, err := os.MkdirTemp("", "zt")
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	z := &fakeZtunnel{Socket: filepath.Join(dir, "handoff.sock"), listenPort: listenPort,
		workloads: map[string]receivedWorkload{}, listeners: map[string]net.Listener{}}
	z.start(t)
	t.Cleanup(z.stop)
	return z
}

func (z *fakeZtunnel) start(t tb) {
	ln, err := handoff.Listen(z.Socket)
	if err != nil {
		t.Fatalf("%v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	z.srv = &handoff.Server{Workloads: z, Log: testr.NewWithInterface(t, testr.Options{}).WithName("fake-ztunnel")}
	z.cancel, z.done = cancel, make(chan error, 1)
	go func() { z.done <- z.srv.Serve(ctx, ln) }()
}

// stop ends the server (ztunnel going away); its workloads are kept, like a
// restarting ztunnel's are not: call restart for that.
func (z *fakeZtunnel) stop() {
	if z.cancel != nil {
		z.cancel()
		<-z.done
		z.cancel = nil
	}
	z.mu.Lock()
	defer z.mu.Unlock()
	for uid, l := range z.listeners {
		_ = l.Close()
		delete(z.listeners, uid)
	}
}

func (z *fakeZtunnel) Add(w *pb.AddWorkload, netns *os.File) error {
	defer netns.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(netns.Fd()), &st); err != nil {
		return err
	}
	var l net.Listener
	if z.listenPort != 0 {
		err := ns.WithNetNSPath(fmt.Sprintf("/proc/self/fd/%d", netns.Fd()), func(ns.NetNS) (err error) {
			l, err = net.Listen("tcp4", fmt.Sprintf(":%d", z.listenPort))
			return err
		})
		if err != nil {
			return fmt.Errorf("listening inside the handed-over netns: %w", err)
		}
	}
	z.mu.Lock()
	defer z.mu.Unlock()
	if old := z.listeners[w.GetUid()]; old != nil {
		_ = old.Close()
	}
	if l != nil {
		z.listeners[w.GetUid()] = l
	}
	z.workloads[w.GetUid()] = receivedWorkload{msg: w, inode: st.Ino}
	return nil
}

func (z *fakeZtunnel) Has(uid string) bool {
	z.mu.Lock()
	defer z.mu.Unlock()
	_, ok := z.workloads[uid]
	return ok
}

func (z *fakeZtunnel) Del(uid string) error {
	z.mu.Lock()
	defer z.mu.Unlock()
	delete(z.workloads, uid)
	if l := z.listeners[uid]; l != nil {
		_ = l.Close()
		delete(z.listeners, uid)
	}
	return nil
}

func (z *fakeZtunnel) Retain(keep map[string]struct{}) {
	z.mu.Lock()
	defer z.mu.Unlock()
	for uid := range z.workloads {
		if _, ok := keep[uid]; !ok {
			delete(z.workloads, uid)
		}
	}
}

func (z *fakeZtunnel) get(uid string) (receivedWorkload, bool) {
	z.mu.Lock()
	defer z.mu.Unlock()
	w, ok := z.workloads[uid]
	return w, ok
}

func (z *fakeZtunnel) listener(uid string) net.Listener {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.listeners[uid]
}

func inode(t tb, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatalf("%v", err)
	}
	return st.Ino
}

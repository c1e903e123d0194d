package handoff

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	pb "github.com/ambientmesh/ambient-operator/api/handoff/v1alpha1"
	"github.com/ambientmesh/ambient-operator/internal/unixsock/unixsocktest"
)

// recordingWorkloads is a Workloads that remembers which pods it serves and checks that
// each handed-over descriptor really is a network namespace.
type recordingWorkloads struct {
	mu     sync.Mutex
	served map[string]*os.File
}

func (r *recordingWorkloads) Add(w *pb.AddWorkload, netns *os.File) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(netns.Fd()), &st); err != nil {
		netns.Close()
		return err
	}
	var self unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &self); err != nil {
		return err
	}
	if st.Ino != self.Ino {
		netns.Close()
		return errors.New("descriptor is not the test's netns")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if old := r.served[w.GetUid()]; old != nil {
		old.Close()
	}
	r.served[w.GetUid()] = netns
	return nil
}

func (r *recordingWorkloads) Has(uid string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.served[uid] != nil
}

func (r *recordingWorkloads) Del(uid string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if f := r.served[uid]; f != nil {
		f.Close()
	}
	delete(r.served, uid)
	return nil
}

func (r *recordingWorkloads) Retain(keep map[string]struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for uid, f := range r.served {
		if _, ok := keep[uid]; !ok {
			f.Close()
			delete(r.served, uid)
		}
	}
}

func (r *recordingWorkloads) uids() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for uid := range r.served {
		out = append(out, uid)
	}
	sort.Strings(out)
	return out
}

func newRecordingWorkloads() *recordingWorkloads {
	return &recordingWorkloads{served: map[string]*os.File{}}
}

func startServer(t *testing.T) (string, *Server, *recordingWorkloads) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ztunnel.sock")
	w := newRecordingWorkloads()
	srv, stop := serveAt(t, path, w)
	t.Cleanup(stop)
	return path, srv, w
}

// serveAt runs a Server for w on a new socket at path until stop is called: a ztunnel that
// stops closes the agent's connection, like one that restarts.
func serveAt(t *testing.T, path string, w Workloads) (srv *Server, stop func()) {
	t.Helper()
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	srv = &Server{Workloads: w, Log: testr.New(t)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	var once sync.Once
	return srv, func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Serve: %v", err)
			}
		})
	}
}

func openNetns(t *testing.T) int {
	t.Helper()
	f, err := os.Open("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return int(f.Fd())
}

func pod(uid string) *pb.AddWorkload {
	return &pb.AddWorkload{Uid: uid, Name: "pod-" + uid, Namespace: "shop", ServiceAccount: "default"}
}

func TestAddDelAndSnapshotReplay(t *testing.T) {
	path, srv, served := startServer(t)
	fd := openNetns(t)
	ctx := context.Background()

	c, err := Dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	for _, uid := range []string{"a", "b", "c"} {
		if err := c.AddWorkload(pod(uid), fd); err != nil {
			t.Fatalf("add %s: %v", uid, err)
		}
	}
	if err := c.SnapshotSent(); err != nil {
		t.Fatal(err)
	}
	if err := c.DelWorkload("c"); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(served.uids(), ","); got != "a,b" {
		t.Fatalf("served after delete = %s, want a,b", got)
	}
	c.Close()

	// The agent restarts and replays only a, plus a new pod d; after SnapshotSent, b must
	// be gone.
	c2, err := Dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if err := c2.AddWorkload(pod("a"), fd); err != nil {
		t.Fatal(err)
	}
	if err := c2.AddWorkload(pod("d"), fd); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(served.uids(), ","); got != "a,b,d" {
		t.Fatalf("before snapshot_sent served = %s, want a,b,d (nothing dropped early)", got)
	}
	if err := c2.SnapshotSent(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(served.uids(), ","); got != "a,d" {
		t.Fatalf("after replay served = %s, want a,d", got)
	}
	if n := srv.SnapshotsReceived(); n != 2 {
		t.Fatalf("snapshots = %d, want 2", n)
	}
}

// Only root may hand namespaces over: the socket is 0600, and a peer of another user that
// got past the mode is closed before its first message, without disturbing the agent's
// connection (a new connection otherwise replaces the current one).
func TestNonRootPeerCannotReplaceTheAgent(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: connects as another user to a root-owned socket")
	}
	path, _, served := startServer(t)
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("hand-off socket mode %v (%v), want 0600", st.Mode(), err)
	}
	fd := openNetns(t)
	agent, err := Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer agent.Close()
	if err := agent.AddWorkload(pod("a"), fd); err != nil {
		t.Fatal(err)
	}

	intruder, err := unixsocktest.DialAsPastMode(65534, "unixpacket", path)
	if err != nil {
		t.Fatal(err)
	}
	defer intruder.Close()
	_ = intruder.SetDeadline(time.Now().Add(5 * time.Second))
	if err := WriteMessage(intruder, Hello(), NoFD); err == nil {
		if _, _, err := ReadMessage(intruder); !errors.Is(err, io.EOF) && !errors.Is(err, unix.ECONNRESET) {
			t.Fatalf("uid 65534 peer: read %v, want the connection closed unanswered", err)
		}
	}
	// The agent's connection is still the served one.
	if err := agent.AddWorkload(pod("b"), fd); err != nil {
		t.Fatalf("the agent's connection broke after a refused peer: %v", err)
	}
	if got := strings.Join(served.uids(), ","); got != "a,b" {
		t.Fatalf("served = %s, want a,b", got)
	}
}

func TestKeepWorkload(t *testing.T) {
	path, _, served := startServer(t)
	fd := openNetns(t)
	c, err := Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	for _, uid := range []string{"a", "b"} {
		if err := c.AddWorkload(pod(uid), fd); err != nil {
			t.Fatal(err)
		}
	}
	c.Close()

	c2, err := Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	var refused *RefusedError
	if err := c2.KeepWorkload("zzz"); !errors.As(err, &refused) || !strings.Contains(err.Error(), "unknown workload zzz") {
		t.Fatalf("keep of unknown uid: got %v, want a refusal naming it", err)
	}
	if err := c2.KeepWorkload("b"); err != nil {
		t.Fatal(err)
	}
	if err := c2.SnapshotSent(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(served.uids(), ","); got != "b" {
		t.Fatalf("served = %s, want b", got)
	}
	if err := c2.KeepWorkload("b"); err == nil || !strings.Contains(err.Error(), "after snapshot_sent") {
		t.Fatalf("keep after snapshot: got %v", err)
	}
}

// dialed connects (Hello included) and closes at cleanup; tests send datagrams the
// methods would not build with its unexported send.
func dialed(t *testing.T, path string) *Client {
	t.Helper()
	c, err := Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestServerRefusesBadMessagesAndKeepsGoing(t *testing.T) {
	path, _, served := startServer(t)
	c := dialed(t, path)
	fd := openNetns(t)

	// AddWorkload without a descriptor: refused with the field-level reason.
	err := c.send(Add(pod("x")), NoFD)
	if err == nil || !strings.Contains(err.Error(), "add_workload: carries 0 file descriptors, want 1") {
		t.Fatalf("add without fd: %v", err)
	}
	// A descriptor on a message that must not carry one: refused, and the fd not leaked.
	before := openFDs(t)
	for range 20 {
		err = c.send(Del("x"), fd)
		if err == nil || !strings.Contains(err.Error(), "want 0") {
			t.Fatalf("del with fd: %v", err)
		}
	}
	if after := openFDs(t); after > before {
		t.Fatalf("open descriptors went from %d to %d: refused descriptors leak", before, after)
	}
	// Missing fields.
	err = c.AddWorkload(&pb.AddWorkload{Uid: "y"}, fd)
	for _, want := range []string{"add_workload.name: required", "add_workload.namespace: required", "add_workload.service_account: required"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("incomplete add: got %v, want %q", err, want)
		}
	}
	// The connection still works.
	if err := c.AddWorkload(pod("ok"), fd); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(served.uids(), ","); got != "ok" {
		t.Fatalf("served = %s", got)
	}
}

func TestHelloRequiredFirst(t *testing.T) {
	path, _, _ := startServer(t)
	conn, err := dialWithoutHello(path)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.send(Del("a"), NoFD); err == nil || !strings.Contains(err.Error(), "first message must be hello") {
		t.Fatalf("got %v", err)
	}
	if err := conn.send(&pb.Message{Payload: &pb.Message_Hello{Hello: &pb.Hello{Version: 7}}}, NoFD); err == nil || !strings.Contains(err.Error(), "version 7 not supported") {
		t.Fatalf("got %v", err)
	}
}

func TestDecode(t *testing.T) {
	enc := func(m *pb.Message) []byte {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cases := []struct {
		name    string
		data    []byte
		fds     int
		wantErr string
	}{
		{"hello", enc(Hello()), 0, ""},
		{"hello without version", enc(&pb.Message{Payload: &pb.Message_Hello{Hello: &pb.Hello{}}}), 0, "hello.version: required"},
		{"add", enc(Add(pod("a"))), 1, ""},
		{"add two fds", enc(Add(pod("a"))), 2, "want 1"},
		{"keep", enc(Keep("a")), 0, ""},
		{"keep without uid", enc(Keep("")), 0, "keep_workload.uid: required"},
		{"del without uid", enc(Del("")), 0, "del_workload.uid: required"},
		{"snapshot", enc(SnapshotSent()), 0, ""},
		{"ack", enc(Ack(errors.New("x"))), 0, ""},
		{"empty", nil, 0, "no payload"},
		{"garbage", []byte{0xff, 0xff, 0xff}, 0, "decoding hand-off message"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode(tc.data, tc.fds)
			if tc.wantErr == "" && err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("error %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// FuzzDecode: arbitrary datagrams never crash the decoder, and whatever it accepts
// re-encodes to a message that decodes the same.
func FuzzDecode(f *testing.F) {
	for _, m := range []*pb.Message{Hello(), Add(pod("a")), Keep("a"), Del("a"), SnapshotSent(), Ack(errors.New("no"))} {
		b, _ := proto.Marshal(m)
		fds := 0
		if m.GetAddWorkload() != nil {
			fds = 1
		}
		f.Add(b, fds)
	}
	f.Fuzz(func(t *testing.T, data []byte, fds int) {
		msg, err := Decode(data, fds)
		if err != nil {
			return
		}
		again, err := proto.Marshal(msg)
		if err != nil {
			t.Fatalf("accepted message does not re-encode: %v", err)
		}
		msg2, err := Decode(again, fds)
		if err != nil || !proto.Equal(msg, msg2) {
			t.Fatalf("re-decoding changed the message: %v", err)
		}
	})
}

// FuzzParseRights: the ancillary-data parser never crashes on arbitrary bytes.
func FuzzParseRights(f *testing.F) {
	f.Add(unix.UnixRights(3))
	f.Add(unix.UnixRights(3, 4, 5))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, oob []byte) {
		_ = parseRights(oob) // descriptors are only parsed, never closed, here
	})
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func TestWaitClosedSeesServerGoAway(t *testing.T) {
	path := filepath.Join(t.TempDir(), "z.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{Workloads: newRecordingWorkloads(), Log: testr.New(t)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ctx, ln) }()
	c, err := Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitCtx, waitCancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	if err := c.WaitClosed(waitCtx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitClosed returned %v while ztunnel is up", err)
	}
	waitCancel()
	cancel() // ztunnel stops
	<-done
	waitCtx, waitCancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer waitCancel()
	if err := c.WaitClosed(waitCtx); err != nil {
		t.Fatalf("WaitClosed after ztunnel stopped: %v", err)
	}
}

func TestWaitGoneSeesANewZtunnel(t *testing.T) {
	path, _, _ := startServer(t)
	c, err := Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Replaced() {
		t.Fatal("replaced right after dialing")
	}
	// A new ztunnel starts and binds the same path while the old one still runs.
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	replaced, err := c.WaitGone(ctx)
	if err != nil || !replaced {
		t.Fatalf("WaitGone = %v, %v; want replaced", replaced, err)
	}
}

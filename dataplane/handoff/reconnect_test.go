package handoff

import (
	"context"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/ambientmesh/ambient-operator/internal/testwait"
)

// enrolled is the agent's side of these tests: the pods it has enrolled, which the client
// replays on every connect.
type enrolled struct {
	mu   sync.Mutex
	pods map[string]Workload
}

func (e *enrolled) put(w Workload) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.pods == nil {
		e.pods = map[string]Workload{}
	}
	e.pods[w.UID] = w
}

func (e *enrolled) remove(uid string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.pods, uid)
}

func (e *enrolled) snapshot() []Workload {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Collect(maps.Values(e.pods))
}

// testPod is a pod whose netns is the test's own (the server checks every descriptor is).
func testPod(uid string) Workload {
	return Workload{UID: uid, Name: "pod-" + uid, Namespace: "shop", ServiceAccount: "default", NetnsPath: "/proc/self/ns/net"}
}

// runClient runs a ReconnectingClient for pods until the test ends; events records what
// OnConnection was told.
func runClient(t *testing.T, path string, pods *enrolled) (c *ReconnectingClient, events func() []bool) {
	t.Helper()
	var mu sync.Mutex
	var seen []bool
	c = &ReconnectingClient{
		SocketPath: path, Snapshot: pods.snapshot, Log: testr.New(t),
		RetryInterval: 10 * time.Millisecond, MaxRetryInterval: 50 * time.Millisecond, AckTimeout: 5 * time.Second,
		OnConnection: func(up bool) { mu.Lock(); defer mu.Unlock(); seen = append(seen, up) },
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return c, func() []bool { mu.Lock(); defer mu.Unlock(); return slices.Clone(seen) }
}

func servedUIDs(w *recordingWorkloads) string { return strings.Join(w.uids(), ",") }

func TestReconnectingClientReplaysAfterZtunnelRestarts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ztunnel.sock")
	first := newRecordingWorkloads()
	srv, stop := serveAt(t, path, first)
	pods := &enrolled{}
	pods.put(testPod("b"))
	pods.put(testPod("a"))
	c, events := runClient(t, path, pods)

	testwait.For(t, "the first snapshot", 5*time.Second, func() bool { return c.Connected() && srv.SnapshotsReceived() == 1 })
	if got := servedUIDs(first); got != "a,b" {
		t.Fatalf("first ztunnel serves %q, want a,b", got)
	}

	// ztunnel restarts with nothing: the client notices the hang-up, dials the new one and
	// replays its whole set.
	stop()
	testwait.For(t, "the hang-up noticed", 5*time.Second, func() bool { return !c.Connected() })
	second := newRecordingWorkloads()
	srv2, stop2 := serveAt(t, path, second)
	t.Cleanup(stop2)
	testwait.For(t, "the replay to the new ztunnel", 5*time.Second, func() bool { return c.Connected() && srv2.SnapshotsReceived() == 1 })
	if got := servedUIDs(second); got != "a,b" {
		t.Fatalf("restarted ztunnel serves %q, want a,b", got)
	}
	if n := c.Snapshots(); n != 2 {
		t.Fatalf("Snapshots() = %d, want 2", n)
	}
	if got := events(); !slices.Equal(got, []bool{true, false, true}) {
		t.Fatalf("OnConnection saw %v, want [true false true]", got)
	}
}

func TestReconnectingClientDeliversAnAddMadeWhileDisconnected(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ztunnel.sock")
	pods := &enrolled{}
	c, _ := runClient(t, path, pods) // no ztunnel yet

	pods.put(testPod("a"))
	if err := c.Add(testPod("a")); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("Add with no ztunnel = %v, want ErrNotConnected", err)
	}
	if err := c.Del("gone"); err != nil {
		t.Fatalf("Del with no ztunnel = %v, want nil (the next snapshot leaves it out)", err)
	}

	served := newRecordingWorkloads()
	srv, stop := serveAt(t, path, served)
	t.Cleanup(stop)
	testwait.For(t, "the first snapshot", 5*time.Second, func() bool { return c.Connected() && srv.SnapshotsReceived() == 1 })
	if got := servedUIDs(served); got != "a" {
		t.Fatalf("ztunnel serves %q after the replay, want a", got)
	}
}

func TestReconnectingClientAddAndDelAreAcked(t *testing.T) {
	path, srv, served := startServer(t)
	pods := &enrolled{}
	pods.put(testPod("a"))
	c, _ := runClient(t, path, pods)
	testwait.For(t, "the first snapshot", 5*time.Second, func() bool { return c.Connected() && srv.SnapshotsReceived() == 1 })

	// Each call returns once ztunnel acknowledged it, so its effect is visible right away.
	pods.put(testPod("b"))
	if err := c.Add(testPod("b")); err != nil {
		t.Fatalf("Add: %v", err)
	}
	if got := servedUIDs(served); got != "a,b" {
		t.Fatalf("after Add ztunnel serves %q, want a,b", got)
	}
	pods.remove("a")
	if err := c.Del("a"); err != nil {
		t.Fatalf("Del: %v", err)
	}
	if got := servedUIDs(served); got != "b" {
		t.Fatalf("after Del ztunnel serves %q, want b", got)
	}

	// A refusal is an answer: the connection stays up and the next message goes through.
	var refused *RefusedError
	if err := c.Add(Workload{UID: "x", Name: "p", Namespace: "shop", NetnsPath: "/proc/self/ns/net"}); !errors.As(err, &refused) {
		t.Fatalf("Add without a service account = %v, want a RefusedError", err)
	}
	if !c.Connected() {
		t.Fatal("a refusal dropped the connection")
	}
	if err := c.Add(testPod("c")); err != nil {
		t.Fatalf("Add after a refusal: %v", err)
	}
	if n := c.Snapshots(); n != 1 {
		t.Fatalf("Snapshots() = %d, want 1 (no reconnect)", n)
	}
}

func TestReconnectingClientKeepsAPodWhoseNetnsCannotBeOpened(t *testing.T) {
	// The agent names b's netns by a path that goes away (its sandbox is being torn down);
	// c's path never existed, and ztunnel never had c.
	dir := t.TempDir()
	path := filepath.Join(dir, "ztunnel.sock")
	bNetns := filepath.Join(dir, "netns-b")
	if err := os.Symlink("/proc/self/ns/net", bNetns); err != nil {
		t.Fatal(err)
	}
	pods := &enrolled{}
	pods.put(testPod("a"))
	b := testPod("b")
	b.NetnsPath = bNetns
	pods.put(b)

	// One ztunnel's state across two connections: the first connection ends, the agent
	// reconnects to the same ztunnel.
	served := newRecordingWorkloads()
	srv, stop := serveAt(t, path, served)
	c, _ := runClient(t, path, pods)
	testwait.For(t, "the first snapshot", 5*time.Second, func() bool { return c.Connected() && srv.SnapshotsReceived() == 1 })
	if got := servedUIDs(served); got != "a,b" {
		t.Fatalf("ztunnel serves %q, want a,b", got)
	}

	if err := os.Remove(bNetns); err != nil {
		t.Fatal(err)
	}
	ghost := testPod("c")
	ghost.NetnsPath = filepath.Join(dir, "netns-c")
	pods.put(ghost)
	stop()
	testwait.For(t, "the hang-up noticed", 5*time.Second, func() bool { return !c.Connected() })
	srv2, stop2 := serveAt(t, path, served)
	t.Cleanup(stop2)
	testwait.For(t, "the replay", 5*time.Second, func() bool { return c.Connected() && srv2.SnapshotsReceived() == 1 })
	// KeepWorkload named b, so SnapshotSent did not drop it; ztunnel refused to keep the
	// unknown c, and the replay went on past that refusal.
	if got := servedUIDs(served); got != "a,b" {
		t.Fatalf("after the replay ztunnel serves %q, want a,b", got)
	}
}

func TestReconnectingClientHandsThePodsToANewZtunnelBesideTheOldOne(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ztunnel.sock")
	old := newRecordingWorkloads()
	oldSrv, stopOld := serveAt(t, path, old)
	t.Cleanup(stopOld)
	pods := &enrolled{}
	pods.put(testPod("a"))
	c, _ := runClient(t, path, pods)
	testwait.For(t, "the snapshot to the old ztunnel", 5*time.Second, func() bool { return c.Connected() && oldSrv.SnapshotsReceived() == 1 })

	// A surge update: the new ztunnel binds the path while the old one still runs and
	// still holds the connection. It is ready only once it has the pods, so the client
	// must move to it without waiting for the old one to hang up.
	next := newRecordingWorkloads()
	nextSrv, stopNext := serveAt(t, path, next)
	t.Cleanup(stopNext)
	testwait.For(t, "the snapshot to the new ztunnel", 5*time.Second, func() bool { return nextSrv.SnapshotsReceived() == 1 })
	if got := servedUIDs(next); got != "a" {
		t.Fatalf("new ztunnel serves %q, want a", got)
	}
	if got := servedUIDs(old); got != "a" {
		t.Fatalf("old ztunnel serves %q after the hand-over, want a (it keeps serving until it stops)", got)
	}
}

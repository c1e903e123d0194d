package agent

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/ambientmesh/ambient-operator/internal/testwait"
)

// fdFile stands in for a netns: the hand-off carries any fd.
func fdFile(t *testing.T, name string) string {
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestZtunnelClientReplaysOnEveryConnect(t *testing.T) {
	zt := startFakeZtunnel(t, 0)
	c := &Ztunnel{SocketPath: zt.Socket, Log: testr.New(t), RetryInterval: 50 * time.Millisecond, AckTimeout: 2 * time.Second}

	// Pods enrolled while ztunnel is unreachable wait in the set.
	a := Workload{UID: "a", Name: "pa", Namespace: "ns", ServiceAccount: "sa", NetnsPath: fdFile(t, "a")}
	if err := c.Add(a); !errors.Is(err, ErrZtunnelNotConnected) {
		t.Fatalf("Add before connect = %v, want ErrZtunnelNotConnected", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()

	testwait.For(t, "first snapshot", 5*time.Second, func() bool { return c.Connected() && zt.srv.SnapshotsReceived() == 1 })
	if w, ok := zt.get("a"); !ok || w.msg.GetServiceAccount() != "sa" || w.inode != inode(t, a.NetnsPath) {
		t.Fatalf("replay did not hand over pod a with its fd: %+v %v", w, ok)
	}

	b := Workload{UID: "b", Name: "pb", Namespace: "ns", ServiceAccount: "sa", NetnsPath: fdFile(t, "b")}
	if err := c.Add(b); err != nil || !zt.Has("b") {
		t.Fatalf("Add while connected = %v (ztunnel has it: %v)", err, zt.Has("b"))
	}
	if err := c.Del("a"); err != nil || zt.Has("a") {
		t.Fatalf("Del = %v (ztunnel still has it: %v)", err, zt.Has("a"))
	}

	// ztunnel restarts with nothing: the agent notices, reconnects and
	// replays exactly its set.
	zt.stop()
	testwait.For(t, "disconnect noticed", 5*time.Second, func() bool { return !c.Connected() })
	zt.Retain(map[string]struct{}{})
	zt.start(t)
	testwait.For(t, "replay after reconnect", 5*time.Second, func() bool { return c.Connected() && zt.srv.SnapshotsReceived() == 1 })
	if !zt.Has("b") || zt.Has("a") {
		t.Fatalf("after replay ztunnel has a=%v b=%v, want only b", zt.Has("a"), zt.Has("b"))
	}
	if c.Snapshots() != 2 {
		t.Fatalf("snapshots = %d, want 2", c.Snapshots())
	}

	// A netns that can no longer be opened is kept by ztunnel, not dropped.
	if err := os.Remove(b.NetnsPath); err != nil {
		t.Fatal(err)
	}
	zt.stop()
	testwait.For(t, "disconnect noticed", 5*time.Second, func() bool { return !c.Connected() })
	zt.start(t)
	testwait.For(t, "replay with a vanished netns", 5*time.Second, func() bool { return c.Connected() })
	if !zt.Has("b") {
		t.Fatal("ztunnel dropped a pod whose netns the agent could not reopen")
	}
}

func TestZtunnelRefusalKeepsTheConnection(t *testing.T) {
	zt := startFakeZtunnel(t, 0)
	c := &Ztunnel{SocketPath: zt.Socket, Log: testr.New(t), RetryInterval: 50 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	testwait.For(t, "connect", 5*time.Second, c.Connected)

	// The server refuses an AddWorkload without a service account.
	err := c.Add(Workload{UID: "x", Name: "p", Namespace: "ns", NetnsPath: fdFile(t, "x")})
	if err == nil {
		t.Fatal("ztunnel accepted an invalid workload")
	}
	if !c.Connected() {
		t.Fatal("a refusal dropped the connection")
	}
	if err := c.Add(Workload{UID: "y", Name: "p", Namespace: "ns", ServiceAccount: "sa", NetnsPath: fdFile(t, "y")}); err != nil {
		t.Fatalf("Add after a refusal: %v", err)
	}
}

// The hand-off protocol has one owner, dataplane/handoff: the CNI side builds
// without any of the ztunnel's code.
func TestCNIDoesNotDependOnZtunnel(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("needs the go command to list dependencies:", err)
	}
	out, err := exec.Command(goTool, "list", "-deps", "github.com/ambientmesh/ambient-operator/dataplane/cni/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.Contains(pkg, "/dataplane/ztunnel") {
			t.Errorf("dataplane/cni depends on %s", pkg)
		}
	}
}

package nodetest

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// proc is a proxy process a test runs (a ztunnel, the waypoint), its output in a log file.
type proc struct {
	name    string // for messages: "ztunnel a", "waypoint"
	cmd     *exec.Cmd
	logPath string
	// drainWait is how long stop lets the process drain after SIGTERM before killing it.
	drainWait time.Duration
	// done receives cmd.Wait's result once the process exited; whoever takes it puts nil
	// back, so that later stops return at once.
	done chan error
}

// startProc starts cmd with its output in logPath. The test's cleanup stops it and, when the
// test failed, logs the tail of its log.
func startProc(t testing.TB, name string, cmd *exec.Cmd, logPath string, drainWait time.Duration) *proc {
	p := &proc{name: name, cmd: cmd, logPath: logPath, drainWait: drainWait, done: make(chan error, 1)}
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait(); logf.Close() }()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("%s log (tail):\n%s", name, tail(string(b), 40))
		}
	})
	return p
}

// stop sends SIGTERM and waits for the drain to finish, killing the process after
// drainWait. It signals by PID: `ip netns exec` execs the proxy in place, so the PID is
// the proxy's own.
func (p *proc) stop(t testing.TB) {
	select {
	case <-p.done:
		p.done <- nil
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(p.drainWait):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Errorf("%s pid %d did not stop within %v of SIGTERM", p.name, p.cmd.Process.Pid, p.drainWait)
	}
	p.done <- nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

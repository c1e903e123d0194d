package localmesh

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Proc is a component process the harness started (by PID, never by name).
type Proc struct {
	Name    string
	Node    string
	Binary  string
	LogPath string
	cmd     *exec.Cmd
	done    chan struct{}
	st      *State
	once    sync.Once
}

// startProc starts bin with args and env; on a node (netns != "") through
// `ip netns exec`, which execs the binary in the node's netns (so the PID is
// the component's) with /etc/netns/<node>/hosts as its /etc/hosts.
func startProc(st *State, logDir, name, netns, bin string, args, env []string) (*Proc, error) {
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, err
	}
	logPath := filepath.Join(logDir, name+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	argv := append([]string{bin}, args...)
	if netns != "" {
		argv = append([]string{"ip", "netns", "exec", netns}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Own process group: a Ctrl-C in the terminal reaches the harness,
	// which stops the components in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	fmt.Fprintf(logFile, "--- %s: %v\n", time.Now().Format(time.RFC3339), argv)
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, Node: netns, Binary: bin, LogPath: logPath, cmd: cmd, done: make(chan struct{}), st: st}
	if err := st.addProc(ProcRecord{Name: name, Node: netns, PID: cmd.Process.Pid, Binary: bin}); err != nil {
		_ = cmd.Process.Kill()
		return nil, err
	}
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		_ = st.removeProc(cmd.Process.Pid)
		close(p.done)
	}()
	return p, nil
}

// PID is the process id.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM and waits; after grace it sends SIGKILL.
func (p *Proc) Stop(grace time.Duration) {
	p.once.Do(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
}

// Kill ends the process at once (a crash).
func (p *Proc) Kill() {
	p.once.Do(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
	})
}

package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// processPath is the PATH every cluster process gets: kubelet, containerd
// and kube-proxy run runc, iptables, nft, mount and the CNI plugins by name.
const processPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// inNode prefixes argv so it runs in node n's network and mount namespaces.
// nsenter execs argv: the PID it starts with is argv's.
func inNode(stateDir string, n Node, argv ...string) []string {
	return append([]string{"nsenter", "--net=" + n.NetnsPath(), "--mount=" + n.MountNamespace(stateDir), "--"}, argv...)
}

// start runs argv in the background, in a session of its own (so it
// outlives `up` and make's Ctrl-C), with stdout and stderr in
// logs/<name>.log, and records it. binary is argv's program after any
// nsenter prefix.
func (c *cluster) start(name, node, binary string, argv []string) error {
	logFile, err := os.OpenFile(c.logPath(name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = []string{processPath, "HOME=/root"}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	c.logf("started %s (pid %d), log %s", name, cmd.Process.Pid, c.logPath(name))
	record := procRecord{Name: name, Node: node, PID: cmd.Process.Pid, Binary: binary}
	if err := c.state.update(func(s *state) { s.Procs = append(s.Procs, record) }); err != nil {
		return err
	}
	// Reap it if it exits while `up` still runs; alive() then sees it gone.
	go func() { _ = cmd.Wait() }()
	return nil
}

func (c *cluster) logPath(name string) string { return filepath.Join(c.dir, "logs", name+".log") }

// logTail is the end of a process's log, for an error message.
func (c *cluster) logTail(name string) string {
	data, _ := os.ReadFile(c.logPath(name))
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-15):], "\n")
}

// checkRunning fails, with its log's tail, when a recorded process has exited.
func (c *cluster) checkRunning(name string) error {
	for _, r := range c.state.Procs {
		if r.Name == name && !isOurs(r) && !isExecing(r.PID) {
			return fmt.Errorf("%s exited; the end of %s:\n%s", name, c.logPath(name), c.logTail(name))
		}
	}
	return nil
}

// isExecing reports whether pid is alive with no command line yet: exec has
// replaced its memory but not yet written its arguments. exec.Cmd.Start
// returns as soon as the old image is gone, so a process just started (or
// nsenter just exec'ing a node's program) can be seen in that state.
func isExecing(pid int) bool { return alive(pid) && cmdline(pid) == "" }

// isOurs reports whether the recorded process still runs its binary.
func isOurs(r procRecord) bool { return alive(r.PID) && strings.Contains(cmdline(r.PID), r.Binary) }

// stopAll sends SIGTERM to each PID, waits up to grace for all to exit,
// then sends SIGKILL to the rest and waits for them to go.
func stopAll(pids []int, grace time.Duration) {
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	if waitGone(pids, grace) {
		return
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	waitGone(pids, 10*time.Second)
}

// waitGone polls until no PID is alive; false after timeout.
func waitGone(pids []int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for slices.ContainsFunc(pids, alive) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

// alive is false for a PID that does not exist or is a zombie (it has
// exited; its parent reaps it).
func alive(pid int) bool {
	stat, ok := procStat(pid)
	return ok && stat.state != "Z"
}

type procStatus struct {
	state string
	ppid  int
}

// procStat reads state and parent of a process from /proc/<pid>/stat.
func procStat(pid int) (procStatus, bool) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStatus{}, false
	}
	return parseStat(string(data))
}

// parseStat parses the fields after the command name, which is in
// parentheses and may itself contain spaces and parentheses.
func parseStat(stat string) (procStatus, bool) {
	end := strings.LastIndexByte(stat, ')')
	if end < 0 {
		return procStatus{}, false
	}
	fields := strings.Fields(stat[end+1:])
	if len(fields) < 2 {
		return procStatus{}, false
	}
	ppid, err := strconv.Atoi(fields[1])
	if err != nil {
		return procStatus{}, false
	}
	return procStatus{state: fields[0], ppid: ppid}, true
}

// cmdline is a process's argv joined by spaces; empty when it is gone.
func cmdline(pid int) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return ""
	}
	return string(bytes.ReplaceAll(bytes.TrimRight(data, "\x00"), []byte{0}, []byte{' '}))
}

// allPIDs lists every process.
func allPIDs() []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// shimsOf lists a node's containerd shims: their command line names the
// node's containerd socket (-address), which no other containerd uses.
func shimsOf(n Node) []int {
	var out []int
	for _, pid := range allPIDs() {
		args := strings.Fields(cmdline(pid))
		if len(args) > 0 && strings.HasPrefix(filepath.Base(args[0]), "containerd-shim") &&
			slices.Contains(args, n.ContainerdSocket()) {
			out = append(out, pid)
		}
	}
	return out
}

// descendants lists every process below the given ones (a shim is the
// subreaper of its containers' processes, so they are all below it).
func descendants(roots []int) []int {
	children := map[int][]int{}
	for _, pid := range allPIDs() {
		if st, ok := procStat(pid); ok {
			children[st.ppid] = append(children[st.ppid], pid)
		}
	}
	var out []int
	queue := slices.Clone(roots)
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		for _, child := range children[pid] {
			out = append(out, child)
			queue = append(queue, child)
		}
	}
	return out
}

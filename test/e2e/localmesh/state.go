package localmesh

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// StateFile is the file in the state directory that lists everything the
// local mesh created outside its own directory, so that another process
// (`make demo-down`) can remove it.
const StateFile = "state.json"

// State is what teardown needs: processes by PID, namespaces by name,
// paths outside the state directory.
type State struct {
	mu         sync.Mutex
	dir        string
	DriverPID  int          `json:"driverPID"`
	Procs      []ProcRecord `json:"procs"`
	Netns      []string     `json:"netns"`
	Paths      []string     `json:"paths"`
	Kubeconfig string       `json:"kubeconfig"`
	Nodes      []string     `json:"nodes"`
}

// ProcRecord identifies a process we started.
type ProcRecord struct {
	Name string `json:"name"`
	Node string `json:"node,omitempty"`
	PID  int    `json:"pid"`
	// Binary is checked against /proc/<pid>/cmdline before a signal, so a
	// reused PID is never signalled.
	Binary string `json:"binary"`
}

// LoadState reads dir/state.json.
func LoadState(dir string) (*State, error) {
	data, err := os.ReadFile(filepath.Join(dir, StateFile))
	if err != nil {
		return nil, err
	}
	s := &State{dir: dir}
	if err := json.Unmarshal(data, s); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, StateFile), err)
	}
	return s, nil
}

func (s *State) update(fn func(*State)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	fn(s)
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(s.dir, StateFile+".tmp")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(s.dir, StateFile))
}

func (s *State) addProc(r ProcRecord) error {
	return s.update(func(s *State) { s.Procs = append(s.Procs, r) })
}

func (s *State) removeProc(pid int) error {
	return s.update(func(s *State) {
		s.Procs = slices.DeleteFunc(s.Procs, func(r ProcRecord) bool { return r.PID == pid })
	})
}

// addNetns records a namespace once, however often a pod's sandbox is made again.
func (s *State) addNetns(name string) error {
	return s.update(func(s *State) {
		if !slices.Contains(s.Netns, name) {
			s.Netns = append(s.Netns, name)
		}
	})
}

func (s *State) addPath(path string) error {
	return s.update(func(s *State) { s.Paths = append(s.Paths, path) })
}

// Down removes everything a local mesh recorded in dir: it stops the
// processes (SIGTERM, then SIGKILL after grace), deletes the network
// namespaces (with them every rule, veth and socket inside) and the paths
// created outside dir. It is safe to run twice and after a crash.
func Down(dir string, grace time.Duration) error {
	s, err := LoadState(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	// A running driver (make demo) tears down in order when asked: give it
	// the chance, then remove whatever is left.
	if s.DriverPID != os.Getpid() && s.DriverPID > 0 && cmdlineHas(s.DriverPID, "") {
		stopPIDs([]int{s.DriverPID}, 90*time.Second)
		if reread, err := LoadState(dir); err == nil {
			s = reread
		} else if errors.Is(err, os.ErrNotExist) {
			return nil
		}
	}
	var pids []int
	for _, r := range s.Procs {
		if r.PID != os.Getpid() && cmdlineHas(r.PID, r.Binary) {
			pids = append(pids, r.PID)
		}
	}
	if s.DriverPID != os.Getpid() && s.DriverPID > 0 && cmdlineHas(s.DriverPID, "") {
		pids = append(pids, s.DriverPID)
	}
	// Processes whose command line names the state dir (the envtest
	// apiserver and etcd, whose PIDs envtest keeps to itself).
	pids = append(pids, processesNaming(dir)...)
	stopPIDs(pids, grace)
	var errs []error
	// The nodes' links to their pods' namespaces first, so none outlives
	// its namespace (the agents are stopped: nobody reads them now).
	for _, view := range podNetnsViews(dir) {
		errs = append(errs, os.RemoveAll(view))
	}
	for _, name := range s.Netns {
		errs = append(errs, deleteNetns(name))
	}
	for _, p := range slices.Backward(s.Paths) {
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	// Nothing is left to remove: the logs may stay for a diagnosis.
	if err := os.Remove(filepath.Join(dir, StateFile)); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}

// stopPIDs sends SIGTERM to each PID, waits up to grace for all to exit,
// then sends SIGKILL to the rest.
func stopPIDs(pids []int, grace time.Duration) {
	slices.Sort(pids)
	pids = slices.Compact(pids)
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !slices.ContainsFunc(pids, alive) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, pid := range pids {
		if alive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func alive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// A zombie has exited; its parent reaps it.
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z"
}

func cmdline(pid int) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return ""
	}
	return strings.ReplaceAll(string(data), "\x00", " ")
}

func cmdlineHas(pid int, s string) bool {
	c := cmdline(pid)
	return c != "" && strings.Contains(c, s)
}

// processesNaming lists the etcd and kube-apiserver PIDs whose command
// line contains dir.
func processesNaming(dir string) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	self := ancestors()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || self[pid] {
			continue
		}
		// Only envtest's processes: anything else naming the dir (a
		// `demo down` in another terminal) is not ours to stop.
		argv0 := strings.Fields(cmdline(pid) + " ")
		if len(argv0) > 0 && cmdlineHas(pid, dir) && slices.Contains([]string{"etcd", "kube-apiserver"}, filepath.Base(argv0[0])) {
			out = append(out, pid)
		}
	}
	return out
}

// Leftovers lists what a torn-down mesh left behind: network namespaces
// named am-*, the nodes' links to them, processes naming dir,
// /etc/netns/am-* entries.
func Leftovers(dir string) []string {
	var out []string
	entries, _ := os.ReadDir(NetnsDir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "am-") {
			out = append(out, "network namespace "+e.Name())
		}
	}
	for _, view := range podNetnsViews(dir) {
		out = append(out, "node netns dir "+view)
	}
	for _, pid := range processesNaming(dir) {
		out = append(out, fmt.Sprintf("process %d: %s", pid, cmdline(pid)))
	}
	hosts, _ := filepath.Glob("/etc/netns/am-*")
	for _, h := range hosts {
		out = append(out, "file "+h)
	}
	return out
}

// ancestors is this process and its parents (`go run`, make): their
// command lines may name the state dir too.
func ancestors() map[int]bool {
	out := map[int]bool{}
	for pid := os.Getpid(); pid > 1 && !out[pid]; {
		out[pid] = true
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			break
		}
		fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
		if len(fields) < 2 {
			break
		}
		if pid, err = strconv.Atoi(fields[1]); err != nil {
			break
		}
	}
	return out
}

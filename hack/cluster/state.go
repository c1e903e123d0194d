package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
)

// stateFileName is the record, in the state directory, of everything `up`
// created. Each step is recorded before it is taken, so `down` removes
// what a failed or interrupted `up` left as well as a whole cluster.
const stateFileName = "state.json"

type state struct {
	mu  sync.Mutex
	dir string

	Nodes []string     `json:"nodes"`
	Procs []procRecord `json:"procs"`
	// Netns are network namespaces by name; Bridge the root namespace's bridge.
	Netns  []string `json:"netns"`
	Bridge string   `json:"bridge,omitempty"`
	// NamespaceDir is bind-mounted on itself (private) to hold MountNamespaces,
	// the files that keep the nodes' mount namespaces alive.
	NamespaceDir    string   `json:"namespaceDir,omitempty"`
	MountNamespaces []string `json:"mountNamespaces"`
	// HostDirs were created on the host as mount points for nodeHostPaths.
	HostDirs []string `json:"hostDirs"`
	// CgroupParent was created in these cgroup hierarchies (mount points).
	CgroupHierarchies []string `json:"cgroupHierarchies"`
	// Sysctls are the host's values of the kernel settings kubelets change,
	// from before the first kubelet started, to be put back.
	Sysctls map[string]string `json:"sysctls,omitempty"`
}

// procRecord is a process `up` started.
type procRecord struct {
	Name string `json:"name"`
	Node string `json:"node,omitempty"`
	PID  int    `json:"pid"`
	// Binary must appear in /proc/<pid>/cmdline before the process is
	// signalled, so a reused PID is never signalled.
	Binary string `json:"binary"`
}

func statePath(dir string) string { return filepath.Join(dir, stateFileName) }

// loadState reads dir's record; os.ErrNotExist when there is none.
func loadState(dir string) (*state, error) {
	data, err := os.ReadFile(statePath(dir))
	if err != nil {
		return nil, err
	}
	s := &state{dir: dir}
	if err := json.Unmarshal(data, s); err != nil {
		return nil, fmt.Errorf("%s: %w", statePath(dir), err)
	}
	return s, nil
}

// update changes the record and writes it (atomically) before returning.
func (s *state) update(change func(*state)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	change(s)
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp := statePath(s.dir) + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, statePath(s.dir))
}

func (s *state) procsOf(node string) []procRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.DeleteFunc(slices.Clone(s.Procs), func(r procRecord) bool { return r.Node != node })
}

// errAlreadyUp is returned by up when the state directory records a cluster.
var errAlreadyUp = errors.New("a cluster is recorded in the state directory: run `make cluster-down` first")

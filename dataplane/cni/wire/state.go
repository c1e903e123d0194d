package wire

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
)

// EnrollmentState is the agent's view of which pods on its node are in the
// mesh, written to a file on the host whenever it changes. The plugin only
// reads it when the agent does not answer, to decide whether failing ADD
// (enrolled) or passing the pod through (not enrolled) is right.
type EnrollmentState struct {
	// Namespaces labeled for the mesh.
	Namespaces []string `json:"namespaces"`
	// Pods whose own label decides, "namespace/name" → enrolled.
	Pods map[string]bool `json:"pods,omitempty"`
}

// Enrolled applies the same precedence as the agent: the pod's own label,
// then its namespace's.
func (s *EnrollmentState) Enrolled(namespace, name string) bool {
	if s == nil {
		return false
	}
	if v, ok := s.Pods[namespace+"/"+name]; ok {
		return v
	}
	return slices.Contains(s.Namespaces, namespace)
}

// ReadState reads the state file; a missing file is an empty state (the
// agent never ran on this node, so no pod can be enrolled yet).
func ReadState(path string) (*EnrollmentState, error) {
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return &EnrollmentState{}, nil
	}
	if err != nil {
		return nil, err
	}
	var s EnrollmentState
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("enrollment state %s: %w", path, err)
	}
	return &s, nil
}

// WriteState replaces the state file atomically (write, fsync, rename).
func WriteState(path string, s *EnrollmentState) error {
	sorted := EnrollmentState{Namespaces: slices.Sorted(slices.Values(s.Namespaces)), Pods: s.Pods}
	data, err := json.MarshalIndent(sorted, "", "  ")
	if err != nil {
		return err
	}
	return WriteFileAtomic(path, append(data, '\n'), 0o644)
}

// WriteFileAtomic writes data to a hidden temporary file next to path and
// renames it over path, so readers see the old or the new file, never a
// partial one.
func WriteFileAtomic(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

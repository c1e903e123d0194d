package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// down removes everything the state directory records, in the reverse of
// the order up created it, and then the state directory itself: processes
// (each node's kubelet and kube-proxy, its containers and their shims, its
// containerd, then the control plane), cgroups, the nodes' mount
// namespaces (with every mount made in them), network namespaces (with
// every rule, bridge and veth in them), the bridge (with its routes), the
// host directories it created, and the kernel settings kubelets changed.
// Without a record it does nothing; after a failed up it removes what was
// recorded.
func down(dir string) error {
	s, err := loadState(dir)
	if errors.Is(err, fs.ErrNotExist) {
		fmt.Printf("[cluster] nothing recorded in %s\n", dir)
		return nil
	}
	if err != nil {
		return err
	}
	started := time.Now()
	logf := func(format string, args ...any) {
		fmt.Printf("[cluster %5.1fs] %s\n", time.Since(started).Seconds(), fmt.Sprintf(format, args...))
	}
	var errs []error
	for _, name := range s.Nodes {
		stopNode(s, newNode(dir, nodeIndex(name)))
		logf("%s stopped", name)
	}
	// The control plane in the reverse of its start order: the apiserver
	// shuts down cleanly only while etcd still runs.
	for _, r := range slices.Backward(s.Procs) {
		if isOurs(r) {
			stopAll([]int{r.PID}, 15*time.Second)
		}
	}
	logf("control plane stopped")
	errs = append(errs, removeCgroups(s.CgroupHierarchies)...)
	for _, file := range s.MountNamespaces {
		errs = append(errs, unmount(file))
	}
	if s.NamespaceDir != "" {
		errs = append(errs, unmount(s.NamespaceDir))
	}
	for _, name := range s.Netns {
		if _, err := os.Stat(filepath.Join("/run/netns", name)); err == nil {
			errs = append(errs, run("ip", "netns", "delete", name))
		}
	}
	if s.Bridge != "" {
		if _, err := os.Stat(filepath.Join("/sys/class/net", s.Bridge)); err == nil {
			errs = append(errs, run("ip", "link", "delete", s.Bridge))
		}
	}
	errs = append(errs, restoreSysctls(s))
	for _, d := range slices.Backward(s.HostDirs) {
		errs = append(errs, removeEmptyTree(d))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cluster down: the state in %s is kept for another try: %w", dir, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	logf("cluster down: nothing left of %s", dir)
	return nil
}

// nodeIndex is N of a node named amc-nodeN.
func nodeIndex(name string) int {
	i, _ := strconv.Atoi(strings.TrimPrefix(name, "amc-node"))
	return i
}

// stopNode stops a node from the top: kubelet and kube-proxy first (so
// nothing restarts containers), then every container with its shim, then
// containerd.
func stopNode(s *state, n Node) {
	var agents, containerd []int
	for _, r := range s.procsOf(n.Name) {
		switch {
		case !isOurs(r):
		case strings.HasSuffix(r.Name, "-containerd"):
			containerd = append(containerd, r.PID)
		default:
			agents = append(agents, r.PID)
		}
	}
	stopAll(agents, 10*time.Second)
	shims := shimsOf(n)
	containers := descendants(shims)
	stopAll(containers, 5*time.Second)
	stopAll(shims, 5*time.Second)
	stopAll(containerd, 10*time.Second)
}

// removeCgroups kills whatever is still in cgroupParent (nothing, once the
// nodes are stopped) and removes its cgroups, deepest first, in each hierarchy.
func removeCgroups(hierarchies []string) []error {
	var errs []error
	for _, mnt := range hierarchies {
		root := filepath.Join(mnt, cgroupParent)
		var dirs []string
		_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		var pids []int
		for _, dir := range dirs {
			pids = append(pids, cgroupPIDs(dir)...)
		}
		stopAll(pids, 0)
		for _, dir := range slices.Backward(dirs) {
			if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errs
}

func cgroupPIDs(dir string) []int {
	data, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	var pids []int
	for _, field := range strings.Fields(string(data)) {
		if pid, err := strconv.Atoi(field); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// unmount detaches a mount point; one that is not mounted (any more) is fine.
func unmount(path string) error {
	err := unix.Unmount(path, unix.MNT_DETACH)
	if err == nil || errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOENT) {
		return nil
	}
	return fmt.Errorf("unmount %s: %w", path, err)
}

// removeEmptyTree removes a directory up created as a mount point, and the
// empty directories in it; it refuses to remove a file that someone put there.
func removeEmptyTree(dir string) error {
	var dirs []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return fmt.Errorf("not removing %s: it holds %s", dir, path)
		}
		dirs = append(dirs, path)
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, d := range slices.Backward(dirs) {
		if err := os.Remove(d); err != nil {
			return err
		}
	}
	return nil
}

package main

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// run runs a command to completion; its output is in the error.
func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// setupNetwork creates the bridge in the root network namespace and, per
// node, a network namespace linked to it by a veth pair, with routes so
// that every pod CIDR is reachable from the root namespace and from every
// other node. Nodes have no default route: nothing leaves the bridge.
func (c *cluster) setupNetwork() error {
	if err := c.state.update(func(s *state) { s.Bridge = bridgeName }); err != nil {
		return err
	}
	steps := [][]string{
		{"ip", "link", "add", bridgeName, "type", "bridge"},
		{"ip", "addr", "add", fmt.Sprintf("%s/%d", controlPlaneIP, bridgePrefix), "dev", bridgeName},
		{"ip", "link", "set", bridgeName, "up"},
	}
	for _, step := range steps {
		if err := run(step[0], step[1:]...); err != nil {
			return err
		}
	}
	for i, n := range c.nodes {
		if err := c.state.update(func(s *state) { s.Netns = append(s.Netns, n.Name) }); err != nil {
			return err
		}
		hostSide := fmt.Sprintf("amc0-n%d", i+1)
		steps := [][]string{
			{"ip", "netns", "add", n.Name},
			{"ip", "link", "add", hostSide, "type", "veth", "peer", "name", "eth0", "netns", n.Name},
			{"ip", "link", "set", hostSide, "master", bridgeName, "up"},
			{"ip", "-n", n.Name, "link", "set", "lo", "up"},
			{"ip", "-n", n.Name, "addr", "add", fmt.Sprintf("%s/%d", n.IP, bridgePrefix), "dev", "eth0"},
			{"ip", "-n", n.Name, "link", "set", "eth0", "up"},
			{"ip", "netns", "exec", n.Name, "sysctl", "-qw", "net.ipv4.ip_forward=1"},
			// The root namespace reaches pods (webhooks, kubectl port-forward
			// targets) through their node; the route goes with the bridge.
			{"ip", "route", "add", n.PodCIDR, "via", n.IP, "dev", bridgeName},
			// Host-network pods (the CNI agent) dial ClusterIPs: a routing
			// decision comes before kube-proxy's DNAT, so the Service range
			// needs a route. It is on-link, so a packet no rule translated
			// goes nowhere but the bridge.
			{"ip", "-n", n.Name, "route", "add", serviceCIDR, "dev", "eth0"},
		}
		for _, other := range c.nodes {
			if other.Name != n.Name {
				steps = append(steps, []string{"ip", "-n", n.Name, "route", "add", other.PodCIDR, "via", other.IP})
			}
		}
		for _, step := range steps {
			if err := run(step[0], step[1:]...); err != nil {
				return err
			}
		}
	}
	return nil
}

// setupMountNamespaces gives each node a mount namespace, kept alive by a
// file under ns/, in which its own directories are bind-mounted over
// nodeHostPaths. The namespace is private to the host: mounts made on a node
// (pod volumes, container root filesystems, pods' network namespace files)
// stay there and vanish with it. Inside, its mounts are then made shared again
// (new peer groups, none shared with the host), as on a systemd node: the
// kubelet's HostToContainer and Bidirectional mount propagation need the
// source of a hostPath volume to be a shared or slave mount.
func (c *cluster) setupMountNamespaces() error {
	nsDir := filepath.Join(c.dir, "ns")
	if err := os.MkdirAll(nsDir, 0o755); err != nil {
		return err
	}
	// A namespace file may only be bind-mounted on a private mount, or the
	// mount would propagate into the namespace it refers to.
	if err := c.state.update(func(s *state) { s.NamespaceDir = nsDir }); err != nil {
		return err
	}
	if err := unix.Mount(nsDir, nsDir, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s: %w", nsDir, err)
	}
	if err := unix.Mount("", nsDir, "", unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make %s private: %w", nsDir, err)
	}
	if err := c.createHostDirs(); err != nil {
		return err
	}
	for _, n := range c.nodes {
		// Bind pairs for the script: own dir, host path.
		binds := []string{}
		for _, p := range nodeHostPaths {
			if err := os.MkdirAll(n.Own(p), 0o755); err != nil {
				return err
			}
			binds = append(binds, n.Own(p), p)
		}
		file := n.MountNamespace(c.dir)
		if err := os.WriteFile(file, nil, 0o600); err != nil {
			return err
		}
		if err := c.state.update(func(s *state) { s.MountNamespaces = append(s.MountNamespaces, file) }); err != nil {
			return err
		}
		args := append([]string{"--mount=" + file, "--propagation", "private", "--",
			"sh", "-ec", `while [ $# -gt 0 ]; do mount --bind "$1" "$2"; shift 2; done; mount --make-rshared /`, "sh"}, binds...)
		if err := run("unshare", args...); err != nil {
			return err
		}
	}
	return nil
}

// createHostDirs creates the nodeHostPaths missing on the host (they are
// mount points) and records the topmost directory it created of each.
func (c *cluster) createHostDirs() error {
	for _, p := range nodeHostPaths {
		top := topmostMissing(p)
		if top == "" {
			continue
		}
		if err := c.state.update(func(s *state) { s.HostDirs = append(s.HostDirs, top) }); err != nil {
			return err
		}
		if err := os.MkdirAll(p, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// topmostMissing is the first directory of p's path that does not exist
// (MkdirAll(p) would create it and everything below); "" if p exists.
func topmostMissing(p string) string {
	top := ""
	for dir := filepath.Clean(p); dir != "/" && dir != "."; dir = filepath.Dir(dir) {
		if _, err := os.Lstat(dir); err == nil {
			break
		}
		top = dir
	}
	return top
}

// cgroupMounts lists the mount points of every cgroup hierarchy (v1 and v2).
func cgroupMounts() ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		if mountPoint, fsType, ok := parseMountinfo(scanner.Text()); ok && (fsType == "cgroup" || fsType == "cgroup2") {
			out = append(out, mountPoint)
		}
	}
	return out, scanner.Err()
}

// parseMountinfo returns the mount point and filesystem type of a
// /proc/<pid>/mountinfo line (the type follows the "-" separator).
func parseMountinfo(line string) (mountPoint, fsType string, ok bool) {
	fields := strings.Fields(line)
	sep := slices.Index(fields, "-")
	if len(fields) < 5 || sep < 0 || sep+1 >= len(fields) {
		return "", "", false
	}
	return fields[4], fields[sep+1], true
}

// setupCgroups creates cgroupParent and each node's cgroupRoot under it in
// every cgroup hierarchy: a kubelet refuses a cgroupRoot that does not
// exist. A new v1 cpuset cgroup starts with no CPUs or memory nodes, so it
// gets its parent's; a v2 cgroup delegates every controller it has.
func (c *cluster) setupCgroups() error {
	mounts, err := cgroupMounts()
	if err != nil {
		return err
	}
	for _, mnt := range mounts {
		if err := c.state.update(func(s *state) { s.CgroupHierarchies = append(s.CgroupHierarchies, mnt) }); err != nil {
			return err
		}
		dirs := []string{filepath.Join(mnt, cgroupParent)}
		for _, n := range c.nodes {
			dirs = append(dirs, filepath.Join(mnt, n.CgroupRoot()))
		}
		for _, dir := range dirs {
			if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
				return err
			}
			for _, file := range []string{"cpuset.cpus", "cpuset.mems"} {
				if err := copyCgroupFile(filepath.Dir(dir), dir, file); err != nil {
					return err
				}
			}
			if err := delegateControllers(dir); err != nil {
				return err
			}
		}
	}
	return nil
}

// copyCgroupFile copies a v1 cgroup file from parent to child when the
// hierarchy has it.
func copyCgroupFile(parent, child, file string) error {
	data, err := os.ReadFile(filepath.Join(parent, file))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(child, file), data, 0o644)
}

// delegateControllers enables, in a v2 cgroup, every controller it has
// for its children.
func delegateControllers(dir string) error {
	data, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, controller := range strings.Fields(string(data)) {
		if err := os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte("+"+controller), 0o644); err != nil {
			return fmt.Errorf("%s: enable %s: %w", dir, controller, err)
		}
	}
	return nil
}

// kubeletSysctls are the kernel settings a kubelet sets on the host when it
// starts (protectKernelDefaults: false). They are global, not per node.
var kubeletSysctls = []string{
	"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
}

// saveSysctls records the host's values of kubeletSysctls (once).
func (c *cluster) saveSysctls() error {
	values := map[string]string{}
	for _, key := range kubeletSysctls {
		data, err := os.ReadFile(filepath.Join("/proc/sys", key))
		if err != nil {
			return err
		}
		values[key] = strings.TrimSpace(string(data))
	}
	return c.state.update(func(s *state) {
		if s.Sysctls == nil {
			s.Sysctls = values
		}
	})
}

// restoreSysctls puts back the recorded values and forgets them.
func restoreSysctls(s *state) error {
	var errs []error
	for key, value := range s.Sysctls {
		errs = append(errs, os.WriteFile(filepath.Join("/proc/sys", key), []byte(value), 0o644))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return s.update(func(s *state) { s.Sysctls = nil })
}

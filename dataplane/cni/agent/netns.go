package agent

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"syscall"

	"github.com/containernetworking/plugins/pkg/ns"
)

// NetnsFinder locates the network namespace of a running pod by its IP, for
// pods the agent did not see through the plugin (already running when the
// agent started, or enrolled later by a label change).
type NetnsFinder struct {
	// Dirs hold bind-mounted namespaces (container runtimes use
	// /var/run/netns); they are searched first because their paths are
	// stable. ProcRoot (/proc) is searched after, through /proc/<pid>/ns/net.
	Dirs     []string
	ProcRoot string
}

// Find returns a path to the netns holding any of ips.
func (f *NetnsFinder) Find(ips []netip.Addr) (string, error) {
	if len(ips) == 0 {
		return "", fmt.Errorf("pod has no IP yet")
	}
	seen := map[uint64]bool{}
	for _, path := range f.candidates() {
		var st syscall.Stat_t
		if err := syscall.Stat(path, &st); err != nil || seen[st.Ino] {
			continue
		}
		seen[st.Ino] = true
		if holdsAny(path, ips) {
			return path, nil
		}
	}
	return "", fmt.Errorf("no network namespace on this node holds %v", ips)
}

func (f *NetnsFinder) candidates() []string {
	var out []string
	for _, dir := range f.Dirs {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	if f.ProcRoot != "" {
		pids, _ := filepath.Glob(filepath.Join(f.ProcRoot, "[0-9]*", "ns", "net"))
		out = append(out, pids...)
	}
	return out
}

// holdsAny reports whether an interface in the netns at path has one of ips.
func holdsAny(path string, ips []netip.Addr) bool {
	found := false
	_ = ns.WithNetNSPath(path, func(ns.NetNS) error {
		addrs, err := net.InterfaceAddrs()
		if err != nil {
			return err
		}
		for _, a := range addrs {
			if ipnet, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(ipnet.IP); ok && slices.Contains(ips, ip.Unmap()) {
					found = true
				}
			}
		}
		return nil
	})
	return found
}

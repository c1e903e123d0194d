package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// hostFacts is what this machine is like, as far as a kubelet and
// containerd care. docs/cluster.md explains each.
type hostFacts struct {
	// CgroupV2 is true when /sys/fs/cgroup is the unified (v2) hierarchy;
	// false for v1 and for the hybrid layout (v1 controllers, v2 mounted at
	// /sys/fs/cgroup/unified) this VM has.
	CgroupV2 bool
	// Swap is true when a swap device or file is active.
	Swap bool
	// CanLowerOOMScore is true when this process may set an oom_score_adj
	// below its own (it has CAP_SYS_RESOURCE). Kubelets ask for -999 for
	// themselves and -997 for Guaranteed pods; containerd for -998 for
	// sandboxes.
	CanLowerOOMScore bool
}

// hostSettings are the kubelet, containerd and kube-proxy settings that
// follow from hostFacts: the only settings that depend on the machine.
type hostSettings struct {
	// CgroupDriver is always cgroupfs: the systemd driver would need every
	// kubelet and containerd to run as a systemd unit, and this VM's PID 1
	// is not systemd.
	CgroupDriver string
	// FailCgroupV1 false lets kubelet v1.35 start on cgroup v1 at all.
	FailCgroupV1 bool
	// FailSwapOn false lets a kubelet start with swap on (pods do not use it).
	FailSwapOn bool
	// RestrictOOMScoreAdj makes containerd clamp the oom_score_adj it gives
	// containers to its own, instead of failing to start them.
	RestrictOOMScoreAdj bool
	// OOMScoreAdj is what kubelet and kube-proxy set for themselves:
	// upstream's -999, or 0 (unchanged) when it cannot be lowered.
	OOMScoreAdj int
}

func settingsFor(f hostFacts) hostSettings {
	s := hostSettings{CgroupDriver: "cgroupfs", FailCgroupV1: f.CgroupV2, FailSwapOn: !f.Swap, OOMScoreAdj: -999}
	if !f.CanLowerOOMScore {
		s.RestrictOOMScoreAdj = true
		s.OOMScoreAdj = 0
	}
	return s
}

// capSysResource is CAP_SYS_RESOURCE's bit in /proc/<pid>/status Cap* masks.
const capSysResource = 24

// probeHost reads the facts of this machine.
func probeHost() (hostFacts, error) {
	var f hostFacts
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &st); err != nil {
		return f, fmt.Errorf("/sys/fs/cgroup: %w", err)
	}
	f.CgroupV2 = st.Type == unix.CGROUP2_SUPER_MAGIC
	swaps, err := os.ReadFile("/proc/swaps")
	if err != nil {
		return f, err
	}
	f.Swap = swapActive(string(swaps))
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return f, err
	}
	f.CanLowerOOMScore, err = hasEffectiveCapability(string(status), capSysResource)
	return f, err
}

// swapActive reports whether /proc/swaps lists any device (its first line is a header).
func swapActive(procSwaps string) bool {
	lines := strings.Split(strings.TrimSpace(procSwaps), "\n")
	return len(lines) > 1
}

// hasEffectiveCapability reads the CapEff mask of a /proc/<pid>/status.
func hasEffectiveCapability(status string, bit uint) (bool, error) {
	for line := range strings.SplitSeq(status, "\n") {
		hex, ok := strings.CutPrefix(line, "CapEff:")
		if !ok {
			continue
		}
		mask, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
		if err != nil {
			return false, fmt.Errorf("CapEff %q: %w", hex, err)
		}
		return mask&(1<<bit) != 0, nil
	}
	return false, fmt.Errorf("no CapEff line in status")
}

package bootstrap

import (
	"fmt"
	"os"
	"strings"
	"syscall"
)

// SysmonAwake keeps the Go runtime's monitor thread (sysmon) out of its deep sleep.
//
// A proxy works in short bursts: a connection opens, a message passes, and the process is
// idle again. While every P is idle, sysmon sleeps until some goroutine enters a system
// call; that call then wakes it (a futex wake-up on the connection's path), and sysmon
// naps 20 µs at a time for at least a millisecond before backing off. On a small node
// those fifty-odd wake-ups per burst compete for the CPUs with the apps and the other
// proxy. Measured with make bench-dataplane (docs/benchmarks.md): ztunnel CPU per new
// connection −17 %, new-connection latency ratio 3.1–3.25 → 2.9–3.0.
//
// The runtime has one switch for this: sysmon never deep-sleeps while a scheduler trace
// interval is set (runtime/proc.go, sysmon). At the longest interval (2³¹−1 ms) the trace
// is one summary line on stderr per 24.8 days of the node's uptime, and an idle sysmon
// naps 10 ms at a time. The trade: a goroutine blocked in a system call keeps its P for up
// to ~20 ms before sysmon hands the P to another thread, instead of ~20 µs; ztunnel's
// system calls are non-blocking network calls.
//
// GODEBUG is read once, at start, so the setting needs a re-exec. An explicit schedtrace in
// $GODEBUG wins (GODEBUG=schedtrace=0 turns this off), and the proxies do not call
// KeepSysmonAwake at all with AMBIENT_PERF_SYSMON=off (PerfDevices).
const SysmonAwake = "schedtrace=2147483647"

// WithSysmonAwake is environ with SysmonAwake added to GODEBUG, and whether that changed
// anything (false when GODEBUG already sets schedtrace).
func WithSysmonAwake(environ []string) ([]string, bool) {
	out := make([]string, 0, len(environ)+1)
	godebug := ""
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, "GODEBUG="); ok {
			godebug = v // the last one counts, as for getenv
			continue
		}
		out = append(out, kv)
	}
	for _, setting := range strings.Split(godebug, ",") {
		if strings.HasPrefix(setting, "schedtrace=") {
			return environ, false
		}
	}
	if godebug != "" {
		godebug += ","
	}
	return append(out, "GODEBUG="+godebug+SysmonAwake), true
}

// KeepSysmonAwake re-executes this process with SysmonAwake, unless it is set already. It
// returns only if it did not re-execute: without the setting (and with a reason) or with it.
func KeepSysmonAwake() error {
	env, changed := WithSysmonAwake(os.Environ())
	if !changed {
		return nil
	}
	// The binary's own path, not /proc/self/exe: the kernel names the process after the
	// file executed, and ps should say ztunnel (or waypoint).
	exe, err := os.Executable()
	if err == nil {
		err = syscall.Exec(exe, os.Args, env)
	}
	return fmt.Errorf("re-executing with GODEBUG=%s: %w", SysmonAwake, err)
}

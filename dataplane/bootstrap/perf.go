package bootstrap

import (
	"fmt"
	"os"

	"github.com/go-logr/logr"

	"github.com/ambientmesh/ambient-operator/internal/workers"
)

// PerfDevices says which of the proxies' performance devices are on (docs/performance.md
// describes each, with the measurement behind it). All are on by default; each has an
// environment variable that turns it off, read once at start by Main (cmd/ztunnel and
// cmd/waypoint):
//
//	AMBIENT_PERF_SYSMON=off          no re-exec with SysmonAwake (ztunnel, waypoint)
//	AMBIENT_PERF_WORKERS=off         a new goroutine for each connection's work instead of a
//	                                 reused one, internal/workers (ztunnel, waypoint)
//	AMBIENT_PERF_SPARE_SOCKETS=off   in-pod dials make their socket when they dial instead of
//	                                 taking one made in advance (ztunnel)
//
// The switches are there to measure what each device is worth on a given node, and to rule
// one out when looking for a fault.
type PerfDevices struct {
	SysmonAwake  bool
	Workers      bool
	SpareSockets bool
}

// The environment variables of the performance devices; their values are "on" or "off".
const (
	EnvPerfSysmon       = "AMBIENT_PERF_SYSMON"
	EnvPerfWorkers      = "AMBIENT_PERF_WORKERS"
	EnvPerfSpareSockets = "AMBIENT_PERF_SPARE_SOCKETS"
)

// PerfDevicesFromEnv reads the switches with getenv (os.Getenv). An unset or empty variable
// leaves its device on; a value other than "on" or "off" is an error, so that a typo does
// not leave a device on unnoticed.
func PerfDevicesFromEnv(getenv func(string) string) (PerfDevices, error) {
	var d PerfDevices
	for _, sw := range []struct {
		env string
		on  *bool
	}{
		{EnvPerfSysmon, &d.SysmonAwake},
		{EnvPerfWorkers, &d.Workers},
		{EnvPerfSpareSockets, &d.SpareSockets},
	} {
		switch v := getenv(sw.env); v {
		case "", "on":
			*sw.on = true
		case "off":
			*sw.on = false
		default:
			return PerfDevices{}, fmt.Errorf("%s=%q: want on or off", sw.env, v)
		}
	}
	return d, nil
}

// startPerfDevices reads the switches from the environment and starts the devices both
// proxies share: SysmonAwake, which re-executes the process and so must come before the
// proxy starts anything, and goroutine reuse. The proxy's own devices (spare sockets) are
// the caller's to apply from the result. A bad switch is an error; a failed re-exec is
// only logged, since the proxy works without SysmonAwake, just slower.
func startPerfDevices(log logr.Logger) (PerfDevices, error) {
	perf, err := PerfDevicesFromEnv(os.Getenv)
	if err != nil {
		return PerfDevices{}, err
	}
	if perf.SysmonAwake {
		if err := KeepSysmonAwake(); err != nil {
			log.Error(err, "running with the Go runtime's default monitor thread; each burst of traffic takes longer")
		}
	}
	workers.SetReuse(perf.Workers)
	return perf, nil
}

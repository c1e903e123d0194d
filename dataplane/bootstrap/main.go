package bootstrap

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"

	"github.com/ambientmesh/ambient-operator/internal/version"
)

// Main is the part of main both proxies share, called after flag.Parse: with -version it
// prints the version of the named proxy and returns; otherwise it sets the worker threads,
// starts the performance devices and runs serve until SIGTERM or SIGINT. serve gets the
// JSON log and the switches of the devices it applies itself. When either step fails, Main
// logs why and exits the process with status 1.
func Main(name string, f *Flags, serve func(ctx context.Context, log logr.Logger, perf PerfDevices) error) {
	if f.ShowVersion {
		fmt.Println(version.String(name))
		return
	}
	if n := workerThreads(f.WorkerThreads, os.Getenv("GOMAXPROCS"), runtime.GOMAXPROCS(0)); n > 0 {
		runtime.GOMAXPROCS(n)
	}
	log := funcr.NewJSON(func(obj string) { fmt.Fprintln(os.Stderr, obj) }, funcr.Options{LogTimestamp: true, Verbosity: f.Verbosity})
	perf, err := startPerfDevices(log)
	if err == nil {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		err = serve(ctx, log, perf)
		stop()
	}
	if err != nil {
		log.Error(err, name+" failed")
		os.Exit(1)
	}
}

// workerThreads is the GOMAXPROCS to set (0: leave the runtime's, which follows the
// container's CPU limit). Both proxies work in short bursts: ztunnel shares its node with
// the apps whose bytes it carries, and the waypoint wakes per request. So by default they
// run Go code on half the CPUs the runtime would use. On small nodes this also spares the
// Go scheduler's wake-ups of idle threads, measured as most of a ztunnel's new-connection
// latency and 22–38 % of the waypoint's CPU per request (docs/benchmarks.md). Istio's
// ztunnel likewise runs a fixed two worker threads.
func workerThreads(flagValue int, envGOMAXPROCS string, available int) int {
	switch {
	case flagValue > 0:
		return flagValue
	case envGOMAXPROCS != "":
		return 0
	}
	return max(1, (available+1)/2)
}

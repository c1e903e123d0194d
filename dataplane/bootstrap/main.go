package bootstrap

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"

	"github.com/ambientmesh/ambient-operator/internal/version"
)

// Main is the part of main both proxies share, called after flag.Parse: with -version it
// prints the version of the named proxy and returns; otherwise it starts the performance
// devices and runs serve until SIGTERM or SIGINT. serve gets the JSON log and the
// switches of the devices it applies itself. When either step fails, Main logs why and
// exits the process with status 1.
func Main(name string, f *Flags, serve func(ctx context.Context, log logr.Logger, perf PerfDevices) error) {
	if f.ShowVersion {
		fmt.Println(version.String(name))
		return
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

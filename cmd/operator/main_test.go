package main

import (
	"flag"
	"testing"
)

func TestFlagsDefaultToKubebuilderConventions(t *testing.T) {
	fs := flag.NewFlagSet("operator", flag.ContinueOnError)
	opts := bindFlags(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if opts.metricsAddr != ":8443" || !opts.secureMetrics || opts.probeAddr != ":8081" || opts.leaderElect {
		t.Errorf("defaults = %+v; want secure metrics on :8443, probes on :8081, no leader election", *opts)
	}
	if fs.Lookup("zap-log-level") == nil {
		t.Error("zap logging flags (--zap-log-level, ...) are not bound")
	}
	if fs.Lookup("kubeconfig") != nil {
		t.Error("--kubeconfig must come from controller-runtime's global flag, not ours")
	}

	if err := fs.Parse([]string{"--leader-elect", "--metrics-bind-address=:9090", "--zap-log-level=debug"}); err != nil {
		t.Fatal(err)
	}
	if !opts.leaderElect || opts.metricsAddr != ":9090" {
		t.Errorf("after parsing flags: %+v", *opts)
	}
}

package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"

	"k8s.io/client-go/rest"
)

// CAInjectorBinary is bin/cert-manager-cainjector, built with the
// controller by `make tools` (hack/tools.sh cert-manager).
func CAInjectorBinary() (string, error) {
	return toolBinary("cert-manager-cainjector", "cert-manager cainjector")
}

// StartCAInjector runs the real cert-manager CA injector as a separate
// process against the API server of cfg, like StartCertManager runs the
// controller, and takes the same options. It injects into every kind it
// supports unless "--injectables=..." says otherwise. stop terminates it
// by its PID and waits for it; it is safe to call more than once.
func StartCAInjector(ctx context.Context, cfg *rest.Config, opts ...CertManagerOption) (stop func(), err error) {
	bin, err := CAInjectorBinary()
	if err != nil {
		return nil, err
	}
	conf := certManagerConfig{}
	for _, opt := range opts {
		opt(&conf)
	}
	return startWithKubeconfig(ctx, cfg, bin, conf)
}

// startWithKubeconfig starts bin with a kubeconfig for cfg in a temporary
// directory, its output going to conf.logs or, without it, to a temporary
// file that is kept (and named on stderr) so a failure can be diagnosed.
func startWithKubeconfig(ctx context.Context, cfg *rest.Config, bin string, conf certManagerConfig) (stop func(), err error) {
	dir, err := os.MkdirTemp("", "ambient-"+filepath.Base(bin)+"-")
	if err != nil {
		return nil, err
	}
	cleanupDir := func() { _ = os.RemoveAll(dir) }
	var logFile *os.File
	if conf.logs == nil {
		logFile, err = os.CreateTemp("", filepath.Base(bin)+"-*.log")
		if err != nil {
			cleanupDir()
			return nil, err
		}
		conf.logs = logFile
		fmt.Fprintf(os.Stderr, "%s logs: %s\n", filepath.Base(bin), logFile.Name())
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := WriteKubeconfig(cfg, kubeconfig); err != nil {
		cleanupDir()
		return nil, err
	}
	cmd := exec.CommandContext(ctx, bin, append([]string{"--kubeconfig=" + kubeconfig, "--v=2"}, conf.args...)...)
	cmd.Stdout, cmd.Stderr = conf.logs, conf.logs
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = certManagerStopGrace
	if err := cmd.Start(); err != nil {
		cleanupDir()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	var once sync.Once
	return func() { once.Do(func() { stopProcess(cmd, done, logFile, cleanupDir) }) }, nil
}

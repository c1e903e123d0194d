package testenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// certManagerStopGrace is how long stop waits after SIGTERM before SIGKILL.
const certManagerStopGrace = 10 * time.Second

// CertManagerOption changes how StartCertManager runs the controller.
type CertManagerOption func(*certManagerConfig)

type certManagerConfig struct {
	logs io.Writer
	args []string
}

// WithCertManagerLogs sends the controller's output to w (for example
// GinkgoWriter). Without it the output goes to a temporary file whose path
// is printed on stderr.
func WithCertManagerLogs(w io.Writer) CertManagerOption {
	return func(c *certManagerConfig) { c.logs = w }
}

// WithCertManagerArgs adds command-line flags, e.g. "--controllers=...".
func WithCertManagerArgs(args ...string) CertManagerOption {
	return func(c *certManagerConfig) { c.args = append(c.args, args...) }
}

// CertManagerBinary is bin/cert-manager-controller, built by `make tools`.
func CertManagerBinary() (string, error) {
	return toolBinary("cert-manager-controller", "cert-manager controller")
}

// toolBinary is bin/<name>, or an error saying how to build it.
func toolBinary(name, what string) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(root, "bin", name)
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("%s missing at %s: %s", what, bin, missingToolsAdvice)
	}
	return bin, nil
}

// StartCertManager runs the real cert-manager controller as a separate
// process against the API server of cfg (use a cluster-admin config, such as
// the one envtest's Start returns). stop terminates that process by its PID
// and waits for it; it is safe to call more than once. The process also ends
// when ctx is cancelled.
func StartCertManager(ctx context.Context, cfg *rest.Config, opts ...CertManagerOption) (stop func(), err error) {
	bin, err := CertManagerBinary()
	if err != nil {
		return nil, err
	}
	conf := certManagerConfig{}
	for _, opt := range opts {
		opt(&conf)
	}
	return startWithKubeconfig(ctx, cfg, bin, conf)
}

// stopProcess sends SIGTERM to the controller's PID, then SIGKILL if it has
// not exited within certManagerStopGrace, and waits for it.
func stopProcess(cmd *exec.Cmd, done <-chan struct{}, logFile *os.File, cleanupDir func()) {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(certManagerStopGrace):
		_ = cmd.Process.Kill()
		<-done
	}
	if logFile != nil {
		_ = logFile.Close()
	}
	cleanupDir()
}

// WriteKubeconfig serialises cfg's address and credentials (client
// certificate, token or basic auth) into a kubeconfig file for a child process.
func WriteKubeconfig(cfg *rest.Config, path string) error {
	if cfg == nil || cfg.Host == "" {
		return errors.New("WriteKubeconfig: rest config without a host")
	}
	const name = "envtest"
	kc := clientcmdapi.NewConfig()
	kc.Clusters[name] = &clientcmdapi.Cluster{
		Server:                   serverURL(cfg),
		CertificateAuthorityData: cfg.CAData,
		CertificateAuthority:     cfg.CAFile,
		InsecureSkipTLSVerify:    cfg.Insecure,
		TLSServerName:            cfg.ServerName,
	}
	kc.AuthInfos[name] = &clientcmdapi.AuthInfo{
		ClientCertificateData: cfg.CertData,
		ClientCertificate:     cfg.CertFile,
		ClientKeyData:         cfg.KeyData,
		ClientKey:             cfg.KeyFile,
		Token:                 cfg.BearerToken,
		TokenFile:             cfg.BearerTokenFile,
		Username:              cfg.Username,
		Password:              cfg.Password,
	}
	kc.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name}
	kc.CurrentContext = name
	return clientcmd.WriteToFile(*kc, path)
}

// serverURL is cfg.Host with a scheme: rest.Config allows a bare host:port.
func serverURL(cfg *rest.Config) string {
	if strings.Contains(cfg.Host, "://") {
		return cfg.Host
	}
	if cfg.Insecure || len(cfg.CAData) > 0 || cfg.CAFile != "" || len(cfg.CertData) > 0 {
		return "https://" + cfg.Host
	}
	return "http://" + cfg.Host
}

// Command cni-agent is the CNI node agent (one per node, DaemonSet with
// hostNetwork and privileges). Settings not given as flags come from the
// mesh config (--mesh-config, the operator's ConfigMap). `cni-agent
// uninstall` removes everything the agent put on the node; so does a start
// with a mesh config marked uninstalling.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/ambientmesh/ambient-operator/dataplane/cni/agent"
	"github.com/ambientmesh/ambient-operator/dataplane/cni/plugin"
	"github.com/ambientmesh/ambient-operator/dataplane/cni/rules"
	"github.com/ambientmesh/ambient-operator/internal/meshconfig"
	"github.com/ambientmesh/ambient-operator/internal/version"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "cni-agent:", err)
		os.Exit(1)
	}
}

func run() error {
	var o agent.Options
	var netnsDirs listFlag
	var meshConfigPath string
	fs := flag.NewFlagSet("cni-agent", flag.ExitOnError)
	fs.StringVar(&meshConfigPath, "mesh-config", "", "mesh config file (default: built-in defaults)")
	fs.StringVar(&o.NodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME)")
	fs.StringVar(&o.Backend, "redirection", "", "redirection backend: iptables or nftables (default from the mesh config)")
	fs.StringVar(&o.ZtunnelSocket, "ztunnel-socket", "", "ztunnel's hand-off socket (default from the mesh config)")
	fs.StringVar(&o.CNISocket, "cni-socket", plugin.DefaultAgentSocket, "socket the plugin calls")
	fs.StringVar(&o.StateFile, "state-file", plugin.DefaultStateFile, "enrollment state the plugin reads when the agent is down")
	fs.StringVar(&o.PluginBinary, "plugin-binary", defaultPluginBinary(), "plugin binary to install (empty: do not install)")
	fs.StringVar(&o.CNIBinDir, "cni-bin-dir", "", "host CNI bin dir (default from the mesh config)")
	fs.StringVar(&o.CNIConfDir, "cni-conf-dir", "", "host CNI conf dir (default from the mesh config)")
	fs.Var(&netnsDirs, "netns-dir", "dir of bind-mounted pod netns (repeatable; default "+meshconfig.NetNSDir+")")
	fs.StringVar(&o.ProcRoot, "proc-root", "/proc", "proc filesystem searched for pod netns")
	fs.StringVar(&o.HostNetns, "host-netns", "", "netns path of the node (default: the agent's own)")
	fs.StringVar(&o.MetricsAddr, "metrics-bind-address", ":15030", "Prometheus metrics address (0 disables)")
	fs.StringVar(&o.ProbeAddr, "health-probe-bind-address", ":15031", "healthz/readyz address (0 disables)")
	showVersion := fs.Bool("version", false, "Print the version and exit.")
	// Flags the operator's DaemonSet passes (controllers/ambientmesh/manifests.CNIAgentArgs).
	var runDir string
	var healthPort int
	fs.StringVar(&runDir, "run-dir", "", "node run dir: unless set, --cni-socket and --state-file are <run-dir>/cni/agent.sock and <run-dir>/cni/enrollment.json")
	fs.IntVar(&healthPort, "health-port", 0, "serve the probes on :<port> (unless --health-probe-bind-address is set)")
	fs.Func("log-level", "debug, info, warn or error (sets the zap level unless --zap-log-level is set)", func(string) error { return nil })
	zopts := zap.Options{}
	zopts.BindFlags(fs)
	args := os.Args[1:]
	uninstall := len(args) > 0 && args[0] == "uninstall"
	if uninstall {
		args = args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *showVersion {
		fmt.Println(version.String("cni-agent"))
		return nil
	}
	applyDaemonSetFlags(fs, &o, runDir, healthPort)
	mc := meshconfig.Default()
	if meshConfigPath != "" {
		var err error
		if mc, err = meshconfig.Load(meshConfigPath); err != nil {
			return err
		}
	}
	if err := applyMeshConfig(&o, mc); err != nil {
		return err
	}
	o.NetnsDirs = netnsDirs
	if len(o.NetnsDirs) == 0 {
		o.NetnsDirs = []string{meshconfig.NetNSDir}
	}
	log := zap.New(zap.UseFlagOptions(&zopts))
	ctrl.SetLogger(log)
	o.Log = log
	ctx := ctrl.SetupSignalHandler()
	if uninstall || mc.Uninstalling {
		if err := agent.UninstallNode(o, log); err != nil {
			return err
		}
		log.Info("removed the mesh from this node")
		if mc.Uninstalling && !uninstall {
			<-ctx.Done() // stay up until the DaemonSet is deleted; do nothing more
		}
		return nil
	}
	cfg := ctrl.GetConfigOrDie()
	a, err := agent.New(cfg, o)
	if err != nil {
		return err
	}
	if err := a.Start(ctx); err != nil {
		return err
	}
	// The operator uninstalls by marking the mesh config and then deleting
	// this DaemonSet: on the way out, clean the node when that is why we stop.
	if uninstallingNow(cfg, meshConfigPath) {
		log.Info("the mesh is being uninstalled: removing it from this node")
		return agent.UninstallNode(o, log)
	}
	return nil
}

// uninstallingNow reads the mesh config again, from the mounted file and,
// because a ConfigMap change reaches mounted files only after the
// kubelet's next sync, from the apiserver.
func uninstallingNow(cfg *rest.Config, path string) bool {
	if path != "" {
		if mc, err := meshconfig.Load(path); err == nil && mc.Uninstalling {
			return true
		}
	}
	ns := os.Getenv("POD_NAMESPACE")
	cs, err := kubernetes.NewForConfig(cfg)
	if ns == "" || err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cm, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, meshconfig.ConfigMapName, metav1.GetOptions{})
	if err != nil {
		return false
	}
	mc, err := meshconfig.Parse([]byte(cm.Data[meshconfig.ConfigMapKey]))
	return err == nil && mc.Uninstalling
}

// applyMeshConfig fills what the flags left empty from the mesh config.
func applyMeshConfig(o *agent.Options, mc meshconfig.MeshConfig) error {
	orStr := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	orStr(&o.Backend, string(mc.Redirection.Backend))
	orStr(&o.ZtunnelSocket, mc.CNI.HandoffSocket)
	orStr(&o.CNIBinDir, mc.CNI.BinDir)
	orStr(&o.CNIConfDir, mc.CNI.ConfDir)
	if !mc.CNI.Chained {
		o.PluginBinary = "" // another component owns the CNI configuration
	}
	probe, err := netip.ParseAddr(mc.Redirection.HealthProbeSNATAddress)
	if err != nil {
		return fmt.Errorf("mesh config redirection.healthProbeSNATAddress: %w", err)
	}
	o.PodConfig = rules.DefaultPodConfig()
	o.PodConfig.ProxyMark = mc.Redirection.ProxyMark
	o.PodConfig.ProbeSource = probe
	o.PodConfig.OutboundPort = uint16(mc.Ports.Outbound)
	o.PodConfig.InboundPort = uint16(mc.Ports.InboundPlaintext)
	o.PodConfig.HBONEPort = uint16(mc.Ports.HBONE)
	return o.PodConfig.Validate()
}

// applyDaemonSetFlags fills from --run-dir and --health-port the options
// whose own flags were not given.
func applyDaemonSetFlags(fs *flag.FlagSet, o *agent.Options, runDir string, healthPort int) {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if runDir != "" && !set["cni-socket"] {
		o.CNISocket = filepath.Join(runDir, "cni", "agent.sock")
	}
	if runDir != "" && !set["state-file"] {
		o.StateFile = filepath.Join(runDir, "cni", "enrollment.json")
	}
	if healthPort != 0 && !set["health-probe-bind-address"] {
		o.ProbeAddr = fmt.Sprintf(":%d", healthPort)
	}
}

// defaultPluginBinary is the plugin shipped next to the agent's binary.
func defaultPluginBinary() string {
	self, err := os.Executable()
	if err != nil {
		return ""
	}
	return filepath.Join(filepath.Dir(self), plugin.Type)
}

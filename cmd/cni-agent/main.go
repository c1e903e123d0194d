// Command cni-agent is the CNI node agent (one per node, DaemonSet with
// hostNetwork and privileges). `cni-agent uninstall` removes everything the
// agent put on the node.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/dataplane/cni/agent"
	"github.com/ambientmesh/ambient-operator/dataplane/cni/plugin"
	"github.com/ambientmesh/ambient-operator/dataplane/cni/rules"
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
	o := agent.Options{PodConfig: rules.DefaultPodConfig()}
	var netnsDirs listFlag
	fs := flag.NewFlagSet("cni-agent", flag.ExitOnError)
	fs.StringVar(&o.NodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME)")
	fs.StringVar(&o.Backend, "redirection", string(meshv1.RedirectionIPTables), "redirection backend: iptables or nftables")
	fs.StringVar(&o.ZtunnelSocket, "ztunnel-socket", "/var/run/ambientmesh/ztunnel/handoff.sock", "ztunnel's hand-off socket")
	fs.StringVar(&o.CNISocket, "cni-socket", plugin.DefaultAgentSocket, "socket the plugin calls")
	fs.StringVar(&o.StateFile, "state-file", plugin.DefaultStateFile, "enrollment state the plugin reads when the agent is down")
	fs.StringVar(&o.PluginBinary, "plugin-binary", defaultPluginBinary(), "plugin binary to install (empty: do not install)")
	fs.StringVar(&o.CNIBinDir, "cni-bin-dir", meshv1.DefaultCNIBinDir, "host CNI bin dir")
	fs.StringVar(&o.CNIConfDir, "cni-conf-dir", meshv1.DefaultCNIConfDir, "host CNI conf dir")
	fs.Var(&netnsDirs, "netns-dir", "dir of bind-mounted pod netns (repeatable; default /var/run/netns)")
	fs.StringVar(&o.ProcRoot, "proc-root", "/proc", "proc filesystem searched for pod netns")
	fs.StringVar(&o.HostNetns, "host-netns", "", "netns path of the node (default: the agent's own)")
	fs.StringVar(&o.MetricsAddr, "metrics-bind-address", ":15030", "Prometheus metrics address (0 disables)")
	fs.StringVar(&o.ProbeAddr, "health-probe-bind-address", ":15031", "healthz/readyz address (0 disables)")
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
	o.NetnsDirs = netnsDirs
	if len(o.NetnsDirs) == 0 {
		o.NetnsDirs = []string{"/var/run/netns"}
	}
	log := zap.New(zap.UseFlagOptions(&zopts))
	ctrl.SetLogger(log)
	o.Log = log
	if uninstall {
		return agent.UninstallNode(o, log)
	}
	a, err := agent.New(ctrl.GetConfigOrDie(), o)
	if err != nil {
		return err
	}
	return a.Start(ctrl.SetupSignalHandler())
}

// defaultPluginBinary is the plugin shipped next to the agent's binary.
func defaultPluginBinary() string {
	self, err := os.Executable()
	if err != nil {
		return ""
	}
	return filepath.Join(filepath.Dir(self), plugin.Type)
}

package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"
)

// Check is one pre-flight result.
type Check struct {
	Name   string `json:"name"`
	Status string `json:"status"` // ok, warn or fail
	Detail string `json:"detail"`
}

const (
	statusOK   = "ok"
	statusWarn = "warn"
	statusFail = "fail"
)

// host is what the checks read of the machine, so that tests can give a
// made-up machine.
type host struct {
	root     string // prefix for /proc and the CNI conf dir (tests)
	confDir  string
	euid     int
	lookPath func(string) (string, error)
}

func checkCommand(g *globalFlags) *cobra.Command {
	var confDir string
	cmd := &cobra.Command{
		Use:   "check",
		Short: "pre-flight checks of this machine as a mesh node",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			checks := runChecks(host{root: "/", confDir: confDir, euid: os.Geteuid(), lookPath: exec.LookPath})
			t := Table{Headers: []string{"CHECK", "STATUS", "DETAIL"}}
			failed := false
			for _, ch := range checks {
				t.Rows = append(t.Rows, []string{ch.Name, ch.Status, ch.Detail})
				failed = failed || ch.Status == statusFail
			}
			if err := write(cmd.OutOrStdout(), g.output, checks, t); err != nil {
				return err
			}
			if failed {
				return exitError(1)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&confDir, "cni-conf-dir", "/etc/cni/net.d", "the node's CNI configuration directory")
	_ = cmd.RegisterFlagCompletionFunc("cni-conf-dir", func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return nil, cobra.ShellCompDirectiveFilterDirs
	})
	return cmd
}

func runChecks(h host) []Check {
	return []Check{
		checkRoot(h),
		checkNetns(h),
		checkFirewall(h),
		checkConfDir(h),
		checkConflicts(h),
	}
}

func checkRoot(h host) Check {
	if h.euid == 0 {
		return Check{"privileges", statusOK, "running as root"}
	}
	return Check{"privileges", statusWarn, "not root: the CNI agent and ztunnel need root (or CAP_NET_ADMIN+CAP_SYS_ADMIN) on a node"}
}

func checkNetns(h host) Check {
	if _, err := os.Stat(filepath.Join(h.root, "proc/self/ns/net")); err != nil {
		return Check{"network namespaces", statusFail, "the kernel has no network namespaces (/proc/self/ns/net missing): CONFIG_NET_NS is required"}
	}
	return Check{"network namespaces", statusOK, "supported (/proc/self/ns/net)"}
}

// checkFirewall: the in-pod redirection needs iptables or nft.
func checkFirewall(h host) Check {
	var found []string
	for _, tool := range []string{"iptables", "nft"} {
		if p, err := h.lookPath(tool); err == nil {
			found = append(found, tool+" ("+p+")")
		}
	}
	if len(found) == 0 {
		return Check{"redirection tools", statusFail, "neither iptables nor nft is installed: in-pod redirection needs one (spec.cni.redirection)"}
	}
	return Check{"redirection tools", statusOK, strings.Join(found, ", ")}
}

func checkConfDir(h host) Check {
	dir := h.path(h.confDir)
	info, err := os.Stat(dir)
	if err != nil {
		return Check{"CNI conf dir", statusFail, fmt.Sprintf("%s: %v (is a CNI network installed? set spec.cni.confDir)", h.confDir, err)}
	}
	if !info.IsDir() {
		return Check{"CNI conf dir", statusFail, h.confDir + " is not a directory"}
	}
	confs := confFiles(dir)
	if len(confs) == 0 {
		return Check{"CNI conf dir", statusWarn, h.confDir + " has no .conf/.conflist: the plugin chains into the primary network, which is not there yet"}
	}
	return Check{"CNI conf dir", statusOK, fmt.Sprintf("%s: primary network %s", h.confDir, confs[0])}
}

// conflictMarkers are names of other meshes' CNI plugins: a pod's traffic
// captured by two meshes breaks.
var conflictMarkers = map[string]string{"istio-cni": "Istio", "cilium": "Cilium", "linkerd-cni": "Linkerd"}

func checkConflicts(h host) Check {
	dir := h.path(h.confDir)
	var found []string
	for _, name := range confFiles(dir) {
		data, _ := os.ReadFile(filepath.Join(dir, name))
		text := strings.ToLower(name + "\n" + string(data))
		for marker, mesh := range conflictMarkers {
			if strings.Contains(text, marker) {
				found = append(found, fmt.Sprintf("%s (%s in %s)", mesh, marker, name))
			}
		}
	}
	sort.Strings(found)
	if len(found) > 0 {
		return Check{"conflicting meshes", statusFail, "another mesh's CNI plugin is installed: " + strings.Join(found, "; ")}
	}
	return Check{"conflicting meshes", statusOK, "no istio-cni, cilium or linkerd-cni configuration"}
}

func (h host) path(p string) string { return filepath.Join(h.root, p) }

// confFiles lists CNI configuration files, sorted like the runtime does.
func confFiles(dir string) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		ext := filepath.Ext(e.Name())
		if !e.IsDir() && (ext == ".conf" || ext == ".conflist" || ext == ".json") {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out
}

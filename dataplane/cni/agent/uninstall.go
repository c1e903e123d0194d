package agent

import (
	"errors"
	"os"
	"syscall"

	"github.com/go-logr/logr"

	"github.com/ambientmesh/ambient-operator/dataplane/cni/conflist"
	"github.com/ambientmesh/ambient-operator/dataplane/cni/plugin"
	"github.com/ambientmesh/ambient-operator/dataplane/cni/rules"
)

// UninstallNode removes everything the agent ever put on this node, without
// the apiserver: the plugin entry and binary, the state file and the
// plugin's socket (which the agent leaves in place when it stops), the host
// probe SNAT, and the capture rules of both backends from every network
// namespace it can find. Removal only touches our own chains and tables, so
// running it on pods that were never enrolled changes nothing.
func UninstallNode(o Options, log logr.Logger) error {
	var errs []error
	if o.CNIConfDir != "" {
		errs = append(errs, conflist.EnsureRemoved(o.CNIConfDir, plugin.Type))
	}
	if o.CNIBinDir != "" {
		if err := os.Remove(o.CNIBinDir + "/" + plugin.Type); err != nil && !os.IsNotExist(err) {
			errs = append(errs, err)
		}
	}
	for _, path := range []string{o.StateFile, o.CNISocket} {
		if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
			errs = append(errs, err)
		}
	}
	finder := &NetnsFinder{Dirs: o.NetnsDirs, ProcRoot: o.ProcRoot}
	seen := map[uint64]bool{}
	for _, name := range []string{rules.BackendIPTables, rules.BackendNFTables} {
		backend, _ := rules.New(name)
		errs = append(errs, backend.RemoveHost(o.HostNetns))
		clear(seen)
		for _, path := range finder.candidates() {
			var st syscall.Stat_t
			if syscall.Stat(path, &st) != nil || seen[st.Ino] {
				continue
			}
			seen[st.Ino] = true
			if removed, err := backend.Remove(path); err != nil {
				errs = append(errs, err)
			} else if removed {
				log.Info("removed capture rules", "netns", path, "backend", name)
			}
		}
	}
	return errors.Join(errs...)
}

// Command ambientctl is the mesh's debugging CLI:
//
//	ambientctl status                        the AmbientMesh: version, phase, components, conditions
//	ambientctl ztunnel workloads --node N    ztunnel's view on node N (workloads, services,
//	                                         policies, certs, connections), from its admin endpoint
//	ambientctl ztunnel renew-certs --node N  renew ztunnel's certificates on node N now
//	ambientctl waypoint status [-n NS] NAME  a waypoint's conditions and its pods' xDS state;
//	                                         also config, clusters and routes, from a pod's
//	                                         admin endpoint
//	ambientctl why SRC DST[:PORT]            which proxy decides a connection (and its HTTP
//	                                         request) from pod SRC to a pod or svc/SERVICE,
//	                                         and by which MeshPolicy: the path hop by hop,
//	                                         computed by the proxies' own code
//	ambientctl check                         pre-flight checks of this machine
//	ambientctl completion bash|zsh|fish|powershell
//
// Every command takes kubectl's --kubeconfig, --context and -n, and prints a table, or
// JSON/YAML with -o json|yaml. A proxy's admin endpoint (127.0.0.1:15000 in its pod) is
// reached through the API server by a port-forward, or --via netns (the local mesh) or
// --via address.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ambientmesh/ambient-operator/internal/version"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		var exit exitError
		if errors.As(err, &exit) {
			os.Exit(int(exit))
		}
		fmt.Fprintln(os.Stderr, "ambientctl:", err)
		os.Exit(1)
	}
}

// exitError ends the command with a status and nothing more to print.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func run(args []string, out io.Writer) error {
	root := newRootCommand(&globalFlags{})
	root.SetArgs(args)
	root.SetOut(out)
	return root.Execute()
}

// globalFlags are the flags every command has.
type globalFlags struct {
	kubeFlags
	output string
}

var outputFormats = []string{"table", "json", "yaml"}

// newRootCommand is ambientctl with every command; the flags it parses land in g.
// Its completion command (cobra's) completes the commands and flags of this tree.
func newRootCommand(g *globalFlags) *cobra.Command {
	root := &cobra.Command{
		Use:   "ambientctl",
		Short: "ambientctl: debug an ambient mesh",
		Long: `ambientctl: debug an ambient mesh.

It finds the cluster as kubectl does (--kubeconfig, $KUBECONFIG, ~/.kube/config; --context, -n).
The ztunnel and waypoint commands read a proxy's admin endpoint, 127.0.0.1:15000 inside its pod:
by default through the API server (a port-forward, which needs create on pods/portforward);
--via netns from inside the network namespace on this host (the local mesh); --via address
(--admin-address) from here.`,
		Example: `  ambientctl status
  ambientctl ztunnel workloads --node worker-1
  ambientctl ztunnel certs --pod ztunnel-x7k2p -o yaml
  ambientctl waypoint routes -n bookinfo waypoint
  ambientctl why -n bookinfo client svc/reviews:8080 --method POST --path /admin
  ambientctl ztunnel workloads --node am-n1 --via netns    # the local mesh
  source <(ambientctl completion bash)`,
		// Errors are printed once, by main, without the usage.
		SilenceErrors: true,
		SilenceUsage:  true,
		Version:       version.String("ambientctl"),
		PersistentPreRunE: func(*cobra.Command, []string) error {
			if !slices.Contains(outputFormats, g.output) {
				return fmt.Errorf("-o %q: want %s", g.output, strings.Join(outputFormats, ", "))
			}
			return nil
		},
	}
	root.SetVersionTemplate("{{.Version}}\n")
	g.kubeFlags.bind(root)
	root.PersistentFlags().StringVarP(&g.output, "output", "o", "table", "output format: "+strings.Join(outputFormats, ", "))
	_ = root.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(outputFormats, cobra.ShellCompDirectiveNoFileComp))
	root.AddCommand(
		statusCommand(g),
		ztunnelCommand(g),
		waypointCommand(g),
		whyCommand(g),
		checkCommand(g),
		&cobra.Command{
			Use:   "version",
			Short: "the version of ambientctl",
			Args:  cobra.NoArgs,
			Run: func(cmd *cobra.Command, _ []string) {
				fmt.Fprintln(cmd.OutOrStdout(), version.String("ambientctl"))
			},
		},
	)
	return root
}

// groupCommand is a command that only holds others: without one it prints its help,
// and an unknown one is an error (a view's flags after it are not the problem).
func groupCommand(use, short string) *cobra.Command {
	return &cobra.Command{
		Use:                use,
		Short:              short,
		FParseErrWhitelist: cobra.FParseErrWhitelist{UnknownFlags: true},
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmd.Help()
			}
			return fmt.Errorf("unknown command %q for %q", args[0], cmd.CommandPath())
		},
	}
}

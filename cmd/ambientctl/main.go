// Command ambientctl is the mesh's debugging CLI:
//
//	ambientctl status                      the AmbientMesh: version, phase, components, conditions
//	ambientctl ztunnel workloads --node N  ztunnel's view on node N (workloads, services,
//	                                       policies, certs, connections), from its admin endpoint
//	ambientctl ztunnel renew-certs --node N renew ztunnel's certificates on node N now
//	ambientctl waypoint status [-n NS] NAME a waypoint's conditions and its pods' xDS state;
//	                                       also config, clusters and routes, from a pod's
//	                                       admin endpoint
//	ambientctl why SRC DST[:PORT]          which proxy decides a connection (and its HTTP
//	                                       request) from pod SRC to a pod or svc/SERVICE,
//	                                       and by which MeshPolicy: the path hop by hop,
//	                                       computed by the proxies' own code
//	ambientctl check                       pre-flight checks of this machine
//
// Output is a table, or JSON/YAML with -o json|yaml.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/ambientmesh/ambient-operator/internal/version"
)

const usage = `ambientctl: debug an ambient mesh.

Usage:
  ambientctl status [-o table|json|yaml] [--kubeconfig FILE]
  ambientctl ztunnel workloads|services|policies|certs|connections --node NODE [-o ...]
  ambientctl ztunnel renew-certs --node NODE [-o ...]   (renews every certificate now)
  ambientctl waypoint status|config|clusters|routes [-n NAMESPACE] NAME [--pod POD] [-o ...]
  ambientctl why [-n NAMESPACE] [NAMESPACE/]POD [NAMESPACE/]POD[:PORT]|svc/[NAMESPACE/]SERVICE[:PORT]
        [--method GET] [--path /] [--host HOST] [-H 'Name: value']... [--token JWT] [-o ...]
  ambientctl check [--cni-conf-dir DIR] [-o ...]
  ambientctl version
`

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
	// Global flags may come before the command (ambientctl --kubeconfig F status).
	global := flag.NewFlagSet("ambientctl", flag.ContinueOnError)
	kubeconfig := global.String("kubeconfig", "", "kubeconfig file (default $KUBECONFIG, then ~/.kube/config)")
	global.Usage = func() { fmt.Fprint(os.Stderr, usage) }
	if err := global.Parse(args); err != nil {
		return err
	}
	args = global.Args()
	if len(args) == 0 {
		global.Usage()
		return exitError(2)
	}
	switch args[0] {
	case "status":
		return runStatus(args[1:], *kubeconfig, out)
	case "ztunnel":
		return runZtunnel(args[1:], out)
	case "waypoint":
		return runWaypoint(args[1:], *kubeconfig, out)
	case "why":
		return runWhy(args[1:], *kubeconfig, out)
	case "check":
		return runCheck(args[1:], out)
	case "version", "--version":
		fmt.Fprintln(out, version.String("ambientctl"))
		return nil
	default:
		fmt.Fprint(os.Stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
}

// commonFlags are the flags every command has.
type commonFlags struct {
	output     string
	kubeconfig string
}

func newFlagSet(name string, kubeconfig string) (*flag.FlagSet, *commonFlags) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	c := &commonFlags{}
	fs.StringVar(&c.output, "o", "table", "output format: table, json or yaml")
	fs.StringVar(&c.output, "output", "table", "output format: table, json or yaml")
	fs.StringVar(&c.kubeconfig, "kubeconfig", kubeconfig, "kubeconfig file")
	return fs, c
}

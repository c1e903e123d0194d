// Command demo brings the local mesh up and walks its story (make demo), or
// tears a mesh down from its state dir (make demo-down).
//
//	go run ./test/e2e/demo up [--state-dir .demo] [--pause 2s]
//	go run ./test/e2e/demo down [--state-dir .demo]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/ambientmesh/ambient-operator/test/e2e/localmesh"
	"github.com/ambientmesh/ambient-operator/test/testenv"
)

func main() {
	if len(os.Args) < 2 || (os.Args[1] != "up" && os.Args[1] != "down") {
		fmt.Fprintln(os.Stderr, "usage: demo up|down [--state-dir DIR] [--pause D]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	stateDir := fs.String("state-dir", ".demo", "state directory (logs, state file)")
	pause := fs.Duration("pause", 2*time.Second, "pause between the story's steps")
	keep := fs.Bool("keep", false, "keep the mesh running until Ctrl-C/SIGTERM even when stdin is not a terminal")
	story := fs.Bool("story", true, "walk the story once the mesh is up")
	_ = fs.Parse(os.Args[2:])
	dir, err := filepath.Abs(*stateDir)
	if err != nil {
		fail(err)
	}
	if os.Args[1] == "down" {
		if err := localmesh.Down(dir, 15*time.Second); err != nil {
			fail(err)
		}
		if err := os.RemoveAll(dir); err != nil {
			fail(err)
		}
		fmt.Println("local mesh removed: no process, network namespace or file of it is left")
		return
	}
	os.Exit(up(dir, *pause, *keep, *story))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "demo:", err)
	os.Exit(1)
}

func up(dir string, pause time.Duration, keep, story bool) int {
	root, err := testenv.RepoRoot()
	if err != nil {
		fail(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	s := &localmesh.Story{Out: os.Stdout, Pause: pause}
	s.Heading("Bringing up the local mesh (real apiserver, cert-manager, operator, control plane, ztunnel, CNI agent)")
	m, err := localmesh.Up(ctx, localmesh.Options{RepoRoot: root, StateDir: dir, Log: os.Stdout})
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 1
	}
	defer func() {
		fmt.Println("\nTearing down the local mesh ...")
		m.Down()
		_ = os.RemoveAll(dir)
		fmt.Println("done: no process, network namespace or rule of the demo is left")
	}()
	if story {
		if err := s.Run(ctx, m); err != nil {
			fmt.Fprintln(os.Stderr, "demo:", err)
			return 1
		}
	}
	if keep || term.IsTerminal(int(os.Stdin.Fd())) {
		fmt.Printf("\nThe mesh keeps running. Try, in another terminal:\n"+
			"  bin/kubectl --kubeconfig %s get ambientmesh,pods -A\n"+
			"  bin/ambientctl --kubeconfig %s status\n"+
			"  bin/ambientctl ztunnel connections --node am-n2\n"+
			"  bin/ambientctl --kubeconfig %s waypoint routes -n bookinfo waypoint\n"+
			"Press Ctrl-C to tear it down (or run `make demo-down`).\n", m.Kubeconfig, m.Kubeconfig, m.Kubeconfig)
		<-ctx.Done()
	}
	return 0
}

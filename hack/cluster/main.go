// Command cluster brings up, checks and tears down a real Kubernetes
// cluster on this machine, as root, from the same sources as the test
// binaries: etcd, kube-apiserver, kube-controller-manager and
// kube-scheduler in the root network namespace, and one or more nodes, each
// a network namespace and a mount namespace running Debian's containerd
// and runc, a kubelet and kube-proxy, with Debian's bridge and host-local
// CNI plugins as the primary network. Images are image tarballs, written
// with go-containerregistry (images: one per Dockerfile stage) and imported
// into each node's containerd; nothing is pulled. docs/cluster.md
// describes the layout and the settings this machine needs.
//
//	cluster up     --state-dir DIR --k8s-bin-dir DIR --pause BIN [--coredns BIN] [--nodes N] [--proxy-mode iptables|nftables]
//	cluster smoke  --state-dir DIR --k8s-bin-dir DIR --app BIN
//	cluster images --state-dir DIR --bin-dir DIR [--registry R] [--tag T] [--dockerfile F] [--extra ref=binary[:entrypoint[:user]]]...
//	cluster cert-manager --state-dir DIR --k8s-bin-dir DIR --controller BIN --cainjector BIN
//	cluster down   --state-dir DIR
//
// Everything up creates is recorded in DIR/state.json first, so down
// removes it all, also after a failed up.
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

	"github.com/ambientmesh/ambient-operator/internal/versions"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	stateDir := fs.String("state-dir", ".cluster", "directory holding the cluster's state, logs, kubeconfigs and the nodes' files")
	k8sBinDir := fs.String("k8s-bin-dir", "", "directory with etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy and kubectl")
	timeout := fs.Duration("timeout", 5*time.Minute, "how long up or smoke may take")

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "up":
		opts := upOptions{}
		fs.IntVar(&opts.nodes, "nodes", 1, "number of nodes (1 to 9)")
		fs.StringVar(&opts.pause, "pause", "", "the pause binary (go build ./hack/cluster/pause)")
		fs.StringVar(&opts.proxyMode, "proxy-mode", "iptables", "kube-proxy mode: iptables or nftables")
		fs.StringVar(&opts.coredns, "coredns", "", "the coredns binary (hack/tools.sh coredns links it into the k8s bin dir); default <k8s-bin-dir>/coredns")
		_ = fs.Parse(os.Args[2:])
		opts.stateDir, opts.k8sBinDir, opts.pause, opts.timeout = absolute(*stateDir), absolute(*k8sBinDir), absolute(opts.pause), *timeout
		if opts.coredns == "" {
			opts.coredns = filepath.Join(opts.k8sBinDir, "coredns")
		}
		opts.coredns = absolute(opts.coredns)
		err = up(ctx, opts)
	case "smoke":
		opts := smokeOptions{}
		fs.StringVar(&opts.app, "app", "", "the smokeapp binary (go build ./hack/cluster/smokeapp)")
		_ = fs.Parse(os.Args[2:])
		opts.stateDir, opts.k8sBinDir, opts.app, opts.timeout = absolute(*stateDir), absolute(*k8sBinDir), absolute(opts.app), *timeout
		err = smoke(ctx, opts)
	case "images":
		opts := imagesOptions{}
		fs.StringVar(&opts.binDir, "bin-dir", "", "directory with the static, version-stamped binaries the Dockerfile's build stage writes to /out")
		fs.StringVar(&opts.registry, "registry", versions.Registry, "registry of the Dockerfile's images")
		fs.StringVar(&opts.tag, "tag", versions.Default, "tag of the Dockerfile's images")
		fs.StringVar(&opts.dockerfile, "dockerfile", "Dockerfile", "the Dockerfile whose stages describe the images")
		fs.Var(&opts.extras, "extra", "one more image of one binary: ref=binary[:entrypoint[:user]] (repeatable)")
		fs.BoolVar(&opts.importImages, "import", true, "import each image into every node (false: only write the tarballs)")
		_ = fs.Parse(os.Args[2:])
		opts.stateDir, opts.binDir = absolute(*stateDir), absolute(opts.binDir)
		err = images(opts)
	case "cert-manager":
		opts := certManagerOptions{}
		fs.StringVar(&opts.controller, "controller", "bin/cert-manager-controller", "the cert-manager-controller binary (hack/tools.sh cert-manager)")
		fs.StringVar(&opts.cainjector, "cainjector", "bin/cert-manager-cainjector", "the cert-manager-cainjector binary (hack/tools.sh cert-manager)")
		_ = fs.Parse(os.Args[2:])
		opts.stateDir, opts.k8sBinDir, opts.timeout = absolute(*stateDir), absolute(*k8sBinDir), *timeout
		opts.controller, opts.cainjector = absolute(opts.controller), absolute(opts.cainjector)
		err = certManager(ctx, opts)
	case "down":
		_ = fs.Parse(os.Args[2:])
		err = down(absolute(*stateDir))
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "cluster:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: cluster up|smoke|images|cert-manager|down --state-dir DIR [flags]; cluster <command> -h lists the flags")
	os.Exit(2)
}

// absolute makes a path absolute: processes started in a node's mount
// namespace start in its root directory, and configuration files name
// paths from anywhere.
func absolute(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return dir
	}
	return abs
}

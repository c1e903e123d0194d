// Command bundle writes the OLM bundle (bundle/manifests, bundle/metadata
// and bundle.Dockerfile) from `kustomize build config/manifests` on stdin.
// operator-sdk is not available to this project, so this small generator
// does the part of `operator-sdk generate bundle` we need: it completes the
// hand-written CSV base (config/manifests/bases) with the operator
// Deployment, its RBAC, the webhook definitions, alm-examples from the
// samples and the related images, and writes every other object the bundle
// ships as its own file. Its output depends only on its input and flags (no
// timestamps), so `make bundle` run twice changes nothing.
//
// Usage: kustomize build config/manifests | go run ./hack/bundle --version 0.1.0 --image IMG
package main

import (
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/ambientmesh/ambient-operator/hack/bundle/generate"
)

func main() {
	var opts generate.Options
	flag.StringVar(&opts.Version, "version", "", "semantic version of the operator release (the CSV is ambient-operator.v<version>)")
	flag.StringVar(&opts.Image, "image", "", "operator image the CSV deploys (default: the image in the rendered Deployment)")
	flag.StringVar(&opts.Channels, "channels", generate.DefaultChannel, "comma-separated OLM channels")
	flag.StringVar(&opts.DefaultChannel, "default-channel", generate.DefaultChannel, "default OLM channel")
	outDir := flag.String("output-dir", "bundle", "bundle directory (manifests/ and metadata/ are replaced)")
	dockerfile := flag.String("dockerfile", "bundle.Dockerfile", "path of the bundle image's Dockerfile")
	flag.Parse()

	if err := run(opts, *outDir, *dockerfile, os.Stdin); err != nil {
		fmt.Fprintln(os.Stderr, "bundle:", err)
		os.Exit(1)
	}
}

func run(opts generate.Options, outDir, dockerfile string, in io.Reader) error {
	b, err := generate.Build(opts, in)
	if err != nil {
		return err
	}
	return b.Write(outDir, dockerfile)
}

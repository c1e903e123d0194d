// Command coredns is CoreDNS built with only the plugins a cluster's DNS
// needs, for hack/cluster's kube-dns. Upstream's main imports
// core/plugin, which links every plugin (clouds, etcd, dnstap, ...); this
// one imports the plugin packages it serves and tells the DNS server their
// order, the way CoreDNS documents for builds of its own
// (dnsserver.SetDirectives), so the binary stays small and quick to build.
// Flags and the Corefile are upstream's (-conf, -version, -plugins).
package main

import (
	"fmt"
	"os"

	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	// Each import registers its plugin in an init function.
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

// directives are the imported plugins in the order a query passes them,
// which is the order of upstream's plugin.cfg: a plugin sees only what the
// ones before it let through, so e.g. cache must come before kubernetes
// and forward to answer for them. main_test.go checks it against upstream.
var directives = []string{
	"reload",
	"ready",
	"health",
	"errors",
	"log",
	"loadbalance",
	"cache",
	"kubernetes",
	"loop",
	"forward",
}

func main() {
	if err := dnsserver.SetDirectives(directives); err != nil {
		fmt.Fprintln(os.Stderr, "coredns:", err)
		os.Exit(1)
	}
	coremain.Run()
}

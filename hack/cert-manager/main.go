// Command cert-manager-controller runs the cert-manager controllers the
// proving ground needs (issuers, certificates, CA and self-signed signing,
// the approver) as one real process, from the public packages of the
// cert-manager module. Upstream's controller main is a separate Go module the
// module proxy here does not serve, so this small main of our own wires the
// same registered controllers together.
//
// It runs a single instance without leader election: tests, the local mesh
// and the cluster (one replica) start exactly one. Without --kubeconfig and
// --master it uses the in-cluster config (the pod's service account), and
// --health-probe-bind-address serves /livez and /readyz for the kubelet.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"github.com/cert-manager/cert-manager/pkg/controller"
	logf "github.com/cert-manager/cert-manager/pkg/logs"

	// Each import registers its controller (or issuer implementation) in an init function.
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/approver"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/ca"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/selfsigned"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/issuing"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/keymanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/readiness"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/requestmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/revisionmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/trigger"
	_ "github.com/cert-manager/cert-manager/pkg/controller/clusterissuers"
	_ "github.com/cert-manager/cert-manager/pkg/controller/issuers"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/ca"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/selfsigned"

	"github.com/ambientmesh/ambient-operator/hack/cert-manager/internal/buildinfo"
)

type options struct {
	kubeconfig       string
	master           string
	namespace        string
	clusterNamespace string
	controllers      string
	workers          int
	minBackoff       time.Duration
	healthAddress    string
	version          bool
}

func main() {
	var o options
	fs := flag.CommandLine
	klog.InitFlags(fs) // -v=N etc.: cert-manager logs through klog
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "Path to a kubeconfig. Empty: in-cluster config.")
	fs.StringVar(&o.master, "master", "", "Address of the Kubernetes API server (overrides the kubeconfig).")
	fs.StringVar(&o.namespace, "namespace", "", "Only watch this namespace. Empty: all namespaces.")
	fs.StringVar(&o.clusterNamespace, "cluster-resource-namespace", "kube-system",
		"Namespace holding the secrets that ClusterIssuers refer to.")
	fs.StringVar(&o.controllers, "controllers", strings.Join(available(), ","),
		"Comma-separated controllers to run.")
	fs.IntVar(&o.workers, "workers", 5, "Workers per controller.")
	fs.DurationVar(&o.minBackoff, "certificate-request-minimum-backoff-duration", time.Hour,
		"Initial backoff before re-issuing after a failed CertificateRequest.")
	fs.StringVar(&o.healthAddress, "health-probe-bind-address", "0",
		"Address serving /livez and /readyz (informers synced); 0 disables it. Off by default: tests run several at once.")
	fs.BoolVar(&o.version, "version", false, "Print the version and exit.")
	flag.Parse()

	if o.version {
		fmt.Println(buildinfo.Version("cert-manager-controller"))
		return
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	if err := run(ctx, o); err != nil {
		klog.ErrorS(err, "cert-manager-controller failed")
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}

// available lists the controllers registered by the imports above, sorted.
func available() []string {
	names := make([]string, 0, len(controller.Known()))
	for name := range controller.Known() {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

func run(ctx context.Context, o options) error {
	names := strings.Split(o.controllers, ",")
	for _, name := range names {
		if _, ok := controller.Known()[name]; !ok {
			return fmt.Errorf("--controllers: unknown controller %q (available: %s)", name, strings.Join(available(), ", "))
		}
	}
	ctx = logf.NewContext(ctx, logf.Log)
	factory, err := controller.NewContextFactory(ctx, controller.ContextOptions{
		APIServerHost:      o.master,
		Kubeconfig:         o.kubeconfig,
		KubernetesAPIQPS:   50,
		KubernetesAPIBurst: 100,
		Namespace:          o.namespace,
		IssuerOptions:      controller.IssuerOptions{ClusterResourceNamespace: o.clusterNamespace},
		CertificateOptions: controller.CertificateOptions{CertificateRequestMinimumBackoffDuration: o.minBackoff},
	})
	if err != nil {
		return err
	}

	// Constructing a controller registers the informers it needs in the
	// shared factories; the factories are started once all are constructed.
	loops := make(map[string]controller.Interface, len(names))
	for _, name := range names {
		loop, err := controller.Known()[name](factory)
		if err != nil {
			return fmt.Errorf("controller %s: %w", name, err)
		}
		loops[name] = loop
	}
	shared, err := factory.Build("informers")
	if err != nil {
		return err
	}
	shared.KubeSharedInformerFactory.Start(ctx.Done())
	shared.SharedInformerFactory.Start(ctx.Done())
	klog.InfoS("starting controllers", "version", buildinfo.Version("cert-manager-controller"), "controllers", names)

	var wg sync.WaitGroup
	errs := make(chan error, len(loops)+1)
	if o.healthAddress != "0" && o.healthAddress != "" {
		var h health
		wg.Go(func() {
			if err := h.serve(ctx, o.healthAddress); err != nil {
				errs <- err
			}
		})
		wg.Go(func() {
			shared.KubeSharedInformerFactory.WaitForCacheSync(ctx.Done())
			shared.SharedInformerFactory.WaitForCacheSync(ctx.Done())
			h.ready.Store(ctx.Err() == nil)
		})
	}
	for name, loop := range loops {
		wg.Go(func() {
			if err := loop.Run(o.workers, ctx); err != nil {
				errs <- fmt.Errorf("controller %s: %w", name, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}

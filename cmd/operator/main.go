// Command operator installs and runs the ambient mesh: a controller-runtime
// manager whose controllers (added by setupControllers) reconcile AmbientMeshes,
// Waypoints and, when the cluster serves the Gateway API, the GatewayClass
// ambientmesh-waypoint and its Gateways. MeshPolicies have no controller here:
// the control plane translates them and writes their status.
package main

import (
	"cmp"
	"crypto/tls"
	"flag"
	"fmt"
	"os"
	"slices"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambientmesh/ambient-operator/controllers/ambientmesh"
	"github.com/ambientmesh/ambient-operator/controllers/gateway"
	"github.com/ambientmesh/ambient-operator/controllers/waypoint"
	"github.com/ambientmesh/ambient-operator/internal/meshscheme"
	"github.com/ambientmesh/ambient-operator/internal/version"
	meshwebhook "github.com/ambientmesh/ambient-operator/webhook"
)

// leaderElectionID names the Lease that active/standby operator replicas share.
const leaderElectionID = "ambient-operator.ambientmesh.dev"

// options are the operator's command-line settings. controller-runtime
// registers --kubeconfig itself on the global flag set.
type options struct {
	metricsAddr   string
	secureMetrics bool
	probeAddr     string
	leaderElect   bool
	leaderElectNS string
	enableHTTP2   bool
	showVersion   bool
	// enableWebhooks serves the admission webhooks; it needs the serving
	// certificate, so it is off for `make run` outside the cluster.
	enableWebhooks bool
	// clusterDomain is the DNS suffix of Service hostnames, written into
	// waypoint addresses.
	clusterDomain string
	zap           zap.Options
}

func bindFlags(fs *flag.FlagSet) *options {
	o := &options{zap: zap.Options{Development: false}}
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", ":8443",
		"Address the metrics endpoint binds to (:8443 for HTTPS, :8080 with --metrics-secure=false; 0 disables it).")
	fs.BoolVar(&o.secureMetrics, "metrics-secure", true,
		"Serve metrics over HTTPS, authenticated and authorized through the API server.")
	fs.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "Address the /healthz and /readyz probes bind to.")
	fs.BoolVar(&o.leaderElect, "leader-elect", false,
		"Elect a leader so that only one of several operator replicas reconciles at a time.")
	fs.StringVar(&o.leaderElectNS, "leader-election-namespace", "",
		"Namespace of the leader-election Lease. Empty: the namespace the operator runs in (required outside a cluster).")
	fs.BoolVar(&o.enableHTTP2, "enable-http2", false,
		"Allow HTTP/2 on the metrics and webhook servers (off by default: CVE-2023-44487, CVE-2023-39325).")
	fs.BoolVar(&o.showVersion, "version", false, "Print the version and exit.")
	fs.BoolVar(&o.enableWebhooks, "enable-webhooks", true,
		"Serve the admission webhooks on :9443 (certificate in /tmp/k8s-webhook-server/serving-certs). Disable when running outside the cluster.")
	fs.StringVar(&o.clusterDomain, "cluster-domain", waypoint.DefaultClusterDomain,
		"DNS suffix of Service hostnames, as in a waypoint's address <name>.<namespace>.svc.<cluster-domain>.")
	o.zap.BindFlags(fs)
	return o
}

func main() {
	opts := bindFlags(flag.CommandLine)
	flag.Parse()
	if opts.showVersion {
		fmt.Println(version.String("operator"))
		return
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts.zap)))
	log := ctrl.Log.WithName("setup")
	log.Info("starting", "version", version.Version, "commit", version.GitCommit)

	mgr, err := newManager(ctrl.GetConfigOrDie(), opts)
	if err != nil {
		log.Error(err, "unable to set up the manager")
		os.Exit(1)
	}
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		log.Error(err, "manager stopped with an error")
		os.Exit(1)
	}
}

// newManager builds the manager with its metrics, probes and leader election,
// and registers the controllers; the caller starts it.
func newManager(cfg *rest.Config, opts *options) (ctrl.Manager, error) {
	var tlsOpts []func(*tls.Config)
	if !opts.enableHTTP2 {
		tlsOpts = append(tlsOpts, func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} })
	}
	metrics := metricsserver.Options{
		BindAddress:   opts.metricsAddr,
		SecureServing: opts.secureMetrics,
		TLSOpts:       tlsOpts,
	}
	if opts.secureMetrics {
		metrics.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  meshscheme.New(),
		Cache:                   cacheOptions(),
		Metrics:                 metrics,
		HealthProbeBindAddress:  opts.probeAddr,
		LeaderElection:          opts.leaderElect,
		LeaderElectionID:        leaderElectionID,
		LeaderElectionNamespace: opts.leaderElectNS,
		// The operator exits right after its manager stops, so the lease can
		// be released at once and a standby takes over without waiting.
		LeaderElectionReleaseOnCancel: true,
		// Admission webhooks (webhook/) serve on :9443 with the certificate
		// mounted at the default /tmp/k8s-webhook-server/serving-certs
		// (cert-manager's Secret in the kustomize deploy, OLM's in the bundle).
		WebhookServer: ctrlwebhook.NewServer(ctrlwebhook.Options{TLSOpts: tlsOpts}),
	})
	if err != nil {
		return nil, err
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return nil, fmt.Errorf("health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return nil, fmt.Errorf("ready check: %w", err)
	}
	if opts.enableWebhooks {
		if err := meshwebhook.SetupWithManager(mgr); err != nil {
			return nil, err
		}
	}
	if err := setupControllers(mgr, opts); err != nil {
		return nil, err
	}
	return mgr, nil
}

// cacheOptions keep the operator's memory independent of the cluster's
// size: of the kinds the controllers create, and of Pods and Namespaces,
// the cache holds only the objects the operator labelled. The mesh kinds,
// Gateways, GatewayClasses and cert-manager issuers are cached whole: the
// users' objects of those kinds are what the controllers reconcile or read.
// Secrets are not cached (the one Secret read goes to the API server), and
// the webhooks read the API server directly.
func cacheOptions() cache.Options {
	return cache.Options{ByObject: ambientmesh.CacheOnlyLabelled(slices.Concat(ambientmesh.LabelledKinds(), waypoint.OwnedTypes())...)}
}

// setupControllers registers the reconcilers (one per kind, in controllers/)
// with the manager. The Gateway API controllers are registered only when
// the cluster serves the Gateway API: waypoints from Waypoint resources
// work without it.
func setupControllers(mgr ctrl.Manager, opts *options) error {
	if err := ambientmesh.NewReconciler(mgr).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("ambientmesh controller: %w", err)
	}
	clusterDomain := cmp.Or(opts.clusterDomain, waypoint.DefaultClusterDomain)
	if err := waypoint.NewReconciler(mgr, clusterDomain).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("waypoint controller: %w", err)
	}
	served, err := gatewayAPIServed(mgr)
	if err != nil {
		return err
	}
	if !served {
		ctrl.Log.WithName("setup").Info("the Gateway API is not installed: Gateways of class " + gateway.ClassName +
			" are not served; install its CRDs and restart the operator to use them")
		return nil
	}
	if err := gateway.NewClassReconciler(mgr).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("gatewayclass controller: %w", err)
	}
	if err := gateway.NewReconciler(mgr, clusterDomain).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("gateway controller: %w", err)
	}
	return nil
}

// gatewayAPIServed reports whether the API server serves Gateway API v1 Gateways.
func gatewayAPIServed(mgr ctrl.Manager) (bool, error) {
	_, err := mgr.GetRESTMapper().RESTMapping(schema.GroupKind{Group: gatewayv1.GroupName, Kind: "Gateway"}, gatewayv1.GroupVersion.Version)
	switch {
	case err == nil:
		return true, nil
	case meta.IsNoMatchError(err):
		return false, nil
	}
	return false, fmt.Errorf("discover the Gateway API: %w", err)
}

// Command cert-manager-cainjector runs cert-manager's CA injector from the
// public package pkg/controller/cainjector of the cert-manager module: it
// copies a CA into the caBundle of webhook configurations, APIServices and
// CRD conversion webhooks annotated with cert-manager.io/inject-ca-from (a
// Certificate), inject-ca-from-secret (a Secret) or inject-apiserver-ca.
// Upstream's cainjector main is a separate Go module the module proxy here
// does not serve, so this small main of our own sets up the same manager.
//
// Leader election is off by default: tests, the local mesh and the cluster
// run exactly one instance.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	kscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	apiregv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	cmscheme "github.com/cert-manager/cert-manager/pkg/client/clientset/versioned/scheme"
	"github.com/cert-manager/cert-manager/pkg/controller/cainjector"
	"github.com/cert-manager/cert-manager/pkg/util"
	utilfeature "github.com/cert-manager/cert-manager/pkg/util/feature"

	"github.com/ambientmesh/ambient-operator/hack/cert-manager/internal/buildinfo"
)

const (
	certificatesCRD = "certificates.cert-manager.io"
	// crdWait is how long to wait for the Certificate CRD: a Certificate
	// informer started before the CRD exists never syncs.
	crdWait = 5 * time.Minute
)

// injectables are the kinds of object the injector can write a CA into,
// named as the package names them.
var injectables = []string{
	cainjector.ValidatingWebhookConfigurationName,
	cainjector.MutatingWebhookConfigurationName,
	cainjector.APIServiceName,
	cainjector.CustomResourceDefinitionName,
}

type options struct {
	kubeconfig              string
	master                  string
	namespace               string
	injectables             string
	certificatesSource      bool
	leaderElect             bool
	leaderElectionNamespace string
	metricsAddress          string
	healthAddress           string
	version                 bool
}

func main() {
	var o options
	// A flag set of our own: controller-runtime registers its own
	// --kubeconfig in flag.CommandLine.
	fs := flag.NewFlagSet(os.Args[0], flag.ExitOnError)
	klog.InitFlags(fs) // -v=N etc.
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "Path to a kubeconfig. Empty (and no --master): in-cluster config.")
	fs.StringVar(&o.master, "master", "", "Address of the Kubernetes API server (overrides the kubeconfig).")
	fs.StringVar(&o.namespace, "namespace", "", "Only inject CAs from Certificates and Secrets in this namespace. Empty: all namespaces.")
	fs.StringVar(&o.injectables, "injectables", strings.Join(injectables, ","),
		"Comma-separated kinds to inject into: "+strings.Join(injectables, ", ")+".")
	fs.BoolVar(&o.certificatesSource, "enable-certificates-data-source", true,
		"Honour cert-manager.io/inject-ca-from (a Certificate's CA); needs the Certificate CRD.")
	fs.BoolVar(&o.leaderElect, "leader-elect", false, "Elect a leader (for more than one replica).")
	fs.StringVar(&o.leaderElectionNamespace, "leader-election-namespace", "",
		"Namespace of the leader election Lease. Empty: the pod's namespace.")
	fs.StringVar(&o.metricsAddress, "metrics-bind-address", "0", "Address of the Prometheus metrics endpoint; 0 disables it.")
	fs.StringVar(&o.healthAddress, "health-probe-bind-address", "0",
		"Address serving /livez and /readyz (informers synced); 0 disables it.")
	fs.Func("feature-gates", "cert-manager's cainjector feature gates, e.g. CAInjectorMerging=false "+
		"(on by default: a new CA is added to the caBundle, not swapped in).", utilfeature.DefaultMutableFeatureGate.Set)
	fs.BoolVar(&o.version, "version", false, "Print the version and exit.")
	_ = fs.Parse(os.Args[1:]) // ExitOnError: exits on a bad flag

	if o.version {
		fmt.Println(buildinfo.Version("cert-manager-cainjector"))
		return
	}
	ctrl.SetLogger(klog.NewKlogr())
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	if err := run(ctx, o); err != nil {
		klog.ErrorS(err, "cert-manager-cainjector failed")
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}

func run(ctx context.Context, o options) error {
	enabled, err := enabledInjectables(o.injectables)
	if err != nil {
		return err
	}
	cfg, err := restConfig(o.master, o.kubeconfig)
	if err != nil {
		return err
	}
	// The user agent also names the field manager of the injected caBundle.
	cfg = util.RestConfigWithUserAgent(cfg, "cainjector")
	mgr, err := ctrl.NewManager(cfg, managerOptions(o))
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("informers", cacheSynced(mgr.GetCache())); err != nil {
		return err
	}
	if o.certificatesSource {
		if err := waitForCRD(ctx, mgr.GetAPIReader(), certificatesCRD); err != nil {
			return err
		}
	}
	err = cainjector.RegisterAllInjectors(ctx, mgr, cainjector.SetupOptions{
		Namespace:                    o.namespace,
		EnableCertificatesDataSource: o.certificatesSource,
		EnabledReconcilersFor:        enabled,
	})
	if err != nil {
		return fmt.Errorf("register injectors: %w", err)
	}
	klog.InfoS("starting cainjector", "version", buildinfo.Version("cert-manager-cainjector"), "injectables", o.injectables)
	return mgr.Start(ctx)
}

// enabledInjectables turns the --injectables list into the set
// RegisterAllInjectors reads; every kind not listed stays off.
func enabledInjectables(list string) (map[string]bool, error) {
	enabled := make(map[string]bool, len(injectables))
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		if !slices.Contains(injectables, name) {
			return nil, fmt.Errorf("--injectables: unknown kind %q (known: %s)", name, strings.Join(injectables, ", "))
		}
		enabled[name] = true
	}
	return enabled, nil
}

// restConfig uses the in-cluster config (the pod's service account) when
// neither a kubeconfig nor a master is given.
func restConfig(master, kubeconfig string) (*rest.Config, error) {
	if master == "" && kubeconfig == "" {
		return rest.InClusterConfig()
	}
	return clientcmd.BuildConfigFromFlags(master, kubeconfig)
}

func managerOptions(o options) ctrl.Options {
	var namespaces map[string]cache.Config
	if o.namespace != "" {
		namespaces = map[string]cache.Config{o.namespace: {}}
	}
	return ctrl.Options{
		Scheme: newScheme(),
		Cache: cache.Options{
			// Only what the injectors registered is cached: a read of any
			// other kind is a bug, not a reason to start a new informer.
			ReaderFailOnMissingInformer: true,
			DefaultNamespaces:           namespaces,
		},
		// Secrets are read straight from the API server: caching every
		// Secret in the cluster (data included) costs far more than the few
		// reads the injectors make. Their watches are metadata-only.
		Client: client.Options{Cache: &client.CacheOptions{DisableFor: []client.Object{&corev1.Secret{}}}},

		LeaderElection:                o.leaderElect,
		LeaderElectionID:              "cert-manager-cainjector-leader-election",
		LeaderElectionNamespace:       o.leaderElectionNamespace,
		LeaderElectionReleaseOnCancel: true,

		Metrics:                metricsserver.Options{BindAddress: o.metricsAddress},
		HealthProbeBindAddress: o.healthAddress,
		LivenessEndpointName:   "/livez",
		ReadinessEndpointName:  "/readyz",
	}
}

func newScheme() *runtime.Scheme {
	scheme := runtime.NewScheme()
	utilruntime.Must(kscheme.AddToScheme(scheme))
	utilruntime.Must(cmscheme.AddToScheme(scheme))
	utilruntime.Must(apiextv1.AddToScheme(scheme))
	utilruntime.Must(apiregv1.AddToScheme(scheme))
	return scheme
}

// cacheSynced reports ready once the manager's informers have synced, so a
// Deployment is Available only when the injectors see the cluster.
func cacheSynced(c cache.Cache) healthz.Checker {
	return func(req *http.Request) error {
		ctx, cancel := context.WithTimeout(req.Context(), time.Second)
		defer cancel()
		if !c.WaitForCacheSync(ctx) {
			return errors.New("informer caches not synced yet")
		}
		return nil
	}
}

// waitForCRD polls until the CRD exists; it reads through the API reader
// because the manager's cache is not started yet.
func waitForCRD(ctx context.Context, reader client.Reader, name string) error {
	logged := false
	err := wait.PollUntilContextTimeout(ctx, time.Second, crdWait, true, func(ctx context.Context) (bool, error) {
		err := reader.Get(ctx, types.NamespacedName{Name: name}, &apiextv1.CustomResourceDefinition{})
		if apierrors.IsNotFound(err) {
			if !logged {
				klog.InfoS("waiting for the CRD (--enable-certificates-data-source)", "crd", name)
				logged = true
			}
			return false, nil
		}
		return err == nil, err
	})
	if err != nil {
		return fmt.Errorf("CRD %s: %w", name, err)
	}
	return nil
}

// Command controlplane is the mesh control plane: it watches the cluster, serves the
// workload API to ztunnels over delta ADS, signs workload certificates through
// cert-manager, and reports MeshPolicy and Waypoint status. Settings come from the mesh
// config the operator writes (--mesh-config); flags override them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap/zapcore"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/ambientmesh/ambient-operator/controlplane"
	"github.com/ambientmesh/ambient-operator/controlplane/xds/translate"
	"github.com/ambientmesh/ambient-operator/internal/meshconfig"
	"github.com/ambientmesh/ambient-operator/internal/meshscheme"
	"github.com/ambientmesh/ambient-operator/internal/version"
)

type flags struct {
	meshConfig, tlsDir, logLevel        string
	monitoringPort                      int
	xdsAddr, caAddr                     string
	namespace, serviceAccount           string
	trustDomain, clusterDomain          string
	clusterID                           string
	issuerName, issuerKind, issuerGroup string
	nodeAgents                          string
	approve, requireClientCert, leader  bool
	debounce                            time.Duration
	showVersion                         bool
}

func bindFlags(fs *flag.FlagSet) *flags {
	f := &flags{}
	fs.StringVar(&f.meshConfig, "mesh-config", meshconfig.MountPath, "Mesh config file written by the operator; empty or missing: built-in defaults.")
	fs.StringVar(&f.tlsDir, "tls-dir", "", "Directory with the control plane's certificate (tls.crt, tls.key, ca.crt). Empty: request one from the mesh issuer.")
	fs.IntVar(&f.monitoringPort, "monitoring-port", int(meshconfig.ControlPlaneMonitoringPort), "Port of /metrics, /healthz/ready and /healthz/live.")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error.")
	fs.StringVar(&f.xdsAddr, "xds-address", "", "Listen address of delta ADS (default :<mesh config xdsPort>).")
	fs.StringVar(&f.caAddr, "ca-address", "", "Listen address of the certificate service (default :<mesh config caPort>).")
	fs.StringVar(&f.namespace, "namespace", os.Getenv("POD_NAMESPACE"), "The control plane's namespace (default $POD_NAMESPACE, else the mesh config's).")
	fs.StringVar(&f.serviceAccount, "service-account", meshconfig.ControlPlaneServiceName, "The control plane's service account (its identity).")
	fs.StringVar(&f.trustDomain, "trust-domain", "", "Override the mesh config's trust domain.")
	fs.StringVar(&f.clusterDomain, "cluster-domain", "cluster.local", "DNS suffix of Service hostnames.")
	fs.StringVar(&f.clusterID, "cluster-id", translate.DefaultClusterID, "Name of this cluster in telemetry (the source_cluster and destination_cluster metric labels).")
	fs.StringVar(&f.issuerName, "issuer-name", "", "Override the cert-manager issuer name.")
	fs.StringVar(&f.issuerKind, "issuer-kind", "", "Override the issuer kind (Issuer or ClusterIssuer).")
	fs.StringVar(&f.issuerGroup, "issuer-group", "", "Override the issuer group.")
	fs.StringVar(&f.nodeAgents, "node-agent-service-accounts", "", "Comma-separated <ns>/<name> of ztunnel service accounts (default <namespace>/ztunnel).")
	fs.BoolVar(&f.approve, "approve-certificate-requests", false, "Approve our own CertificateRequests (when cert-manager's built-in approver is disabled).")
	fs.BoolVar(&f.requireClientCert, "require-xds-client-cert", false, "Accept only xDS clients with a mesh certificate (otherwise a CA-audience token is accepted too).")
	fs.BoolVar(&f.leader, "leader-elect", true, "Elect a leader for status writes (every replica serves xDS and the CA).")
	fs.DurationVar(&f.debounce, "debounce", 50*time.Millisecond, "How long xDS changes are collected before a push.")
	fs.BoolVar(&f.showVersion, "version", false, "Print the version and exit.")
	return f
}

func main() {
	f := bindFlags(flag.CommandLine)
	flag.Parse()
	if f.showVersion {
		fmt.Println(version.String("controlplane"))
		return
	}
	ctrl.SetLogger(zap.New(zap.Level(zapLevel(f.logLevel))))
	log := ctrl.Log.WithName("setup")
	setDefaultGCPercent()
	if err := run(f); err != nil {
		log.Error(err, "control plane stopped")
		os.Exit(1)
	}
}

// defaultGCPercent is the control plane's GOGC unless the environment sets one. Its heap is
// almost all long-lived caches (the cluster's pods and Services, the published workload
// API), and with Go's default of 100 the heap grows to twice what is live before each
// collection: that headroom, mostly garbage, was most of the difference between the live
// heap and the RSS at 50,000 pods. At 50 the collector runs about twice as often, for
// about 1% of a CPU more there (make bench-controlplane, docs/benchmarks.md).
const defaultGCPercent = 50

func setDefaultGCPercent() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(defaultGCPercent)
	}
}

func zapLevel(s string) zapcore.Level {
	l, err := zapcore.ParseLevel(s)
	if err != nil {
		return zapcore.InfoLevel
	}
	return l
}

func run(f *flags) error {
	mc, err := loadMeshConfig(f.meshConfig)
	if err != nil {
		return err
	}
	opts := options(f, mc)
	cfg := ctrl.GetConfigOrDie()
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  meshscheme.New(),
		Cache:                   controlplane.CacheOptions(),
		Metrics:                 metricsserver.Options{BindAddress: "0"}, // served on the monitoring port below
		LeaderElection:          f.leader,
		LeaderElectionID:        "ambientmesh-controlplane-status",
		LeaderElectionNamespace: opts.Namespace,
	})
	if err != nil {
		return err
	}
	ctx := ctrl.SetupSignalHandler()
	cp, err := controlplane.New(ctx, mgr, cfg, opts)
	if err != nil {
		return err
	}
	if err := mgr.Add(cp); err != nil {
		return err
	}
	if err := mgr.Add(everyReplica{monitoring(f.monitoringPort, cp)}); err != nil {
		return err
	}
	return mgr.Start(ctx)
}

func loadMeshConfig(path string) (meshconfig.MeshConfig, error) {
	if path == "" {
		return meshconfig.Default(), nil
	}
	mc, err := meshconfig.Load(path)
	if errors.Is(err, os.ErrNotExist) {
		return meshconfig.Default(), nil
	}
	return mc, err
}

func options(f *flags, mc meshconfig.MeshConfig) controlplane.Options {
	ns := orDefault(f.namespace, mc.Namespace)
	td := orDefault(f.trustDomain, mc.TrustDomain)
	agents := []string{ns + "/ztunnel"}
	if f.nodeAgents != "" {
		agents = strings.Split(f.nodeAgents, ",")
	}
	return controlplane.Options{
		Mesh:           translate.Mesh{TrustDomain: td, RootNamespace: mc.Namespace, ClusterDomain: f.clusterDomain, ClusterID: f.clusterID},
		Namespace:      ns,
		ServiceAccount: f.serviceAccount,
		XDSAddress:     orDefault(f.xdsAddr, ":"+strconv.Itoa(int(mc.ControlPlane.XDSPort))),
		CAAddress:      orDefault(f.caAddr, ":"+strconv.Itoa(int(mc.ControlPlane.CAPort))),
		IssuerRef: cmmeta.IssuerReference{
			Name:  orDefault(f.issuerName, mc.Identity.Issuer.Name),
			Kind:  orDefault(f.issuerKind, mc.Identity.Issuer.Kind),
			Group: orDefault(f.issuerGroup, mc.Identity.Issuer.Group),
		},
		ApproveRequests: f.approve,
		TLSDir:          f.tlsDir,
		DNSNames: []string{meshconfig.ControlPlaneServiceName + "." + ns + ".svc",
			meshconfig.ControlPlaneServiceName + "." + ns + ".svc." + f.clusterDomain},
		NodeAgents:           agents,
		Audience:             mc.Identity.Audience,
		WorkloadCertTTL:      mc.Identity.WorkloadCertTTL.Duration,
		RequireXDSClientCert: f.requireClientCert,
		Debounce:             f.debounce,
		Registerer:           metrics.Registry,
	}
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// everyReplica runs a runnable on every replica, not only the leader.
type everyReplica struct{ manager.RunnableFunc }

func (everyReplica) NeedLeaderElection() bool { return false }

// monitoring serves /metrics (controller-runtime's registry: ours and its own),
// /healthz/ready (once xDS and the CA serve) and /healthz/live.
func monitoring(port int, cp *controlplane.ControlPlane) manager.RunnableFunc {
	return func(ctx context.Context) error {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(metrics.Registry, promhttp.HandlerOpts{}))
		mux.HandleFunc("/healthz/live", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
		mux.HandleFunc("/healthz/ready", func(w http.ResponseWriter, r *http.Request) {
			ready, cancel := context.WithTimeout(r.Context(), 10*time.Millisecond)
			defer cancel()
			if _, _, err := cp.WaitReady(ready); err != nil {
				http.Error(w, "not serving yet: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
			_, _ = w.Write([]byte("ok"))
		})
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		lis, err := net.Listen("tcp", ":"+strconv.Itoa(port))
		if err != nil {
			return err
		}
		go func() {
			<-ctx.Done()
			shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(shutdown)
		}()
		if err := srv.Serve(lis); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
}

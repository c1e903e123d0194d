// Command waypoint is the mesh's L7 proxy, one Deployment per Waypoint: it terminates
// HBONE on 15008 with its own identity, serves HTTP and TCP per the Envoy xDS
// (LDS/RDS/CDS/EDS) the control plane sends it, and opens HBONE to the chosen endpoints.
// See dataplane/waypoint and docs/waypoint.md.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"google.golang.org/grpc"

	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/dataplane/bootstrap"
	"github.com/ambientmesh/ambient-operator/dataplane/waypoint"
	"github.com/ambientmesh/ambient-operator/internal/spiffe"
	"github.com/ambientmesh/ambient-operator/internal/version"
)

type options struct {
	meshConfig       string
	namespace        string
	name             string
	podName          string
	serviceAccount   string
	trustDomain      string
	xdsAddress       string
	caAddress        string
	caRootFile       string
	insecurePlain    bool
	tokenFile        string
	certTTL          time.Duration
	hboneAddress     string
	adminAddress     string
	metricsAddress   string
	readinessAddress string
	drainPeriod      time.Duration
	accessLog        bool
	verbosity        int
	showVersion      bool
}

func bindFlags(fs *flag.FlagSet) *options {
	o := &options{}
	fs.StringVar(&o.meshConfig, "mesh-config", "", "Mesh config file (the operator's ConfigMap); flags below override its values.")
	fs.StringVar(&o.namespace, "namespace", os.Getenv("POD_NAMESPACE"), "The Waypoint's namespace (default $POD_NAMESPACE).")
	fs.StringVar(&o.name, "name", os.Getenv("WAYPOINT_NAME"), "The Waypoint's name (default $WAYPOINT_NAME).")
	fs.StringVar(&o.podName, "pod-name", os.Getenv("POD_NAME"), "This pod's name, for the xDS node id (default $POD_NAME).")
	fs.StringVar(&o.serviceAccount, "service-account", os.Getenv("SERVICE_ACCOUNT"), "The waypoint's service account: its identity (default $SERVICE_ACCOUNT, else --name).")
	fs.StringVar(&o.trustDomain, "trust-domain", "", "Trust domain (default from the mesh config, else cluster.local).")
	fs.StringVar(&o.xdsAddress, "xds-address", "", "Control plane delta ADS address host:port (default from the mesh config).")
	fs.StringVar(&o.caAddress, "ca-address", "", "Certificate service address host:port (default from the mesh config).")
	fs.StringVar(&o.caRootFile, "ca-root-file", "", "PEM roots that sign the control plane's serving certificate.")
	fs.BoolVar(&o.insecurePlain, "insecure-control-plane", false, "Talk to the control plane without TLS (tests only).")
	fs.StringVar(&o.tokenFile, "token-file", bootstrap.DefaultTokenFile, "The waypoint's projected service-account token, re-read for every request.")
	fs.DurationVar(&o.certTTL, "cert-ttl", 0, "Requested certificate lifetime (default from the mesh config, else 24h).")
	fs.StringVar(&o.hboneAddress, "hbone-address", "", "HBONE listener (default :<mesh hbone port>, 15008).")
	fs.StringVar(&o.adminAddress, "admin-address", "", `Admin endpoint: /config_dump, /clusters, /stats (default 127.0.0.1:15000; "-" disables).`)
	fs.StringVar(&o.metricsAddress, "metrics-address", "", `Prometheus metrics (default :15020; "-" disables).`)
	fs.StringVar(&o.readinessAddress, "readiness-address", "", `Readiness /healthz/ready (default :15021; "-" disables).`)
	fs.DurationVar(&o.drainPeriod, "drain-period", 5*time.Second, "On SIGTERM, how long open requests may finish.")
	fs.BoolVar(&o.accessLog, "access-log", true, "Write one JSON access-log line per request to stdout.")
	fs.IntVar(&o.verbosity, "v", 0, "Log verbosity.")
	fs.Func("log-level", "debug, info, warn or error (debug sets -v=1).", func(level string) error {
		switch level {
		case "debug":
			o.verbosity = 1
		case "info", "warn", "error":
		default:
			return fmt.Errorf("unknown log level %q: want debug, info, warn or error", level)
		}
		return nil
	})
	fs.BoolVar(&o.showVersion, "version", false, "Print the version and exit.")
	return o
}

func main() {
	o := bindFlags(flag.CommandLine)
	flag.Parse()
	if o.showVersion {
		fmt.Println(version.String("waypoint"))
		return
	}
	log := funcr.NewJSON(func(obj string) { fmt.Fprintln(os.Stderr, obj) }, funcr.Options{LogTimestamp: true, Verbosity: o.verbosity})
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, o, log); err != nil {
		log.Error(err, "waypoint failed")
		os.Exit(1)
	}
}

// applyMeshConfig fills options the flags left empty from the mesh config (or its defaults).
func applyMeshConfig(o *options) error {
	mc := bootstrap.DefaultMeshConfig()
	if o.meshConfig != "" {
		var err error
		if mc, err = bootstrap.LoadMeshConfig(o.meshConfig); err != nil {
			return err
		}
	}
	orStr := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	orStr(&o.trustDomain, mc.TrustDomain)
	orStr(&o.xdsAddress, net.JoinHostPort(mc.ControlPlane.Address, strconv.Itoa(int(mc.ControlPlane.XDSPort))))
	orStr(&o.caAddress, net.JoinHostPort(mc.ControlPlane.Address, strconv.Itoa(int(mc.ControlPlane.CAPort))))
	orStr(&o.hboneAddress, ":"+strconv.Itoa(int(mc.Ports.HBONE)))
	orStr(&o.adminAddress, "127.0.0.1:"+strconv.Itoa(int(mc.Ports.Admin)))
	orStr(&o.metricsAddress, ":"+strconv.Itoa(int(mc.Ports.Metrics)))
	orStr(&o.readinessAddress, ":"+strconv.Itoa(int(mc.Ports.Readiness)))
	orStr(&o.serviceAccount, o.name)
	if o.certTTL == 0 {
		o.certTTL = time.Duration(mc.Identity.WorkloadCertTTL)
	}
	return nil
}

func run(ctx context.Context, o *options, log logr.Logger) error {
	if err := applyMeshConfig(o); err != nil {
		return err
	}
	if o.namespace == "" || o.name == "" {
		return fmt.Errorf("--namespace and --name are required")
	}
	id, err := spiffe.New(o.trustDomain, o.namespace, o.serviceAccount)
	if err != nil {
		return fmt.Errorf("--namespace/--service-account: %w", err)
	}
	token := bootstrap.TokenFile(o.tokenFile)
	var roots *x509.CertPool
	if !o.insecurePlain {
		if roots, err = bootstrap.LoadRoots(o.caRootFile); err != nil {
			return err
		}
	}
	caConn, err := grpc.NewClient(o.caAddress, bootstrap.Transport(o.insecurePlain, roots, nil))
	if err != nil {
		return fmt.Errorf("certificate service %s: %w", o.caAddress, err)
	}
	defer caConn.Close()
	// The waypoint authenticates on the xDS connection with its own mesh certificate (and
	// its token), so the control plane sends it only its own Waypoint's configuration.
	var w *waypoint.Waypoint
	clientCert := func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return w.Certificate(cctx)
	}
	cfg := waypoint.Config{
		Namespace: o.namespace, Name: o.name, PodName: o.podName, Identity: id,
		XDSAddress: o.xdsAddress,
		XDSDialOptions: []grpc.DialOption{bootstrap.Transport(o.insecurePlain, roots, clientCert),
			grpc.WithPerRPCCredentials(bootstrap.BearerToken{Read: token, Secure: !o.insecurePlain})},
		CA: pb.NewCertificateServiceClient(caConn), Token: token, CertTTL: o.certTTL,
		HBONEAddress: o.hboneAddress, AdminAddress: o.adminAddress, MetricsAddress: o.metricsAddress, ReadinessAddress: o.readinessAddress,
		DrainPeriod: o.drainPeriod, Log: log,
	}
	if o.accessLog {
		cfg.AccessLog = os.Stdout
	}
	if w, err = waypoint.New(cfg); err != nil {
		return err
	}
	log.Info("starting", "version", version.String("waypoint"), "waypoint", o.namespace+"/"+o.name, "identity", id.String(), "xds", o.xdsAddress, "ca", o.caAddress)
	return w.Run(ctx)
}

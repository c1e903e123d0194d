// Command ztunnel is the node L4 proxy: it takes enrolled pods from the CNI node agent over
// the hand-off socket, gets its configuration from the control plane over delta xDS and
// workload certificates from the certificate service, and carries the pods' TCP traffic in
// HBONE tunnels. See dataplane/ztunnel.
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
	"runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"google.golang.org/grpc"

	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/dataplane/bootstrap"
	"github.com/ambientmesh/ambient-operator/dataplane/ztunnel"
	"github.com/ambientmesh/ambient-operator/dataplane/ztunnel/inpod"
	"github.com/ambientmesh/ambient-operator/internal/spiffe"
	"github.com/ambientmesh/ambient-operator/internal/version"
)

type options struct {
	meshConfig       string
	node             string
	namespace        string
	serviceAccount   string
	trustDomain      string
	xdsAddress       string
	caAddress        string
	caRootFile       string
	insecurePlain    bool
	tokenFile        string
	certTTL          time.Duration
	handoffSocket    string
	adminAddress     string
	metricsAddress   string
	readinessAddress string
	drainPeriod      time.Duration
	handoverGrace    time.Duration
	lazyStart        time.Duration
	workerThreads    int
	verbosity        int
	showVersion      bool
}

func bindFlags(fs *flag.FlagSet) *options {
	o := &options{}
	fs.StringVar(&o.meshConfig, "mesh-config", "", "Mesh config file (the operator's ConfigMap); flags below override its values.")
	fs.StringVar(&o.node, "node", os.Getenv("NODE_NAME"), "This node's name (default $NODE_NAME).")
	fs.StringVar(&o.node, "node-name", os.Getenv("NODE_NAME"), "Same as --node (the name the operator's DaemonSet passes).")
	fs.StringVar(&o.namespace, "namespace", os.Getenv("POD_NAMESPACE"), "ztunnel's own namespace, for its own identity on the xDS connection (default $POD_NAMESPACE).")
	fs.StringVar(&o.serviceAccount, "service-account", os.Getenv("SERVICE_ACCOUNT"), "ztunnel's own service account (default $SERVICE_ACCOUNT).")
	fs.StringVar(&o.trustDomain, "trust-domain", "", "Trust domain (default from the mesh config, else cluster.local).")
	fs.StringVar(&o.xdsAddress, "xds-address", "", "Control plane delta ADS address host:port (default from the mesh config).")
	fs.StringVar(&o.caAddress, "ca-address", "", "Certificate service address host:port (default from the mesh config).")
	fs.StringVar(&o.caRootFile, "ca-root-file", "", "PEM roots that sign the control plane's serving certificate.")
	fs.StringVar(&o.caRootFile, "ca-root", "", "Same as --ca-root-file (the name the operator's DaemonSet passes).")
	fs.BoolVar(&o.insecurePlain, "insecure-control-plane", false, "Talk to the control plane without TLS (tests only).")
	fs.StringVar(&o.tokenFile, "token-file", bootstrap.DefaultTokenFile, "ztunnel's projected service-account token, re-read for every request.")
	fs.StringVar(&o.tokenFile, "ca-token", bootstrap.DefaultTokenFile, "Same as --token-file (the name the operator's DaemonSet passes).")
	fs.DurationVar(&o.certTTL, "cert-ttl", 0, "Requested workload certificate lifetime (default from the mesh config, else 24h).")
	fs.StringVar(&o.handoffSocket, "handoff-socket", "", "Unix SOCK_SEQPACKET socket the CNI node agent connects to (default from the mesh config).")
	fs.StringVar(&o.adminAddress, "admin-address", "", `Admin JSON dumps (default 127.0.0.1:15000; "-" disables).`)
	fs.StringVar(&o.metricsAddress, "metrics-address", "", `Prometheus metrics (default :15020; "-" disables).`)
	fs.StringVar(&o.readinessAddress, "readiness-address", "", `Readiness /healthz/ready (default :15021; "-" disables).`)
	fs.DurationVar(&o.drainPeriod, "drain-period", 30*time.Second, "On SIGTERM, how long open connections may finish.")
	fs.DurationVar(&o.handoverGrace, "handover-grace", 2*time.Second, "On SIGTERM, how long to keep accepting while a successor takes over the pods.")
	fs.DurationVar(&o.lazyStart, "lazy-start-timeout", 10*time.Second, "How long a connection waits for its workload's configuration and certificate.")
	fs.IntVar(&o.workerThreads, "worker-threads", 0, "Threads running Go code (GOMAXPROCS); 0: half the CPUs available to the process, at least 1 ($GOMAXPROCS, when set, wins over that default).")
	fs.IntVar(&o.verbosity, "v", 0, "Log verbosity.")
	fs.Func("log-level", "debug, info, warn or error (debug sets -v=1; the operator's DaemonSet passes it).", func(level string) error {
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
		fmt.Println(version.String("ztunnel"))
		return
	}
	log := funcr.NewJSON(func(obj string) { fmt.Fprintln(os.Stderr, obj) }, funcr.Options{LogTimestamp: true, Verbosity: o.verbosity})
	if err := keepSysmonAwake(); err != nil {
		log.Error(err, "running with the Go runtime's default monitor thread; new connections take longer")
	}
	if n := workerThreads(o.workerThreads, os.Getenv("GOMAXPROCS"), runtime.GOMAXPROCS(0)); n > 0 {
		runtime.GOMAXPROCS(n)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, o, log); err != nil {
		log.Error(err, "ztunnel failed")
		os.Exit(1)
	}
}

// applyMeshConfig fills options the flags left empty from the mesh config (or its defaults).
func applyMeshConfig(o *options) (inpod.Ports, error) {
	mc := bootstrap.DefaultMeshConfig()
	if o.meshConfig != "" {
		var err error
		if mc, err = bootstrap.LoadMeshConfig(o.meshConfig); err != nil {
			return inpod.Ports{}, err
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
	orStr(&o.handoffSocket, mc.CNI.HandoffSocket)
	orStr(&o.adminAddress, "127.0.0.1:"+strconv.Itoa(int(mc.Ports.Admin)))
	orStr(&o.metricsAddress, ":"+strconv.Itoa(int(mc.Ports.Metrics)))
	orStr(&o.readinessAddress, ":"+strconv.Itoa(int(mc.Ports.Readiness)))
	if o.certTTL == 0 {
		o.certTTL = time.Duration(mc.Identity.WorkloadCertTTL)
	}
	return inpod.Ports{Outbound: uint16(mc.Ports.Outbound), Inbound: uint16(mc.Ports.InboundPlaintext), HBONE: uint16(mc.Ports.HBONE)}, nil
}

// workerThreads is the GOMAXPROCS to set (0: leave the runtime's). ztunnel shares its node
// with the apps whose traffic it carries, and every byte it moves an app moves too, so by
// default it runs Go code on half the CPUs the runtime would use. On small nodes this also
// spares the Go scheduler's wake-ups of idle threads, measured as most of a new
// connection's added latency (docs/benchmarks.md). Istio's ztunnel likewise runs a fixed
// two worker threads.
func workerThreads(flagValue int, envGOMAXPROCS string, available int) int {
	switch {
	case flagValue > 0:
		return flagValue
	case envGOMAXPROCS != "":
		return 0
	}
	return max(1, (available+1)/2)
}

func run(ctx context.Context, o *options, log logr.Logger) error {
	ports, err := applyMeshConfig(o)
	if err != nil {
		return err
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

	// ztunnel's own identity authenticates it on the xDS connection (mutual TLS), with a
	// certificate from the same CA, renewed like the pods'.
	var ownID spiffe.ID
	if o.namespace != "" && o.serviceAccount != "" {
		if ownID, err = spiffe.New(o.trustDomain, o.namespace, o.serviceAccount); err != nil {
			return fmt.Errorf("--namespace/--service-account: %w", err)
		}
	}
	var z *ztunnel.Ztunnel
	clientCert := func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		if ownID.IsZero() {
			return &tls.Certificate{}, nil
		}
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return z.Identity.Certificate(cctx, ownID)
	}
	z, err = ztunnel.New(ztunnel.Config{
		Node:             o.node,
		TrustDomain:      o.trustDomain,
		XDSAddress:       o.xdsAddress,
		XDSDialOptions:   []grpc.DialOption{bootstrap.Transport(o.insecurePlain, roots, clientCert), grpc.WithPerRPCCredentials(bootstrap.BearerToken{Read: token, Secure: !o.insecurePlain})},
		CA:               pb.NewCertificateServiceClient(caConn),
		Token:            token,
		CertTTL:          o.certTTL,
		HandoffSocket:    o.handoffSocket,
		Ports:            ports,
		AdminAddress:     o.adminAddress,
		MetricsAddress:   o.metricsAddress,
		ReadinessAddress: o.readinessAddress,
		LazyStartTimeout: o.lazyStart,
		HandoverGrace:    o.handoverGrace,
		DrainPeriod:      o.drainPeriod,
		Log:              log,
	})
	if err != nil {
		return err
	}
	if !ownID.IsZero() {
		z.Identity.Acquire(ownID)
	}
	log.Info("starting", "version", version.String("ztunnel"), "workerThreads", runtime.GOMAXPROCS(0), "node", o.node, "xds", o.xdsAddress, "ca", o.caAddress, "handoff", o.handoffSocket)
	return z.Run(ctx)
}

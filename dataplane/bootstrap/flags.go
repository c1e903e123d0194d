package bootstrap

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"net"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Flags are the command-line settings both proxies share: where the mesh config is, how
// to reach and trust the control plane, the certificate lifetime, the worker threads, the
// log verbosity and -version.
// Empty values are filled from the mesh config by Resolve.
type Flags struct {
	MeshConfig    string
	TrustDomain   string
	XDSAddress    string
	CAAddress     string
	CARootFile    string
	InsecurePlain bool
	TokenFile     string
	CertTTL       time.Duration
	WorkerThreads int // GOMAXPROCS; 0: see workerThreads
	Verbosity     int
	ShowVersion   bool
	// The proxy's own local endpoints; "-" disables one.
	AdminAddress, MetricsAddress, ReadinessAddress string
}

// Bind registers the shared flags on fs; who ("ztunnel", "the waypoint") words their help.
func (f *Flags) Bind(fs *flag.FlagSet, who string) {
	fs.StringVar(&f.MeshConfig, "mesh-config", "", "Mesh config file (the operator's ConfigMap); flags below override its values.")
	fs.StringVar(&f.TrustDomain, "trust-domain", "", "Trust domain (default from the mesh config, else cluster.local).")
	fs.StringVar(&f.XDSAddress, "xds-address", "", "Control plane delta ADS address host:port (default from the mesh config).")
	fs.StringVar(&f.CAAddress, "ca-address", "", "Certificate service address host:port (default from the mesh config).")
	fs.StringVar(&f.CARootFile, "ca-root-file", "", "PEM roots that sign the control plane's serving certificate.")
	fs.BoolVar(&f.InsecurePlain, "insecure-control-plane", false, "Talk to the control plane without TLS (tests only).")
	fs.StringVar(&f.TokenFile, "token-file", DefaultTokenFile, "The projected service-account token of "+who+", re-read for every request.")
	fs.DurationVar(&f.CertTTL, "cert-ttl", 0, "Requested certificate lifetime (default from the mesh config, else 24h).")
	fs.StringVar(&f.AdminAddress, "admin-address", "", `Admin endpoint (default 127.0.0.1:15000; "-" disables).`)
	fs.StringVar(&f.MetricsAddress, "metrics-address", "", `Prometheus metrics (default :15020; "-" disables).`)
	fs.StringVar(&f.ReadinessAddress, "readiness-address", "", `Readiness /healthz/ready (default :15021; "-" disables).`)
	fs.IntVar(&f.WorkerThreads, "worker-threads", 0, "Threads running Go code (GOMAXPROCS); 0: half the CPUs available to the process, at least 1 ($GOMAXPROCS, when set, wins over that default).")
	fs.IntVar(&f.Verbosity, "v", 0, "Log verbosity.")
	fs.BoolVar(&f.ShowVersion, "version", false, "Print the version and exit.")
	fs.Func("log-level", "debug, info, warn or error (debug sets -v=1; the operator passes it).", func(level string) error {
		switch level {
		case "debug":
			f.Verbosity = 1
		case "info", "warn", "error":
		default:
			return fmt.Errorf("unknown log level %q: want debug, info, warn or error", level)
		}
		return nil
	})
}

// Resolve reads the mesh config (or its defaults) and fills the flags left empty from it.
func (f *Flags) Resolve() (MeshConfig, error) {
	mc := DefaultMeshConfig()
	if f.MeshConfig != "" {
		var err error
		if mc, err = LoadMeshConfig(f.MeshConfig); err != nil {
			return mc, err
		}
	}
	OrDefault(&f.TrustDomain, mc.TrustDomain)
	OrDefault(&f.XDSAddress, net.JoinHostPort(mc.ControlPlane.Address, strconv.Itoa(int(mc.ControlPlane.XDSPort))))
	OrDefault(&f.CAAddress, net.JoinHostPort(mc.ControlPlane.Address, strconv.Itoa(int(mc.ControlPlane.CAPort))))
	OrDefault(&f.AdminAddress, "127.0.0.1:"+strconv.Itoa(int(mc.Ports.Admin)))
	OrDefault(&f.MetricsAddress, ":"+strconv.Itoa(int(mc.Ports.Metrics)))
	OrDefault(&f.ReadinessAddress, ":"+strconv.Itoa(int(mc.Ports.Readiness)))
	if f.CertTTL == 0 {
		f.CertTTL = time.Duration(mc.Identity.WorkloadCertTTL)
	}
	return mc, nil
}

// OrDefault sets *s to v when it is empty.
func OrDefault(s *string, v string) {
	if *s == "" {
		*s = v
	}
}

// ControlPlane is an open connection to the certificate service and the options for the
// xDS stream, both authenticated as the flags say.
type ControlPlane struct {
	CA *grpc.ClientConn
	// XDSDialOptions authenticate the xDS stream with the proxy's own mesh certificate
	// (clientCert) and its token.
	XDSDialOptions []grpc.DialOption
	Token          func() (string, error)
}

// Connect loads the roots and opens the certificate service's connection. clientCert, when
// set, gives the proxy's own certificate for the xDS connection (it is asked at every
// handshake, so a renewed certificate is used once the old connection ends). Both
// connections verify the control plane against --ca-root-file as it is at each handshake
// (see RootsFile): a proxy follows the control plane's certificate to a new root without
// a restart.
func (f *Flags) Connect(clientCert func(context.Context) (*tls.Certificate, error)) (*ControlPlane, error) {
	var getCert func(*tls.CertificateRequestInfo) (*tls.Certificate, error)
	if clientCert != nil {
		getCert = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			return clientCert(ctx)
		}
	}
	caCreds, xdsCreds := insecure.NewCredentials(), insecure.NewCredentials()
	if !f.InsecurePlain {
		roots, err := LoadRootsFile(f.CARootFile)
		if err != nil {
			return nil, err
		}
		caCreds, xdsCreds = roots.Credentials(nil), roots.Credentials(getCert)
	}
	token := TokenFile(f.TokenFile)
	ca, err := grpc.NewClient(f.CAAddress, grpc.WithTransportCredentials(caCreds))
	if err != nil {
		return nil, fmt.Errorf("certificate service %s: %w", f.CAAddress, err)
	}
	return &ControlPlane{
		CA:    ca,
		Token: token,
		XDSDialOptions: []grpc.DialOption{grpc.WithTransportCredentials(xdsCreds),
			grpc.WithPerRPCCredentials(BearerToken{Read: token, Secure: !f.InsecurePlain})},
	}, nil
}

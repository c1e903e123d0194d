// Command waypoint is the mesh's L7 proxy, one Deployment per Waypoint: it terminates
// HBONE on 15008 with its own identity, serves HTTP and TCP per the Envoy xDS
// (LDS/RDS/CDS/EDS) the control plane sends it, and opens HBONE to the chosen endpoints.
// See dataplane/waypoint and docs/waypoint.md.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/go-logr/logr"

	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/dataplane/bootstrap"
	"github.com/ambientmesh/ambient-operator/dataplane/waypoint"
	"github.com/ambientmesh/ambient-operator/internal/spiffe"
	"github.com/ambientmesh/ambient-operator/internal/version"
)

type options struct {
	cp             bootstrap.Flags
	namespace      string
	name           string
	podName        string
	serviceAccount string
	hboneAddress   string
	drainPeriod    time.Duration
	minDrainPeriod time.Duration
	accessLog      bool
}

func bindFlags(fs *flag.FlagSet) *options {
	o := &options{}
	o.cp.Bind(fs, "the waypoint")
	fs.StringVar(&o.namespace, "namespace", os.Getenv("POD_NAMESPACE"), "The Waypoint's namespace (default $POD_NAMESPACE).")
	fs.StringVar(&o.name, "name", os.Getenv("WAYPOINT_NAME"), "The Waypoint's name (default $WAYPOINT_NAME).")
	fs.StringVar(&o.podName, "pod-name", os.Getenv("POD_NAME"), "This pod's name, for the xDS node id (default $POD_NAME).")
	fs.StringVar(&o.serviceAccount, "service-account", os.Getenv("SERVICE_ACCOUNT"), "The waypoint's service account: its identity (default $SERVICE_ACCOUNT, else --name).")
	fs.StringVar(&o.hboneAddress, "hbone-address", "", "HBONE listener (default :<mesh hbone port>, 15008).")
	fs.DurationVar(&o.drainPeriod, "drain-period", 5*time.Second, "On SIGTERM, how long open requests may finish.")
	fs.DurationVar(&o.minDrainPeriod, "min-drain-period", 2*time.Second,
		"On SIGTERM, how long new connections are still accepted (with HTTP/1.1 \"Connection: close\") while the mesh learns the pod is terminating.")
	fs.BoolVar(&o.accessLog, "access-log", true, "Write one JSON access-log line per request to stdout.")
	return o
}

func main() {
	o := bindFlags(flag.CommandLine)
	flag.Parse()
	bootstrap.Main("waypoint", &o.cp, func(ctx context.Context, log logr.Logger, _ bootstrap.PerfDevices) error {
		return run(ctx, o, log)
	})
}

// applyMeshConfig fills options the flags left empty from the mesh config (or its defaults).
func applyMeshConfig(o *options) error {
	mc, err := o.cp.Resolve()
	if err != nil {
		return err
	}
	bootstrap.OrDefault(&o.hboneAddress, ":"+strconv.Itoa(int(mc.Ports.HBONE)))
	bootstrap.OrDefault(&o.serviceAccount, o.name)
	return nil
}

func run(ctx context.Context, o *options, log logr.Logger) error {
	if err := applyMeshConfig(o); err != nil {
		return err
	}
	if o.namespace == "" || o.name == "" {
		return fmt.Errorf("--namespace and --name are required")
	}
	id, err := spiffe.New(o.cp.TrustDomain, o.namespace, o.serviceAccount)
	if err != nil {
		return fmt.Errorf("--namespace/--service-account: %w", err)
	}
	// The waypoint authenticates on the xDS connection with its own mesh certificate (and
	// its token), so the control plane sends it only its own Waypoint's configuration.
	var w *waypoint.Waypoint
	cp, err := o.cp.Connect(func(ctx context.Context) (*tls.Certificate, error) { return w.Certificate(ctx) })
	if err != nil {
		return err
	}
	defer cp.CA.Close()
	cfg := waypoint.Config{
		Namespace: o.namespace, Name: o.name, PodName: o.podName, Identity: id,
		XDSAddress: o.cp.XDSAddress, XDSDialOptions: cp.XDSDialOptions,
		CA: pb.NewCertificateServiceClient(cp.CA), Token: cp.Token, CertTTL: o.cp.CertTTL,
		HBONEAddress: o.hboneAddress, AdminAddress: o.cp.AdminAddress, MetricsAddress: o.cp.MetricsAddress, ReadinessAddress: o.cp.ReadinessAddress,
		DrainPeriod: o.drainPeriod, MinDrainPeriod: o.minDrainPeriod, Log: log,
	}
	if o.accessLog {
		cfg.AccessLog = os.Stdout
	}
	if w, err = waypoint.New(cfg); err != nil {
		return err
	}
	log.Info("starting", "version", version.String("waypoint"), "waypoint", o.namespace+"/"+o.name, "identity", id.String(), "xds", o.cp.XDSAddress, "ca", o.cp.CAAddress)
	return w.Run(ctx)
}

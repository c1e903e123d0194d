// Command ztunnel is the node L4 proxy: it takes enrolled pods from the CNI node agent over
// the hand-off socket, gets its configuration from the control plane over delta xDS and
// workload certificates from the certificate service, and carries the pods' TCP traffic in
// HBONE tunnels. See dataplane/ztunnel.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"os"
	"runtime"
	"time"

	"github.com/go-logr/logr"

	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/dataplane/bootstrap"
	"github.com/ambientmesh/ambient-operator/dataplane/ztunnel"
	"github.com/ambientmesh/ambient-operator/dataplane/ztunnel/inpod"
	"github.com/ambientmesh/ambient-operator/internal/spiffe"
	"github.com/ambientmesh/ambient-operator/internal/version"
)

type options struct {
	cp             bootstrap.Flags
	node           string
	namespace      string
	serviceAccount string
	handoffSocket  string
	drainPeriod    time.Duration
	handoverGrace  time.Duration
	lazyStart      time.Duration
}

func bindFlags(fs *flag.FlagSet) *options {
	o := &options{}
	o.cp.Bind(fs, "ztunnel")
	// Aliases under the names the operator's DaemonSet passes.
	fs.StringVar(&o.cp.CARootFile, "ca-root", "", "Same as --ca-root-file.")
	fs.StringVar(&o.cp.TokenFile, "ca-token", bootstrap.DefaultTokenFile, "Same as --token-file.")
	fs.StringVar(&o.node, "node", os.Getenv("NODE_NAME"), "This node's name (default $NODE_NAME).")
	fs.StringVar(&o.node, "node-name", os.Getenv("NODE_NAME"), "Same as --node (the name the operator's DaemonSet passes).")
	fs.StringVar(&o.namespace, "namespace", os.Getenv("POD_NAMESPACE"), "ztunnel's own namespace, for its own identity on the xDS connection (default $POD_NAMESPACE).")
	fs.StringVar(&o.serviceAccount, "service-account", os.Getenv("SERVICE_ACCOUNT"), "ztunnel's own service account (default $SERVICE_ACCOUNT).")
	fs.StringVar(&o.handoffSocket, "handoff-socket", "", "Unix SOCK_SEQPACKET socket the CNI node agent connects to (default from the mesh config).")
	fs.DurationVar(&o.drainPeriod, "drain-period", 30*time.Second, "On SIGTERM, how long open connections may finish.")
	fs.DurationVar(&o.handoverGrace, "handover-grace", 2*time.Second, "On SIGTERM, how long to keep accepting while a successor takes over the pods.")
	fs.DurationVar(&o.lazyStart, "lazy-start-timeout", 10*time.Second, "How long a connection waits for its workload's configuration and certificate.")
	return o
}

func main() {
	o := bindFlags(flag.CommandLine)
	flag.Parse()
	bootstrap.Main("ztunnel", &o.cp, func(ctx context.Context, log logr.Logger, perf bootstrap.PerfDevices) error {
		return run(ctx, o, perf, log)
	})
}

// applyMeshConfig fills options the flags left empty from the mesh config (or its defaults).
func applyMeshConfig(o *options) (inpod.Ports, error) {
	mc, err := o.cp.Resolve()
	if err != nil {
		return inpod.Ports{}, err
	}
	bootstrap.OrDefault(&o.handoffSocket, mc.CNI.HandoffSocket)
	return inpod.Ports{Outbound: uint16(mc.Ports.Outbound), Inbound: uint16(mc.Ports.InboundPlaintext), HBONE: uint16(mc.Ports.HBONE)}, nil
}

func run(ctx context.Context, o *options, perf bootstrap.PerfDevices, log logr.Logger) error {
	ports, err := applyMeshConfig(o)
	if err != nil {
		return err
	}
	// ztunnel's own identity authenticates it on the xDS connection (mutual TLS), with a
	// certificate from the same CA, renewed like the pods'.
	var ownID spiffe.ID
	if o.namespace != "" && o.serviceAccount != "" {
		if ownID, err = spiffe.New(o.cp.TrustDomain, o.namespace, o.serviceAccount); err != nil {
			return fmt.Errorf("--namespace/--service-account: %w", err)
		}
	}
	var z *ztunnel.Ztunnel
	cp, err := o.cp.Connect(func(ctx context.Context) (*tls.Certificate, error) {
		if ownID.IsZero() {
			return &tls.Certificate{}, nil
		}
		return z.Identity.Certificate(ctx, ownID)
	})
	if err != nil {
		return err
	}
	defer cp.CA.Close()
	z, err = ztunnel.New(ztunnel.Config{
		Node:                o.node,
		TrustDomain:         o.cp.TrustDomain,
		XDSAddress:          o.cp.XDSAddress,
		XDSDialOptions:      cp.XDSDialOptions,
		CA:                  pb.NewCertificateServiceClient(cp.CA),
		Token:               cp.Token,
		CertTTL:             o.cp.CertTTL,
		HandoffSocket:       o.handoffSocket,
		Ports:               ports,
		AdminAddress:        o.cp.AdminAddress,
		MetricsAddress:      o.cp.MetricsAddress,
		ReadinessAddress:    o.cp.ReadinessAddress,
		LazyStartTimeout:    o.lazyStart,
		HandoverGrace:       o.handoverGrace,
		DrainPeriod:         o.drainPeriod,
		DisableSpareSockets: !perf.SpareSockets,
		Log:                 log,
	})
	if err != nil {
		return err
	}
	if !ownID.IsZero() {
		z.Identity.Acquire(ownID)
	}
	log.Info("starting", "version", version.String("ztunnel"), "workerThreads", runtime.GOMAXPROCS(0), "node", o.node, "xds", o.cp.XDSAddress, "ca", o.cp.CAAddress, "handoff", o.handoffSocket, "perfDevices", perf)
	return z.Run(ctx)
}

// Package controlplane assembles the mesh control plane: discovery (controller-runtime
// cache and reconcilers), the workload API and the waypoints' Envoy resources over delta
// ADS (go-control-plane), the
// certificate service (TokenReview + cert-manager) and the status writers. cmd/controlplane
// runs it as a process; tests run it in-process against envtest.
package controlplane

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controlplane/discovery"
	"github.com/ambientmesh/ambient-operator/controlplane/identity"
	"github.com/ambientmesh/ambient-operator/controlplane/status"
	xdsserver "github.com/ambientmesh/ambient-operator/controlplane/xds/server"
	"github.com/ambientmesh/ambient-operator/controlplane/xds/translate"
	"github.com/ambientmesh/ambient-operator/internal/spiffe"
)

// Options configure a control plane.
type Options struct {
	Mesh translate.Mesh
	// Namespace and ServiceAccount of the control plane itself: CertificateRequests are
	// created in Namespace, and its own certificate carries that identity.
	Namespace, ServiceAccount string
	// XDSAddress and CAAddress to listen on ("host:port"; port 0 picks one).
	XDSAddress, CAAddress string
	// IssuerRef is the mesh's cert-manager issuer.
	IssuerRef cmmeta.IssuerReference
	// ApproveRequests: approve our own CertificateRequests (see identity.Signer.Approve).
	ApproveRequests bool
	// TLSDir, when set, holds the control plane's certificate from a cert-manager
	// Certificate (tls.crt, tls.key, ca.crt); otherwise the control plane requests one
	// itself with a CertificateRequest, with DNSNames.
	TLSDir   string
	DNSNames []string
	// NodeAgents are the ztunnel service accounts ("<ns>/<name>").
	NodeAgents []string
	Audience   string
	// WorkloadCertTTL is the default certificate lifetime; MaxCertTTL the longest granted.
	WorkloadCertTTL, MaxCertTTL time.Duration
	// RequireXDSClientCert refuses xDS clients without a mesh certificate (otherwise a
	// token is accepted instead).
	RequireXDSClientCert bool
	// CertificateRequestLimit and XDSStreamLimit bound, per caller, certificate requests
	// and xDS stream opens (see identity.CAOptions); zero values take the defaults.
	CertificateRequestLimit, XDSStreamLimit identity.RateLimit
	// Registerer receives the control plane's metrics (cmd/controlplane passes
	// controller-runtime's metrics.Registry); nil registers none. A registry takes the
	// metrics of one control plane only: New fails on a second.
	Registerer prometheus.Registerer
	// Listen opens the xDS and CA listeners (default net.Listen).
	Listen func(network, address string) (net.Listener, error)
	// Debounce of xDS pushes.
	Debounce time.Duration
	// SignTimeout bounds each wait for cert-manager.
	SignTimeout time.Duration
	// Clock decides when a retiring trust root leaves the bundle (default the real clock).
	Clock clock.Clock
}

// trustBundleWait bounds how long the first certificate under a new root waits for the
// ztunnels to hold the trust bundle with that root.
const trustBundleWait = 5 * time.Second

// ControlPlane is an assembled control plane; Add it to its manager with mgr.Add.
type ControlPlane struct {
	opts  Options
	mgr   ctrl.Manager
	log   logr.Logger
	XDS   *xdsserver.Server
	CA    *identity.CA
	certs identity.CertSource
	trust *identity.TrustRoots
	recs  *discovery.Reconcilers

	mu        sync.Mutex
	xdsAddr   net.Addr
	caAddr    net.Addr
	ready     chan struct{}
	readyOnce sync.Once
	readyErr  error
}

// New wires the control plane into mgr (a manager built with meshscheme.New() and
// CacheOptions()); cfg is for the live (uncached) client that creates TokenReviews and
// CertificateRequests.
func New(ctx context.Context, mgr ctrl.Manager, cfg *rest.Config, opts Options) (*ControlPlane, error) {
	if err := validate(&opts); err != nil {
		return nil, err
	}
	log := ctrl.Log.WithName("controlplane")
	cp := &ControlPlane{opts: opts, mgr: mgr, log: log, ready: make(chan struct{})}
	live, err := client.NewWithWatch(cfg, client.Options{Scheme: mgr.GetScheme()})
	if err != nil {
		return nil, err
	}
	reg := &registerer{Registerer: opts.Registerer}
	cp.XDS = xdsserver.New(ctx, xdsserver.Options{
		Debounce: opts.Debounce, Registerer: reg, Log: log.WithName("xds"),
		PeerIdentity: func(ctx context.Context) (xdsserver.Peer, bool) {
			who, ok := identity.XDSCaller(ctx)
			return xdsserver.Peer(who), ok
		},
		NodeAgents: opts.NodeAgents,
	})
	if err := discovery.SetupIndexes(ctx, mgr); err != nil {
		return nil, err
	}
	gatewayAPI := discovery.InstalledGatewayAPIKinds(mgr.GetRESTMapper())
	if cp.recs, err = discovery.Setup(mgr, discovery.Config{
		Mesh: opts.Mesh, Publisher: cp.XDS.Publisher(), Waypoints: cp.XDS.Waypoints(), GatewayAPIKinds: gatewayAPI,
	}); err != nil {
		return nil, err
	}
	if err := startInformers(ctx, mgr, gatewayAPI); err != nil {
		return nil, err
	}
	if err := status.Setup(mgr, status.Options{
		Mesh: opts.Mesh, Lookup: discovery.NewTargetLookup(mgr.GetClient(), opts.Mesh, gatewayAPI), Proxies: cp.XDS, GatewayAPIKinds: gatewayAPI,
	}); err != nil {
		return nil, err
	}
	signer := &identity.Signer{Client: live, Namespace: opts.Namespace, IssuerRef: opts.IssuerRef,
		Approve: opts.ApproveRequests, Timeout: opts.SignTimeout, Log: log.WithName("signer")}
	cp.trust = identity.NewTrustRoots(identity.TrustRootsOptions{
		Client: live, Namespace: opts.Namespace, Clock: opts.Clock,
		Publish: cp.publishRoots, AwaitPublished: cp.awaitTrustBundle, Log: log.WithName("trust-roots"),
	})
	cp.certs = cp.certSource(signer)
	cp.CA = identity.NewCA(identity.CAOptions{
		TrustDomain: opts.Mesh.TrustDomain, Audience: opts.Audience, NodeAgents: opts.NodeAgents,
		DefaultTTL: opts.WorkloadCertTTL, MinTTL: time.Hour, MaxTTL: opts.MaxCertTTL, Trust: cp.trust,
		CertificateRequests: opts.CertificateRequestLimit, XDSStreams: opts.XDSStreamLimit,
	}, live, mgr.GetCache(), discovery.IndexPodNode, signer, reg, log.WithName("ca"))
	if reg.err != nil {
		return nil, fmt.Errorf("registering the control plane's metrics: %w", reg.err)
	}
	return cp, nil
}

// registerer hands the metrics to opts.Registerer, keeping the first refusal as an error
// for New to return: the components register with MustRegister, which would panic when
// the registry already holds another control plane's metrics.
type registerer struct {
	prometheus.Registerer
	err error
}

func (r *registerer) MustRegister(cs ...prometheus.Collector) {
	if r.Registerer == nil {
		return
	}
	for _, c := range cs {
		if err := r.Register(c); err != nil && r.err == nil {
			r.err = err
		}
	}
}

// startInformers caches the kinds the mesh's consumers of this cache read before any
// reconciler asks for them: Nodes, EndpointSlices, and the Gateway API Gateways and routes
// (which the waypoint reconciler reads) when their CRDs are installed.
func startInformers(ctx context.Context, mgr ctrl.Manager, gatewayAPI map[string]bool) error {
	objs := []client.Object{&corev1.Node{}, &discoveryv1.EndpointSlice{}}
	if gatewayAPI["Gateway"] {
		objs = append(objs, &gatewayv1.Gateway{})
	} else {
		ctrl.Log.WithName("controlplane").Info("Gateway API Gateway CRD not installed; only Waypoints are waypoints")
	}
	if gatewayAPI["HTTPRoute"] {
		objs = append(objs, &gatewayv1.HTTPRoute{})
	} else {
		ctrl.Log.WithName("controlplane").Info("Gateway API HTTPRoute CRD not installed; waypoints serve default routes")
	}
	if gatewayAPI["GRPCRoute"] {
		objs = append(objs, &gatewayv1.GRPCRoute{})
	}
	for _, o := range objs {
		if _, err := mgr.GetCache().GetInformer(ctx, o); err != nil {
			return fmt.Errorf("watch %T: %w", o, err)
		}
	}
	return nil
}

func validate(o *Options) error {
	var errs []error
	if o.Mesh.TrustDomain == "" || o.Mesh.ClusterDomain == "" {
		errs = append(errs, errors.New("mesh trust domain and cluster domain are required"))
	}
	if o.Namespace == "" || o.ServiceAccount == "" {
		errs = append(errs, errors.New("the control plane's namespace and service account are required"))
	}
	if o.IssuerRef.Name == "" {
		errs = append(errs, errors.New("issuer name is required"))
	}
	if o.Audience == "" {
		o.Audience = pb.CATokenAudience
	}
	if o.WorkloadCertTTL == 0 {
		o.WorkloadCertTTL = meshv1.DefaultWorkloadCertTTL
	}
	if o.MaxCertTTL == 0 {
		o.MaxCertTTL = max(o.WorkloadCertTTL, 30*24*time.Hour)
	}
	if o.Listen == nil {
		o.Listen = net.Listen
	}
	return errors.Join(errs...)
}

// certSource is the control plane's own certificate: its roots are always in the trust
// bundle, and client certificates are verified against the whole bundle.
func (cp *ControlPlane) certSource(signer *identity.Signer) identity.CertSource {
	if cp.opts.TLSDir != "" {
		return &identity.FileCert{Dir: cp.opts.TLSDir, OnRoots: cp.trust.SetCurrent, ClientCAs: cp.trust.Pool}
	}
	return &identity.ServingCert{
		Signer:    signer,
		Identity:  spiffe.ID{TrustDomain: cp.opts.Mesh.TrustDomain, Namespace: cp.opts.Namespace, ServiceAccount: cp.opts.ServiceAccount},
		DNSNames:  cp.opts.DNSNames,
		TTL:       cp.opts.WorkloadCertTTL,
		OnRoots:   cp.trust.SetCurrent,
		ClientCAs: cp.trust.Pool,
		Log:       cp.log.WithName("serving-cert"),
	}
}

// trustBundle is the TrustBundle resource for roots.
func (cp *ControlPlane) trustBundle(roots []string) *pb.TrustBundle {
	return &pb.TrustBundle{TrustDomain: cp.opts.Mesh.TrustDomain, Roots: roots}
}

// publishRoots sends a changed trust bundle now, not after the debounce, to the ztunnels
// (the workload API's TrustBundle) and to the waypoints (the SDS Secret ROOTCA): a
// certificate under a new root may be handed out right after.
func (cp *ControlPlane) publishRoots(roots []string) {
	if cp.XDS.Publisher().Set(pb.TrustBundleTypeURL, cp.opts.Mesh.TrustDomain, cp.trustBundle(roots)) {
		cp.XDS.Publisher().Flush()
	}
	if _, err := cp.XDS.Waypoints().SetTrustBundle(roots); err != nil {
		cp.log.Error(err, "the waypoints keep their previous trust bundle")
	}
}

// awaitTrustBundle waits, at most trustBundleWait, until the ztunnel of every node that
// has a stream to this replica holds the trust bundle roots.
func (cp *ControlPlane) awaitTrustBundle(ctx context.Context, roots []string) {
	want := map[string]map[string]string{pb.TrustBundleTypeURL: {
		cp.opts.Mesh.TrustDomain: xdsserver.ResourceVersion(cp.trustBundle(roots)),
	}}
	ctx, cancel := context.WithTimeout(ctx, trustBundleWait)
	defer cancel()
	changes := cp.XDS.WatchAcks(ctx) // before the first look, so no ACK is missed
	for {
		behind, err := cp.ztunnelsWithout(ctx, want)
		if err != nil || len(behind) == 0 {
			return
		}
		select {
		case <-ctx.Done():
			cp.log.Info("handing out a certificate under a new trust root before every ztunnel acknowledged the bundle with it",
				"waited", trustBundleWait, "behind", behind)
			return
		case _, open := <-changes:
			if !open {
				return
			}
		}
	}
}

// ztunnelsWithout lists the nodes whose connected ztunnel does not hold want yet.
func (cp *ControlPlane) ztunnelsWithout(ctx context.Context, want map[string]map[string]string) ([]string, error) {
	var nodes corev1.NodeList
	if err := cp.mgr.GetCache().List(ctx, &nodes, client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	var behind []string
	for _, n := range nodes.Items {
		if s := cp.XDS.ZTunnel(n.Name, want); s.Connected > 0 && !s.Synced {
			behind = append(behind, n.Name)
		}
	}
	return behind, nil
}

// NeedLeaderElection: every replica serves.
func (cp *ControlPlane) NeedLeaderElection() bool { return false }

// Start waits for the cache, gets the serving certificate, translates everything once,
// then serves xDS and the CA until ctx ends or a server fails. It implements
// manager.Runnable.
func (cp *ControlPlane) Start(ctx context.Context) error {
	srv, err := cp.prepare(ctx)
	cp.setReady(srv, err)
	if err != nil {
		return err
	}
	return cp.serve(ctx, srv)
}

// servers are the gRPC servers and their listeners.
type servers struct {
	xds, ca       *grpc.Server
	xdsLis, caLis net.Listener
}

func (cp *ControlPlane) prepare(ctx context.Context) (*servers, error) {
	if !cp.mgr.GetCache().WaitForCacheSync(ctx) {
		return nil, errors.New("cache did not sync")
	}
	if err := cp.trust.Load(ctx); err != nil {
		return nil, fmt.Errorf("trust roots: %w", err)
	}
	if err := cp.loadCert(ctx); err != nil {
		return nil, err
	}
	begin := time.Now()
	if err := cp.recs.Prime(ctx); err != nil {
		return nil, fmt.Errorf("initial translation: %w", err)
	}
	cp.XDS.Publisher().Flush()
	cp.log.Info("initial translation done", "workloads", cp.XDS.ResourceCount(pb.WorkloadTypeURL),
		"services", cp.XDS.ResourceCount(pb.ServiceTypeURL), "took", time.Since(begin))

	xdsLis, err := cp.opts.Listen("tcp", cp.opts.XDSAddress)
	if err != nil {
		return nil, fmt.Errorf("xDS listener: %w", err)
	}
	caLis, err := cp.opts.Listen("tcp", cp.opts.CAAddress)
	if err != nil {
		_ = xdsLis.Close()
		return nil, fmt.Errorf("CA listener: %w", err)
	}
	xdsGRPC := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(cp.certs.ServerTLS(cp.opts.RequireXDSClientCert))),
		grpc.StreamInterceptor(cp.CA.XDSStreamInterceptor()),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.MaxConcurrentStreams(1000),
		grpc.MaxRecvMsgSize(xdsserver.MaxRequestSize),
	)
	cp.XDS.Register(xdsGRPC)
	caGRPC := grpc.NewServer(grpc.Creds(credentials.NewTLS(cp.certs.ServerTLS(false))))
	pb.RegisterCertificateServiceServer(caGRPC, cp.CA)
	return &servers{xds: xdsGRPC, ca: caGRPC, xdsLis: xdsLis, caLis: caLis}, nil
}

// setReady records the outcome of prepare, once: WaitReady returns it.
func (cp *ControlPlane) setReady(srv *servers, err error) {
	cp.readyOnce.Do(func() {
		cp.mu.Lock()
		if err == nil {
			cp.xdsAddr, cp.caAddr = srv.xdsLis.Addr(), srv.caLis.Addr()
		}
		cp.readyErr = err
		cp.mu.Unlock()
		close(cp.ready)
	})
}

// serve runs the servers until ctx ends or one of them fails, and returns that failure.
func (cp *ControlPlane) serve(ctx context.Context, srv *servers) error {
	cp.log.Info("serving", "xds", srv.xdsLis.Addr().String(), "ca", srv.caLis.Addr().String())
	errc := make(chan error, 2)
	go func() { errc <- srv.xds.Serve(srv.xdsLis) }()
	go func() { errc <- srv.ca.Serve(srv.caLis) }()
	if sc, ok := cp.certs.(*identity.ServingCert); ok {
		go sc.Run(ctx)
	}
	go cp.trust.Run(ctx)
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		cp.log.Error(err, "a gRPC server stopped; stopping the control plane")
	}
	srv.xds.Stop() // streams are long-lived: do not wait for them
	srv.ca.GracefulStop()
	return err
}

func (cp *ControlPlane) loadCert(ctx context.Context) error {
	switch src := cp.certs.(type) {
	case *identity.FileCert:
		return src.Load()
	case *identity.ServingCert:
		// cert-manager may still be starting: retry for a while before giving up.
		var err error
		for range 12 {
			if err = src.Issue(ctx); err == nil || ctx.Err() != nil {
				return err
			}
			cp.log.Error(err, "control-plane certificate not issued yet; retrying")
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(5 * time.Second):
			}
		}
		return err
	}
	return nil
}

// WaitReady blocks until the control plane serves (or failed to start) and returns the
// addresses it listens on.
func (cp *ControlPlane) WaitReady(ctx context.Context) (xdsAddr, caAddr string, err error) {
	select {
	case <-ctx.Done():
		return "", "", ctx.Err()
	case <-cp.ready:
	}
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.readyErr != nil {
		return "", "", cp.readyErr
	}
	return cp.xdsAddr.String(), cp.caAddr.String(), nil
}

// CacheOptions are the cache settings of a control plane's manager (ctrl.Options.Cache):
// Pods, Services, Namespaces and Nodes keep only the fields the control plane reads
// (discovery.CacheByObject), and no object keeps its managedFields.
func CacheOptions() cache.Options {
	return cache.Options{ByObject: discovery.CacheByObject(), DefaultTransform: cache.TransformStripManagedFields()}
}

// Cache is the control plane's view of the cluster.
func (cp *ControlPlane) Cache() cache.Cache { return cp.mgr.GetCache() }

// Roots returns the trust bundle (PEM) the control plane publishes: the roots of its own
// certificate, then the retiring ones (see identity.TrustRoots).
func (cp *ControlPlane) Roots() []string { return cp.trust.Roots() }

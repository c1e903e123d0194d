// Package ztunnel is the node L4 proxy of the mesh. It serves the pods the CNI node agent
// hands over (package dataplane/handoff): in each pod's network namespace it listens on 15001
// (captured outbound), 15006 (captured plaintext inbound) and 15008 (HBONE inbound), routes
// outbound connections (package routing) over pooled HBONE tunnels to the destination's
// ztunnel or waypoint, authorizes inbound ones (package authz) and connects them to the app.
// Configuration comes from the control plane over delta xDS (packages xdsclient and state),
// certificates from the certificate service (package identity).
package ztunnel

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"sort"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"

	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/dataplane/handoff"
	"github.com/ambientmesh/ambient-operator/dataplane/hbone"
	"github.com/ambientmesh/ambient-operator/dataplane/identity"
	"github.com/ambientmesh/ambient-operator/dataplane/xdsclient"
	"github.com/ambientmesh/ambient-operator/dataplane/ztunnel/inpod"
	"github.com/ambientmesh/ambient-operator/dataplane/ztunnel/metrics"
	"github.com/ambientmesh/ambient-operator/dataplane/ztunnel/routing"
	"github.com/ambientmesh/ambient-operator/dataplane/ztunnel/state"
)

// Config configures a Ztunnel. Zero durations and empty addresses take the defaults noted.
type Config struct {
	// Node is this node's name (sent to the control plane).
	Node string
	// TrustDomain of workloads that name none (default cluster.local).
	TrustDomain string

	// XDSAddress of the control plane's delta ADS; empty: the caller feeds Store itself.
	XDSAddress     string
	XDSDialOptions []grpc.DialOption
	XDSCallOptions []grpc.CallOption

	// CA issues workload certificates; Token returns ztunnel's projected SA token.
	CA      pb.CertificateServiceClient
	Token   identity.TokenSource
	CertTTL time.Duration // default 24h

	// HandoffSocket is where the node agent connects; empty: pods are added with ServePod.
	HandoffSocket string
	Ports         inpod.Ports // default 15001/15006/15008

	// AdminAddress (default 127.0.0.1:15000), MetricsAddress (default :15020) and
	// ReadinessAddress (default :15021); "-" disables one.
	AdminAddress, MetricsAddress, ReadinessAddress string

	// LazyStartTimeout bounds how long a connection waits for its workload's configuration
	// and certificate (default 10s).
	LazyStartTimeout time.Duration
	// HandoverGrace is how long a stopping ztunnel keeps accepting after releasing the
	// hand-off socket, so that its successor gets the pods first (default 2s).
	HandoverGrace time.Duration
	// DrainPeriod bounds how long a stopping ztunnel waits for open connections (default 30s).
	DrainPeriod time.Duration

	// DisableSpareSockets turns off the spare in-pod sockets (inpod.Manager), a
	// performance device that is on by default (docs/performance.md).
	DisableSpareSockets bool

	Log logr.Logger
}

func (c *Config) setDefaults() {
	if c.TrustDomain == "" {
		c.TrustDomain = "cluster.local"
	}
	if c.Ports == (inpod.Ports{}) {
		c.Ports = inpod.DefaultPorts
	}
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&c.AdminAddress, "127.0.0.1:15000")
	def(&c.MetricsAddress, ":15020")
	def(&c.ReadinessAddress, ":15021")
	defDur := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	defDur(&c.LazyStartTimeout, 10*time.Second)
	defDur(&c.HandoverGrace, 2*time.Second)
	defDur(&c.DrainPeriod, 30*time.Second)
	if c.Log.GetSink() == nil {
		c.Log = logr.Discard()
	}
}

// Ztunnel is one node proxy.
type Ztunnel struct {
	cfg       Config
	Store     *state.Store
	Identity  *identity.Manager
	Pods      *inpod.Manager
	Metrics   *metrics.Metrics
	XDS       *xdsclient.Client
	handoff   *handoff.Server
	router    *routing.Router
	conns     *registry
	roots     hbone.RootsSource
	log       logr.Logger
	draining  chan struct{} // closed when the drain starts (not ready any more)
	drainOne  sync.Once
	serversMu sync.Mutex
	servers   map[string]*podServer // per pod uid: GOAWAY when draining, pool stats
}

// New assembles a ztunnel; Run starts it.
func New(cfg Config) (*Ztunnel, error) {
	cfg.setDefaults()
	if cfg.CA == nil || cfg.Token == nil {
		return nil, errors.New("ztunnel: Config.CA and Config.Token are required")
	}
	z := &Ztunnel{cfg: cfg, Store: state.New(), Metrics: metrics.New(), log: cfg.Log, draining: make(chan struct{}), servers: map[string]*podServer{}}
	z.Identity = identity.NewManager(identity.Config{CA: cfg.CA, Token: cfg.Token, TTL: cfg.CertTTL, Log: cfg.Log.WithName("identity")})
	// The control plane's trust bundle wins; before it arrives, the roots the CA returned.
	z.roots = hbone.RootsFunc(func() *x509.CertPool {
		if r := z.Store.Roots(); r != nil {
			return r
		}
		return z.Identity.Roots()
	})
	z.router = &routing.Router{Lookup: z.Store, TrustDomain: cfg.TrustDomain, Pick: rand.IntN}
	z.conns = newRegistry(z.Metrics, cfg.Log.WithName("conns"))
	z.Pods = inpod.NewManager(z, cfg.Ports, cfg.Log.WithName("inpod"))
	z.Pods.DisableSpareSockets = cfg.DisableSpareSockets
	z.Store.OnChange(func(typeURL string) {
		if typeURL == pb.AuthorizationTypeURL || typeURL == pb.WorkloadTypeURL {
			go z.conns.recheckAll()
		}
	})
	if cfg.XDSAddress != "" {
		z.XDS = xdsclient.New(cfg.XDSAddress, z.Store, xdsclient.Options{
			TypeURLs:    pb.TypeURLs,
			Node:        &corev3.Node{Id: "ztunnel~" + cfg.Node, Cluster: "ztunnel"},
			DialOptions: cfg.XDSDialOptions,
			CallOptions: cfg.XDSCallOptions,
			Log:         cfg.Log.WithName("xds"),
		})
		z.Metrics.Registry.MustRegister(z.XDS) // ambientmesh_xds_config_behind, ambientmesh_xds_client_nacks_total
	}
	if cfg.HandoffSocket != "" {
		z.handoff = &handoff.Server{Workloads: z.Pods, Log: cfg.Log}
	}
	return z, nil
}

// Ready reports whether the ztunnel has its configuration, level with the control
// plane's (not behind after rejecting some of it), and (with a hand-off socket) the node
// agent's snapshot of pods.
func (z *Ztunnel) Ready() error {
	select {
	case <-z.draining:
		return errors.New("draining")
	default:
	}
	if !z.Store.Synced(pb.TypeURLs...) {
		return errors.New("waiting for configuration from the control plane")
	}
	if z.XDS != nil {
		if behind := z.XDS.Behind(); len(behind) > 0 {
			types := slices.Sorted(maps.Keys(behind))
			return fmt.Errorf("configuration behind the control plane: rejected %s: %s", types[0], behind[types[0]])
		}
	}
	if z.handoff != nil && z.handoff.SnapshotsReceived() == 0 {
		return errors.New("waiting for the node agent's snapshot of pods")
	}
	return nil
}

// Run serves until ctx ends, then drains: it releases the hand-off socket, keeps accepting
// for HandoverGrace, stops accepting, waits up to DrainPeriod for open connections, and
// closes the rest.
func (z *Ztunnel) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait() // runs last: after stopBG ended the goroutines
	bg, stopBG := context.WithCancel(context.Background())
	defer stopBG()
	goRun := func(fn func()) { wg.Add(1); go func() { defer wg.Done(); fn() }() }

	httpCtx, stopHTTP := context.WithCancel(bg)
	defer stopHTTP()
	z.serveHTTP(httpCtx)
	if z.XDS != nil {
		goRun(func() { _ = z.XDS.Run(bg) })
	}
	hctx, stopHandoff := context.WithCancel(bg)
	defer stopHandoff()
	if z.handoff != nil {
		ln, err := handoff.Listen(z.cfg.HandoffSocket)
		if err != nil {
			return err
		}
		goRun(func() {
			if err := z.handoff.Serve(hctx, ln); err != nil {
				z.log.Error(err, "hand-off server stopped")
			}
		})
	}
	z.log.Info("ztunnel started", "node", z.cfg.Node)
	<-ctx.Done()

	z.log.Info("draining", "handoverGrace", z.cfg.HandoverGrace, "drainPeriod", z.cfg.DrainPeriod)
	z.drainOne.Do(func() { close(z.draining) })
	stopHTTP()    // free the ports for our successor
	stopHandoff() // the node agent reconnects, to our successor if there is one
	time.Sleep(z.cfg.HandoverGrace)
	// Our listeners close (queued connections move to our successor's) and HBONE clients
	// get GOAWAY, so their next streams open connections to the successor; open streams
	// finish.
	z.Pods.StopAccepting()
	z.goAway(bg)
	select {
	case <-z.conns.waitIdle():
	case <-time.After(z.cfg.DrainPeriod):
		z.log.Info("drain period over, closing remaining connections", "open", z.conns.count())
	}
	z.Pods.Close()
	return nil
}

// serveHTTP serves the admin, metrics and readiness endpoints until ctx ends. A port still
// held by the ztunnel we replace is retried until that one releases it (it does so as it
// starts draining), without delaying anything else.
func (z *Ztunnel) serveHTTP(ctx context.Context) {
	for _, s := range []struct {
		addr    string
		handler http.Handler
	}{
		{z.cfg.AdminAddress, z.AdminHandler()},
		{z.cfg.MetricsAddress, z.MetricsHandler()},
		{z.cfg.ReadinessAddress, z.ReadinessHandler()},
	} {
		if s.addr == "-" {
			continue
		}
		go func() {
			var lc net.ListenConfig
			for {
				ln, err := lc.Listen(ctx, "tcp", s.addr)
				if err == nil {
					srv := &http.Server{Handler: s.handler, ReadHeaderTimeout: 10 * time.Second}
					go func() { <-ctx.Done(); _ = srv.Close() }()
					_ = srv.Serve(ln)
					return
				}
				z.log.V(1).Info("cannot listen yet, retrying", "address", s.addr, "error", err.Error())
				select {
				case <-ctx.Done():
					return
				case <-time.After(200 * time.Millisecond):
				}
			}
		}()
	}
}

func (z *Ztunnel) trackServer(uid string, p *podServer) {
	z.serversMu.Lock()
	defer z.serversMu.Unlock()
	z.servers[uid] = p
}

func (z *Ztunnel) untrackServer(uid string) {
	z.serversMu.Lock()
	defer z.serversMu.Unlock()
	delete(z.servers, uid)
}

// goAway starts a graceful shutdown of every pod's HBONE server.
func (z *Ztunnel) goAway(ctx context.Context) {
	z.serversMu.Lock()
	defer z.serversMu.Unlock()
	for _, p := range z.servers {
		go func() { _ = p.hbone.Shutdown(ctx) }()
	}
}

// poolStats returns each pod's HBONE client pool statistics, by namespace/name.
func (z *Ztunnel) poolStats() map[string]hbone.PoolStats {
	z.serversMu.Lock()
	defer z.serversMu.Unlock()
	out := make(map[string]hbone.PoolStats, len(z.servers))
	for _, p := range z.servers {
		out[p.pod.Namespace+"/"+p.pod.Name] = p.pool.Stats()
	}
	return out
}

// servedPods lists the pods being served, ordered by namespace/name.
func (z *Ztunnel) servedPods() []*inpod.Pod {
	z.serversMu.Lock()
	defer z.serversMu.Unlock()
	out := make([]*inpod.Pod, 0, len(z.servers))
	for _, p := range z.servers {
		out = append(out, p.pod)
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Namespace+"/"+out[i].Name < out[j].Namespace+"/"+out[j].Name
	})
	return out
}

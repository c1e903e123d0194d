package waypoint

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"slices"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"

	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/dataplane/hbone"
	"github.com/ambientmesh/ambient-operator/dataplane/identity"
	"github.com/ambientmesh/ambient-operator/dataplane/waypoint/jwt"
	"github.com/ambientmesh/ambient-operator/dataplane/waypoint/telemetry"
	"github.com/ambientmesh/ambient-operator/dataplane/waypoint/upstream"
	"github.com/ambientmesh/ambient-operator/dataplane/xdsclient"
	"github.com/ambientmesh/ambient-operator/internal/spiffe"
)

// Config configures a Waypoint. Zero durations and empty addresses take the defaults noted.
type Config struct {
	// Namespace and Name of the Waypoint this proxy serves, and the pod it runs in: they
	// make its xDS node (cluster "waypoint/<namespace>/<name>", id "<pod>.<namespace>").
	Namespace, Name, PodName string
	// Identity is the waypoint's own SPIFFE ID (its service account): it terminates HBONE
	// and dials endpoints with it.
	Identity spiffe.ID
	// XDSAddress of the control plane's delta ADS; empty: the caller feeds Handler itself.
	XDSAddress     string
	XDSDialOptions []grpc.DialOption
	XDSCallOptions []grpc.CallOption
	// CA issues the waypoint's certificate; Token returns its projected service-account
	// token. Certs and Roots replace both (tests with a fixed certificate). Either way,
	// the trust bundle the control plane sends (the Secret ROOTCA) replaces these roots
	// once it arrives.
	CA      pb.CertificateServiceClient
	Token   identity.TokenSource
	CertTTL time.Duration
	Certs   hbone.CertSource
	Roots   hbone.RootsSource
	// HBONEAddress (default :15008), AdminAddress (default 127.0.0.1:15000), MetricsAddress
	// (default :15020) and ReadinessAddress (default :15021); "-" disables one.
	HBONEAddress, AdminAddress, MetricsAddress, ReadinessAddress string
	// DrainPeriod bounds how long a stopping waypoint lets open requests finish (default 5s).
	DrainPeriod time.Duration
	// MinDrainPeriod is how long, at the start of the drain, the waypoint still accepts
	// new connections and requests (answering HTTP/1.1 with "Connection: close"): the
	// ztunnels learn that the pod is terminating only after it got SIGTERM, and until
	// then they keep sending it new connections. Zero: stop accepting at once (tests).
	MinDrainPeriod time.Duration
	// AccessLog receives one JSON line per request (nil: none).
	AccessLog io.Writer
	// HTTPClient fetches remote JWKS (default: a 5 s timeout client).
	HTTPClient *http.Client
	Log        logr.Logger
}

func (c *Config) setDefaults() {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&c.HBONEAddress, ":15008")
	def(&c.AdminAddress, "127.0.0.1:15000")
	def(&c.MetricsAddress, ":15020")
	def(&c.ReadinessAddress, ":15021")
	if c.DrainPeriod == 0 {
		c.DrainPeriod = 5 * time.Second
	}
	if c.Log.GetSink() == nil {
		c.Log = logr.Discard()
	}
}

// Waypoint is the L7 proxy: it terminates HBONE, serves HTTP (or relays TCP) per the
// Envoy xDS the control plane sends, and opens HBONE to the chosen endpoints.
type Waypoint struct {
	cfg        Config
	log        logr.Logger
	store      *store
	clusters   *upstream.Set
	identity   *identity.Manager // nil when Config.Certs is set
	certs      hbone.CertSource
	roots      hbone.RootsSource
	pool       *hbone.Pool
	hbone      *hbone.Server
	xds        *xdsclient.Client
	dialer     *dialer
	transports *transports
	proxy      *httputil.ReverseProxy
	httpConns  *httpListener
	httpServer *http.Server
	metrics    *telemetry.Metrics
	accessLog  *telemetry.AccessLog
	logBuffer  *logBuffer    // nil without an access log
	mirrors    chan struct{} // bounds mirrored requests in flight

	draining chan struct{}
	drainOne sync.Once
}

// New builds a Waypoint; Run starts it.
func New(cfg Config) (*Waypoint, error) {
	cfg.setDefaults()
	if cfg.Identity.IsZero() {
		return nil, errors.New("waypoint: Identity is required")
	}
	w := &Waypoint{cfg: cfg, log: cfg.Log, mirrors: make(chan struct{}, 64), draining: make(chan struct{})}
	w.certs = cfg.Certs
	certRoots := cfg.Roots
	if (w.certs == nil) != (certRoots == nil) {
		return nil, errors.New("waypoint: Certs and Roots go together")
	}
	if w.certs == nil {
		if cfg.CA == nil || cfg.Token == nil {
			return nil, errors.New("waypoint: CA and Token (or Certs and Roots) are required")
		}
		w.identity = identity.NewManager(identity.Config{CA: cfg.CA, Token: cfg.Token, TTL: cfg.CertTTL, Log: cfg.Log.WithName("identity")})
		w.identity.Acquire(cfg.Identity)
		w.certs, certRoots = w.identity, hbone.RootsFunc(w.identity.Roots)
	}
	w.clusters = upstream.NewSet(upstream.Options{Rand: rand.IntN})
	w.store = newStore(w.clusters, jwt.Options{HTTPClient: cfg.HTTPClient, Log: cfg.Log.WithName("jwt")}, cfg.Log.WithName("xds"))
	// The mesh's trust bundle follows a root rotation: the control plane sends the old and
	// the new root in ROOTCA as soon as it has them, and drops a root once nothing it
	// signed can still be valid. Only until the first ROOTCA arrives do the roots of the
	// certificate answer (or Config.Roots) stand in for it.
	w.roots = hbone.RootsFunc(func() *x509.CertPool {
		if roots := w.store.snapshot().trustRoots; roots != nil {
			return roots
		}
		return certRoots.Roots()
	})
	w.metrics = telemetry.NewMetrics(nil)
	if cfg.AccessLog != nil {
		w.logBuffer = newLogBuffer(cfg.AccessLog)
		w.accessLog = telemetry.NewAccessLog(w.logBuffer)
	}
	pool, err := hbone.NewPool(hbone.PoolConfig{Certs: w.certs, Roots: w.roots})
	if err != nil {
		return nil, err
	}
	w.pool = pool
	w.dialer = &dialer{self: cfg.Identity, pool: pool}
	w.transports = &transports{dialer: w.dialer, idle: 90 * time.Second, m: map[transportKey]*pooledTransport{}}
	w.proxy = w.newReverseProxy()
	w.httpConns = newHTTPListener()
	// net/http tells an h2c (prior knowledge) connection from an HTTP/1.1 one by its
	// first bytes, and serves both.
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	w.httpServer = &http.Server{
		Protocols:         &protocols,
		Handler:           w,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       5 * time.Minute,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if pc, ok := c.(*peekedConn); ok {
				return context.WithValue(ctx, downstreamKey{}, pc.d)
			}
			return ctx
		},
		ErrorLog: nil,
	}
	w.hbone, err = hbone.NewServer(hbone.ServerConfig{Identity: cfg.Identity, Certs: w.certs, Roots: w.roots, Handler: w,
		MaxConcurrentStreams: 1000, Logger: cfg.Log.WithName("hbone")})
	if err != nil {
		return nil, err
	}
	if cfg.XDSAddress != "" {
		w.xds = xdsclient.New(cfg.XDSAddress, w.store, xdsclient.Options{
			TypeURLs:    TypeURLs,
			Node:        &corev3.Node{Id: cfg.PodName + "." + cfg.Namespace, Cluster: NodeCluster(cfg.Namespace, cfg.Name)},
			DialOptions: cfg.XDSDialOptions, CallOptions: cfg.XDSCallOptions,
			Log: cfg.Log.WithName("xds"),
		})
		// ambientmesh_xds_config_behind and ambientmesh_xds_client_nacks_total
		w.metrics.Registry().MustRegister(w.xds)
	}
	return w, nil
}

// NodeCluster is the xDS node cluster a waypoint announces: the control plane sends a
// waypoint only the resources of the Waypoint it names (and checks its identity).
func NodeCluster(namespace, name string) string { return "waypoint/" + namespace + "/" + name }

// Handler is where xDS updates go when the caller runs its own client (tests).
func (w *Waypoint) Handler() xdsclient.Handler { return w.store }

// Metrics exposes the waypoint's metrics (tests, benchmarks).
func (w *Waypoint) Metrics() *telemetry.Metrics { return w.metrics }

// Serve runs the HBONE server on l until ctx ends (for tests that bring a listener).
func (w *Waypoint) Serve(l net.Listener) error { return w.hbone.Serve(l) }

// Run serves until ctx ends, then drains: not ready, GOAWAY to HBONE clients, open
// requests finish within DrainPeriod, then everything closes.
func (w *Waypoint) Run(ctx context.Context) error {
	runCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	goRun := func(name string, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, hbone.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
				errs <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	if w.xds != nil {
		goRun("xds", func() error { return w.xds.Run(runCtx) })
	}
	goRun("http", func() error { return w.httpServer.Serve(w.httpConns) })
	var servers []*http.Server
	for _, s := range []struct {
		name, addr string
		h          http.Handler
	}{
		{"admin", w.cfg.AdminAddress, w.AdminHandler()},
		{"metrics", w.cfg.MetricsAddress, w.metricsHandler()},
		{"readiness", w.cfg.ReadinessAddress, w.readinessHandler()},
	} {
		if s.addr == "-" {
			continue
		}
		l, err := net.Listen("tcp", s.addr)
		if err != nil {
			return fmt.Errorf("%s %s: %w", s.name, s.addr, err)
		}
		srv := &http.Server{Handler: s.h, ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, srv)
		goRun(s.name, func() error { return srv.Serve(l) })
	}
	if w.cfg.HBONEAddress != "-" {
		l, err := net.Listen("tcp", w.cfg.HBONEAddress)
		if err != nil {
			return fmt.Errorf("hbone %s: %w", w.cfg.HBONEAddress, err)
		}
		goRun("hbone", func() error { return w.hbone.Serve(l) })
	}
	go func() {
		t := time.NewTicker(30 * time.Second)
		defer t.Stop()
		flushTicker := time.NewTicker(time.Second)
		defer flushTicker.Stop()
		flush := flushTicker.C
		for {
			select {
			case <-runCtx.Done():
				return
			case now := <-t.C:
				w.transports.sweep(now)
			case <-flush:
				if w.logBuffer != nil {
					w.logBuffer.Flush()
				}
			}
		}
	}()
	w.log.Info("waypoint started", "identity", w.cfg.Identity.String(), "hbone", w.cfg.HBONEAddress, "xds", w.cfg.XDSAddress)
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errs:
	}
	w.drain()
	for _, srv := range servers {
		srv.Close()
	}
	cancel()
	w.pool.Close()
	w.transports.closeAll()
	wg.Wait()
	if w.logBuffer != nil {
		w.logBuffer.Flush()
	}
	return runErr
}

// drain stops taking new work and lets open requests finish within DrainPeriod. For
// MinDrainPeriod first it keeps serving new connections too, so that no client the
// mesh still sends here is refused, while every HTTP/1.1 response closes its connection
// (see ServeHTTP) and readiness reports draining.
func (w *Waypoint) drain() {
	w.drainOne.Do(func() { close(w.draining) })
	w.log.Info("draining", "period", w.cfg.DrainPeriod, "accepting", min(w.cfg.MinDrainPeriod, w.cfg.DrainPeriod))
	ctx, cancel := context.WithTimeout(context.Background(), w.cfg.DrainPeriod)
	defer cancel()
	accepting := time.NewTimer(w.cfg.MinDrainPeriod)
	select {
	case <-accepting.C:
	case <-ctx.Done():
		accepting.Stop()
	}
	// Shutdown fails only when the drain period ends first; the Close calls below then end
	// what is still open.
	var wg sync.WaitGroup
	wg.Go(func() { _ = w.hbone.Shutdown(ctx) })
	wg.Go(func() { _ = w.httpServer.Shutdown(ctx) })
	wg.Wait()
	w.hbone.Close()
	w.httpServer.Close()
}

func (w *Waypoint) isDraining() bool {
	select {
	case <-w.draining:
		return true
	default:
		return false
	}
}

// Ready reports whether the waypoint can serve: configuration received for every type
// and its certificate issued, and not draining.
func (w *Waypoint) Ready(ctx context.Context) error {
	if w.isDraining() {
		return errors.New("draining")
	}
	if w.xds != nil {
		select {
		case <-w.xds.Synced():
		default:
			return errors.New("waiting for the configuration (xDS)")
		}
		if behind := w.xds.Behind(); len(behind) > 0 {
			types := slices.Sorted(maps.Keys(behind))
			return fmt.Errorf("configuration behind the control plane: rejected %s: %s", types[0], behind[types[0]])
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := w.certs.Certificate(cctx, w.cfg.Identity); err != nil {
		return fmt.Errorf("certificate: %w", err)
	}
	return nil
}

// Certificate returns the waypoint's own certificate (for its client certificate on the
// control-plane connection).
func (w *Waypoint) Certificate(ctx context.Context) (*tls.Certificate, error) {
	return w.certs.Certificate(ctx, w.cfg.Identity)
}

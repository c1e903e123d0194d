package waypoint

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ambientmesh/ambient-operator/dataplane/waypoint/jwt"
	"github.com/ambientmesh/ambient-operator/dataplane/waypoint/rbac"
	"github.com/ambientmesh/ambient-operator/dataplane/waypoint/route"
	"github.com/ambientmesh/ambient-operator/dataplane/waypoint/telemetry"
	"github.com/ambientmesh/ambient-operator/dataplane/waypoint/upstream"
)

// maxReplayBody is the largest request body kept in memory so that a retry or a mirror
// can send it again (Envoy's default per-request buffer limit is of the same order). A
// larger or streamed body (gRPC streams) is sent once, without retries or mirrors.
const maxReplayBody = 1 << 20

// maxInlineBody: a body of known length up to this size is read before the request goes
// upstream even without retries or mirrors, so that h1Client writes the headers and the
// body in one go (one HTTP/2 frame and TLS record on the HBONE stream). http.Transport
// cannot: the reverse proxy wraps the body, and net/http flushes the headers before a
// body it does not know to be in memory.
const maxInlineBody = 64 << 10

// exchange is one downstream request on its way through the filters and the router; the
// router fills in what telemetry reports. It holds the response writer and the request
// body wrappers too, so that a request costs one allocation for all three.
type exchange struct {
	d        *downstream
	start    time.Time
	route    *route.Route
	weighted *route.WeightedCluster
	cluster  *upstream.Cluster
	retry    *route.RetryPolicy
	body     []byte // the buffered request body, when replayable
	replay   bool
	// bodyBuffer holds body when it came from the pool; bodyShared: a mirror or
	// http.Transport got body and may read it after the request ends, so the buffer
	// is not recycled.
	bodyBuffer *[]byte
	bodyShared bool
	h2         bool
	direct     bool // sent by proxyDirect, not ReverseProxy

	// interimMu guards interimDone: informational answers are passed on until the
	// final answer is in (see interim).
	interimMu   sync.Mutex
	interimDone bool

	sw              statusWriter
	received        countingBody // the request body as it arrived, for istio_request_bytes
	flags           string
	policy          string // the RBAC policy that denied
	host            *upstream.Host
	attempts        int
	traceID, spanID string
	upstart         time.Time
	upstreamTime    time.Duration // until the upstream's response headers
	attrs           rbac.Attributes
}

type exchangeKey struct{}

func exchangeFrom(ctx context.Context) *exchange {
	x, _ := ctx.Value(exchangeKey{}).(*exchange)
	return x
}

// newReverseProxy is the router's last step: net/http's ReverseProxy copies the request
// and the response (hop-by-hop headers removed, trailers and streaming kept), over the
// waypoint's RoundTripper, which picks the endpoint and retries. A response of unknown
// length (streamed, gRPC) is flushed at every write; one of known length goes out when
// the handler ends, right after its body is copied. FlushInterval must stay 0: a
// negative one makes ReverseProxy flush the headers at once from a timer, which can
// split a gRPC trailers-only answer (an error status) into headers and an empty end of
// stream, and the client then loses the status.
func (w *Waypoint) newReverseProxy() *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = pr.In.Host // replaced by the endpoint's address per try
			pr.Out.Host = pr.In.Host
		},
		Transport:     roundTripperFunc(w.roundTrip),
		FlushInterval: 0,
		ModifyResponse: func(resp *http.Response) error {
			if x := exchangeFrom(resp.Request.Context()); x != nil {
				x.upstreamTime = time.Since(x.upstart)
				x.route.ApplyResponse(resp.Header, x.weighted)
			}
			return nil
		},
		ErrorHandler: w.upstreamError,
		BufferPool:   copyBuffers{},
		ErrorLog:     nil,
	}
}

// copyBuffers reuses the reverse proxy's response copy buffers (otherwise one new 32 KiB
// buffer per response, and the garbage collection that follows).
type copyBuffers struct{}

var copyBufferPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (copyBuffers) Get() []byte  { return *copyBufferPool.Get().(*[]byte) }
func (copyBuffers) Put(b []byte) { copyBufferPool.Put(&b) }

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// ServeHTTP runs one request through the listener's filters — jwt_authn, RBAC (DENY,
// then ALLOW), fault — and the router.
func (w *Waypoint) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	d := downstreamFrom(r.Context())
	if d == nil {
		http.Error(rw, "no downstream", http.StatusInternalServerError)
		return
	}
	x := &exchange{d: d, start: time.Now(), h2: r.ProtoMajor == 2, flags: "-"}
	if !x.h2 && w.isDraining() {
		// The client opens its next request's connection elsewhere (HTTP/2 clients get
		// GOAWAY when the waypoint stops accepting).
		rw.Header().Set("Connection", "close")
	}
	x.sw.ResponseWriter = rw
	sw := &x.sw
	if r.Body != nil {
		x.received.ReadCloser = r.Body
		r.Body = &x.received
	}
	x.traceID, x.spanID = telemetry.Propagate(r.Header)
	// The access log names the request as the client sent it, before any rewrite.
	method, authority, path := r.Method, r.Host, r.URL.RequestURI()
	w.handle(sw, r, x)
	w.observe(sw, r, x, method, authority, path)
}

func (w *Waypoint) handle(rw *statusWriter, r *http.Request, x *exchange) {
	snap := w.store.snapshot()
	l := snap.listeners[x.d.listener.name]
	if l == nil || l.http == nil {
		l = x.d.listener // removed since the connection opened: finish with what it had
	}
	chain := l.http
	claims, err := chain.authenticate(r)
	if err != nil {
		var je *jwt.Error
		if errors.As(err, &je) {
			if je.WWWAuthenticate != "" {
				rw.Header().Set("WWW-Authenticate", je.WWWAuthenticate)
			}
			w.metrics.JWTFailed(je.Status)
			plain(rw, je.Status, je.Reason)
			return
		}
		plain(rw, http.StatusUnauthorized, err.Error())
		return
	}
	dec := w.authorize(chain, r, x, claims)
	if !dec.Allowed {
		x.policy = dec.Policy
		x.flags = telemetry.FlagRBACAccessDenied
		w.metrics.RBACDenied(l.name)
		plain(rw, http.StatusForbidden, "RBAC: access denied")
		return
	}
	if len(chain.rbac) > 0 {
		w.metrics.RBACAllowed(l.name)
	}
	table := snap.routes[chain.routeConfig]
	if table == nil {
		x.flags = telemetry.FlagNoRoute
		plain(rw, http.StatusNotFound, "route configuration "+chain.routeConfig+" not found")
		return
	}
	rt := table.Match(r)
	if rt == nil {
		x.flags = telemetry.FlagNoRoute
		plain(rw, http.StatusNotFound, "no route")
		return
	}
	x.route = rt
	if chain.fault && rt.Fault != nil && w.injectFault(rw, r, rt.Fault, x) {
		return
	}
	switch {
	case rt.Redirect != nil:
		status, location := rt.Redirect.Response(r)
		rt.ResponseHeaders.Apply(rw.Header())
		rw.Header().Set("Location", location)
		rw.WriteHeader(status)
	case rt.Direct != nil:
		rt.ResponseHeaders.Apply(rw.Header())
		rw.WriteHeader(rt.Direct.Status)
		_, _ = rw.Write(rt.Direct.Body) // a client gone away is the server's business
	case rt.Forward != nil:
		w.forward(rw, r, rt, x)
	}
}

const jwtFilterName = "envoy.filters.http.jwt_authn"

// authorize runs the listener's RBAC filters (none: allowed) on the request, with the
// JWT claims as the jwt_authn filter's metadata.
func (w *Waypoint) authorize(chain *httpChain, r *http.Request, x *exchange, claims map[string]any) rbac.Decision {
	if len(chain.rbac) == 0 {
		return rbac.Decision{Allowed: true}
	}
	attrs := &x.attrs // part of the exchange's allocation
	*attrs = rbac.Attributes{
		Principal: x.d.principal, RemoteIP: x.d.clientIP, DirectRemoteIP: x.d.direct,
		DestinationIP: x.d.target.Addr(), DestinationPort: x.d.target.Port(),
		Method: r.Method, Host: r.Host, Path: r.URL.RequestURI(), Scheme: "http", Header: r.Header,
	}
	if claims != nil {
		attrs.Metadata = map[string]map[string]any{jwtFilterName: claims}
	}
	return rbac.EvaluateChain(attrs, chain.rbac...)
}

func (c *httpChain) authenticate(r *http.Request) (map[string]any, error) {
	if c.jwt == nil {
		return nil, nil
	}
	return c.jwt.Authenticate(r.Context(), r)
}

// injectFault delays and/or aborts the request as the route's fault says; true when it
// answered.
func (w *Waypoint) injectFault(rw *statusWriter, r *http.Request, f *route.Fault, x *exchange) bool {
	delay, abort := f.Decide(rand.Uint32N)
	if delay > 0 {
		x.flags = telemetry.FlagDelayInjected
		w.metrics.DelayInjected()
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return true
		}
	}
	if abort == 0 {
		return false
	}
	x.flags = telemetry.FlagFaultInjected
	w.metrics.AbortInjected()
	body := f.AbortBody
	if body == "" {
		body = "fault filter abort"
	}
	plain(rw, abort, body)
	return true
}

// forward sends the request to the route's cluster (through the reverse proxy and the
// retrying round trip) and fires its mirrors.
func (w *Waypoint) forward(rw *statusWriter, r *http.Request, rt *route.Route, x *exchange) {
	fwd := rt.Forward
	x.weighted = fwd.PickCluster(rand.Uint64N)
	rt.ApplyRequest(r, x.weighted)
	x.cluster = w.clusters.Cluster(x.weighted.Name)
	if x.cluster == nil {
		x.flags = telemetry.FlagNoClusterFound
		plain(rw, fwd.ClusterNotFoundStatus, "cluster "+x.weighted.Name+" not found")
		return
	}
	if err := x.cluster.AdmitRequest(); err != nil {
		x.flags = telemetry.FlagUpstreamOverflow
		plain(rw, http.StatusServiceUnavailable, "upstream overflow")
		return
	}
	defer x.cluster.EndRequest()
	x.retry = fwd.Retry
	if x.retry != nil || len(fwd.Mirrors) > 0 || r.ContentLength > 0 && r.ContentLength <= maxInlineBody {
		x.bufferBody(r)
		defer x.recycleBody()
	}
	x.direct = w.goesDirect(r, x)
	for _, m := range fwd.Mirrors {
		if (x.replay || r.Body == nil || r.Body == http.NoBody) && rand.Uint32N(1_000_000) < m.PerMillion {
			x.bodyShared = true
			w.mirror(r, x.body, m)
		}
	}
	ctx := context.WithValue(r.Context(), exchangeKey{}, x)
	if fwd.Timeout != route.NoTimeout {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, fwd.Timeout)
		defer cancel()
	}
	x.upstart = time.Now()
	if x.direct {
		w.proxyDirect(rw, r, ctx, x)
		return
	}
	w.proxy.ServeHTTP(rw, r.WithContext(ctx))
}

// goesDirect says whether proxyDirect, rather than ReverseProxy, sends the request: an
// HTTP/1.1 request that h1Client can carry (ReverseProxy keeps HTTP/2, upgrades,
// streamed bodies and 100-continue, and every request while the benchmark's
// transport-only switch is on).
func (w *Waypoint) goesDirect(r *http.Request, x *exchange) bool {
	inMemory := r.ContentLength == 0 || x.body != nil // (r.Body is wrapped: not a test)
	return !x.h2 && !w.transports.transportOnly.Load() && inMemory && oneExchange(r)
}

// bufferBody reads a request body of known, small size into memory (x.body, x.replay)
// so that it can be sent more than once; each try sends it from there (see send). When
// it cannot (the client sent less than it announced), r.Body is what arrived, sent once.
func (x *exchange) bufferBody(r *http.Request) {
	x.replay = true
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return
	}
	x.replay = false
	if r.ContentLength < 0 || r.ContentLength > maxReplayBody {
		return
	}
	var b []byte
	var err error
	if r.ContentLength <= maxInlineBody {
		// Read into a buffer of the announced size: no growing. Larger bodies grow as
		// they arrive, so that a client announcing a megabyte does not get it allocated.
		x.bodyBuffer = getBodyBuffer(int(r.ContentLength))
		b = *x.bodyBuffer
		var n int
		n, err = io.ReadFull(r.Body, b)
		b = b[:n]
	} else {
		b, err = io.ReadAll(io.LimitReader(r.Body, maxReplayBody+1))
	}
	if err != nil || int64(len(b)) != r.ContentLength {
		// The client went away or lied about the length: send what there is, once.
		r.Body = io.NopCloser(bytes.NewReader(b))
		x.bodyShared = true
		return
	}
	x.body, x.replay = b, true
}

// recycleBody hands the body's buffer back to the pool when nothing can read it any
// more: h1Client has written it (its writes are done when its answer is in), no mirror
// or http.Transport has it.
func (x *exchange) recycleBody() {
	if x.bodyBuffer != nil && !x.bodyShared {
		putBodyBuffer(x.bodyBuffer)
	}
	x.bodyBuffer, x.body = nil, nil
}

// roundTrip is the router's upstream step for one request: pick a healthy endpoint of the
// cluster, send, and retry while the route's policy, the cluster's retry budget and the
// route timeout allow. Each try reports its outcome to outlier detection.
func (w *Waypoint) roundTrip(out *http.Request) (*http.Response, error) {
	x := exchangeFrom(out.Context())
	// Retry slots are held until the request is answered, so that the budget counts
	// retries in flight.
	var retrySlots []func()
	defer func() {
		for _, done := range retrySlots {
			done()
		}
	}()
	for try := 0; ; try++ {
		resp, outcome, err := w.try(out, x, try)
		if !w.shouldRetry(x, try, outcome) {
			if try > 0 && x.retry.Retriable(outcome) {
				x.flags = telemetry.FlagUpstreamRetryLimitExceeded
			}
			return resp, err
		}
		done, overBudget := x.cluster.StartRetry()
		if overBudget != nil {
			return resp, err // the last answer stands
		}
		retrySlots = append(retrySlots, done)
		if resp != nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // for reuse; else Close drops the connection
			resp.Body.Close()
		}
		w.metrics.Retried(x.cluster.Name())
		t := time.NewTimer(x.retry.Backoff(try, rand.Int64N))
		select {
		case <-t.C:
		case <-out.Context().Done():
			t.Stop()
			return nil, out.Context().Err()
		}
	}
}

func (w *Waypoint) shouldRetry(x *exchange, try int, o route.Outcome) bool {
	return x.retry != nil && x.replay && try < x.retry.NumRetries && x.retry.Retriable(o)
}

// try sends the request once to one endpoint.
func (w *Waypoint) try(out *http.Request, x *exchange, try int) (*http.Response, route.Outcome, error) {
	host, err := x.cluster.Pick()
	if err != nil {
		x.flags = telemetry.FlagNoHealthyUpstream
		return nil, route.Outcome{}, err
	}
	x.host, x.attempts = host, try+1
	ctx := out.Context()
	var cancel context.CancelFunc
	if x.retry != nil && x.retry.PerTryTimeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, x.retry.PerTryTimeout)
	}
	pool := w.transports.get(transportKey{clientIP: x.d.clientIP, tunnel: host.Tunnel, peer: host.PeerID, h2: x.h2})
	host.Begin()
	resp, err := w.send(ctx, out, x, host, pool)
	o := outcomeOf(resp, err)
	host.End(upstream.Outcome{Status: o.Status, ConnectFailure: o.ConnectFailure, Reset: o.Reset})
	if cancel != nil {
		if err != nil {
			cancel()
		} else {
			resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
		}
	}
	return resp, o, err
}

// trace passes the informational answers http.Transport reports on to the client.
func (x *exchange) trace() *httptrace.ClientTrace {
	return &httptrace.ClientTrace{Got1xxResponse: func(code int, header textproto.MIMEHeader) error {
		return x.interim(code, http.Header(header))
	}}
}

// send sends one try of out to host: with the pool's h1Client when it can carry it,
// else with its RoundTripper on a shallow copy of out addressed to host (the
// transports do not modify requests, so the tries share the headers). A buffered body
// is sent from x.body each time.
func (w *Waypoint) send(ctx context.Context, out *http.Request, x *exchange, host *upstream.Host, pool *pooledTransport) (*http.Response, error) {
	if pool.h1 != nil && !w.transports.transportOnly.Load() && sendsDirect(out, x.body) {
		var interim interimSink
		if x.direct {
			interim = x
		}
		req := out
		if req.Host == "" {
			// An HTTP/1.0 request without Host: http.Transport names the endpoint.
			req = out.WithContext(ctx)
			req.Host = host.AddrString()
		}
		return pool.h1.sendTo(ctx, host.Addr, req, x.body, interim)
	}
	if x.direct {
		// A direct request to an endpoint h1Client does not serve (plain TCP): its
		// informational answers reach the client through the Transport's trace.
		ctx = httptrace.WithClientTrace(ctx, x.trace())
	}
	req := out.WithContext(ctx)
	u := *out.URL
	u.Scheme, u.Host = "http", host.AddrString()
	req.URL = &u
	if x.body != nil {
		x.bodyShared = true // the Transport may still be writing it after the answer
		req.Body = io.NopCloser(bytes.NewReader(x.body))
	} else if x.attempts > 1 {
		req.Body = nil // a retry is only made with a replayable body: here, none
	}
	return pool.rt.RoundTrip(req)
}

func outcomeOf(resp *http.Response, err error) route.Outcome {
	if err == nil {
		return route.Outcome{Status: resp.StatusCode}
	}
	var ce *connectError
	switch {
	case errors.Is(err, upstream.ErrOverflow):
		return route.Outcome{} // refused here, before any endpoint: not retried, not the host's failure
	case errors.As(err, &ce):
		return route.Outcome{ConnectFailure: true}
	}
	return route.Outcome{Reset: true}
}

// cancelOnClose ends a try's per-try timeout once its response body is done.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// upstreamError answers a request whose upstream failed, with Envoy's codes and bodies.
func (w *Waypoint) upstreamError(rw http.ResponseWriter, r *http.Request, err error) {
	x := exchangeFrom(r.Context())
	var ce *connectError
	switch {
	case errors.Is(err, upstream.ErrNoHealthyUpstream):
		x.flags = telemetry.FlagNoHealthyUpstream
		plain(rw, http.StatusServiceUnavailable, "no healthy upstream")
	case errors.Is(err, upstream.ErrOverflow):
		x.flags = telemetry.FlagUpstreamOverflow
		plain(rw, http.StatusServiceUnavailable, "upstream connect error or disconnect/reset before headers. reset reason: overflow")
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(r.Context().Err(), context.DeadlineExceeded):
		x.flags = telemetry.FlagUpstreamRequestTimeout
		plain(rw, http.StatusGatewayTimeout, "upstream request timeout")
	case errors.As(err, &ce):
		x.flags = telemetry.FlagUpstreamConnectionFailure
		plain(rw, http.StatusServiceUnavailable, "upstream connect error or disconnect/reset before headers. reset reason: connection failure")
	case errors.Is(err, context.Canceled):
		x.flags = telemetry.FlagDownstreamConnectionTermination
		rw.WriteHeader(499) // the client went away: nobody reads this
	default:
		x.flags = telemetry.FlagUpstreamRemoteReset
		plain(rw, http.StatusServiceUnavailable, "upstream connect error or disconnect/reset before headers. reset reason: remote reset")
	}
}

// mirror sends a copy of the request to the mirror cluster, fire and forget: it runs on
// its own, its answer is dropped, and when too many mirrors are in flight the copy is
// dropped rather than slowing anything down.
func (w *Waypoint) mirror(r *http.Request, body []byte, m route.Mirror) {
	c := w.clusters.Cluster(m.Cluster)
	if c == nil {
		return
	}
	select {
	case w.mirrors <- struct{}{}:
	default:
		w.metrics.MirrorDropped(m.Cluster)
		return
	}
	d := downstreamFrom(r.Context())
	req := r.Clone(context.WithoutCancel(r.Context()))
	req.RequestURI = ""
	req.URL.Scheme = "http"
	req.Header.Del("Connection")
	switch {
	case m.HostRewrite != "":
		req.Host = m.HostRewrite
	case !m.DisableShadowHostSuffix:
		req.Host = shadowHost(req.Host)
	}
	req.Body = nil
	if body != nil {
		req.Body = io.NopCloser(bytes.NewReader(body))
	}
	go func() {
		defer func() { <-w.mirrors }()
		ctx, cancel := context.WithTimeout(req.Context(), 10*time.Second)
		defer cancel()
		host, err := c.Pick()
		if err != nil {
			return
		}
		req = req.WithContext(ctx)
		req.URL.Host = host.Addr.String()
		host.Begin()
		resp, err := w.transports.get(transportKey{clientIP: d.clientIP, tunnel: host.Tunnel, peer: host.PeerID, h2: r.ProtoMajor == 2}).rt.RoundTrip(req)
		o := outcomeOf(resp, err)
		host.End(upstream.Outcome{Status: o.Status, ConnectFailure: o.ConnectFailure, Reset: o.Reset})
		w.metrics.Mirrored(m.Cluster)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body) // the mirror's answer is dropped
			resp.Body.Close()
		}
	}()
}

// shadowHost appends Envoy's "-shadow" to the host name, before any port.
func shadowHost(host string) string {
	if h, port, ok := strings.Cut(host, ":"); ok && !strings.Contains(port, ":") {
		return h + "-shadow:" + port
	}
	return host + "-shadow"
}

// observe records the request in metrics and the access log.
func (w *Waypoint) observe(sw *statusWriter, r *http.Request, x *exchange, method, authority, path string) {
	status := sw.status
	if status == 0 {
		status = http.StatusOK
	}
	proto := "http"
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
		proto = "grpc"
	}
	labels := w.labels(x.d, x.host, proto)
	labels.ResponseCode = status
	labels.ResponseFlags = x.flags
	if proto == "grpc" {
		labels.GRPCResponseStatus = grpcStatus(sw.Header())
	}
	reqBytes := x.received.n.Load()
	dur := time.Since(x.start)
	w.metrics.ObserveRequest(labels, dur, reqBytes, sw.bytes)
	e := &telemetry.Entry{
		Method: method, Authority: authority, Path: path, Protocol: r.Proto, ResponseCode: status, ResponseFlags: x.flags,
		Duration: dur, Start: x.start, BytesReceived: reqBytes, BytesSent: sw.bytes,
		SourceAddress: x.d.clientAddress, SourcePrincipal: x.d.principal, DestinationService: labels.DestinationService,
		RequestID: r.Header.Get("X-Request-Id"), TraceParent: r.Header.Get("Traceparent"), TraceID: x.traceID, SpanID: x.spanID, UserAgent: r.UserAgent(),
		Attempts: x.attempts, RBACPolicy: x.policy,
	}
	if x.route != nil {
		e.RouteName = x.route.Name
	}
	if x.cluster != nil {
		e.UpstreamCluster = x.cluster.Name()
	}
	if x.host != nil {
		e.UpstreamHost = x.host.AddrString()
		e.UpstreamServiceTime = x.upstreamTime
	}
	w.accessLog.Log(e)
}

// grpcStatus is the grpc-status the client received: a header in a trailers-only
// response, else a trailer, which the reverse proxy sets with http.TrailerPrefix because
// HTTP/2 trailers are not announced.
func grpcStatus(h http.Header) string {
	if s := h.Get("Grpc-Status"); s != "" {
		return s
	}
	return h.Get(http.TrailerPrefix + "Grpc-Status")
}

// plain answers with a text/plain body, as Envoy's local replies do.
func plain(rw http.ResponseWriter, status int, body string) {
	rw.Header().Set("Content-Type", "text/plain")
	rw.Header().Set("Content-Length", strconv.Itoa(len(body)))
	rw.WriteHeader(status)
	_, _ = io.WriteString(rw, body)
}

// statusWriter records the status and body size for telemetry; Unwrap keeps
// http.ResponseController (flush, deadlines) working through it.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 && code >= 200 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	n, err := s.ResponseWriter.Write(p)
	s.bytes += int64(n)
	return n, err
}

func (s *statusWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// countingBody counts request body bytes for istio_request_bytes.
type countingBody struct {
	io.ReadCloser
	n atomic.Int64
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// Package xdsclient is a delta ADS client (envoy.service.discovery.v3
// AggregatedDiscoveryService.DeltaAggregatedResources) for the workload API, usable as a
// library: ztunnel feeds it into its state store, and control-plane tests use it as a real
// client.
//
// It subscribes to every configured type with a wildcard, hands each response to a Handler
// and ACKs it, or NACKs it with the Handler's error (the Handler keeps its last good
// configuration). When the stream breaks it reconnects with exponential backoff and sends
// the versions it holds (initial_resource_versions) so the server only sends what changed.
//
// A NACK leaves the client behind the server: the server counts the rejected response as
// delivered, so the valid resources it carried would not come again until they change.
// The client therefore reports the type as Behind, and after a backoff ends the stream and
// opens a new one announcing the versions it last accepted, so the server sends the
// difference again; the first response of the type on the new stream, once applied,
// brings the client level again.
package xdsclient

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/anypb"
)

// Handler consumes updates. An error NACKs the response; the handler must then have
// applied nothing of it.
type Handler interface {
	Apply(typeURL string, upserts map[string]*anypb.Any, removed []string) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(typeURL string, upserts map[string]*anypb.Any, removed []string) error

// Apply calls f.
func (f HandlerFunc) Apply(typeURL string, upserts map[string]*anypb.Any, removed []string) error {
	return f(typeURL, upserts, removed)
}

// Options configure a Client.
type Options struct {
	// TypeURLs to subscribe to (wildcard). Required.
	TypeURLs []string
	// Node identifies this client to the server (id, cluster, metadata).
	Node *corev3.Node
	// DialOptions for grpc.NewClient: transport credentials are required (e.g.
	// credentials.NewTLS, or insecure.NewCredentials() in tests).
	DialOptions []grpc.DialOption
	// CallOptions for the stream (e.g. per-RPC credentials).
	CallOptions []grpc.CallOption
	// InitialBackoff and MaxBackoff bound reconnect delays (defaults 100ms and 15s).
	InitialBackoff, MaxBackoff time.Duration
	// Observe, if set, sees every response before it is applied (tests, metrics).
	Observe func(*discoveryv3.DeltaDiscoveryResponse)
	Log     logr.Logger
}

// MaxResponseSize is the largest response the client accepts. A ztunnel's first response
// carries every workload of the mesh, a few hundred bytes each with its name and version
// (293 in the control-plane benchmark, 381 in TestLargeSnapshotFits): gRPC's default of
// 4 MiB stops at about 14,000 workloads. 50,000 workloads take 19 MB; 64 MiB leaves room
// for three times that.
const MaxResponseSize = 64 << 20

// Stats are counters for dumps and tests.
type Stats struct {
	Connected   bool
	Connects    int
	Acks, Nacks int
	LastNack    string
	LastError   string
	// Behind: type URL → reason of the rejected response the client has not caught up
	// with yet (see Client.Behind).
	Behind map[string]string `json:",omitempty"`
}

// errResync ends a stream after a NACK, so that the next one asks again.
var errResync = errors.New("asking again for the configuration it rejected")

// Client is one delta ADS client. Create it with New and start it with Run.
type Client struct {
	addr    string
	handler Handler
	opts    Options

	mu       sync.Mutex
	versions map[string]map[string]string // type → resource name → version (ACKed)
	stats    Stats
	synced   map[string]bool
	syncedCh chan struct{}
	// behind: type → reason of a NACK not caught up with (see Behind).
	behind map[string]string
	// nacks counts NACKs per type (the metric).
	nacks map[string]int
	// awaitingFirst: the types whose first response on the current stream has not come.
	awaitingFirst map[string]bool
	// resyncDelay is the wait before the last resync; it doubles while NACKs go on.
	resyncDelay time.Duration
}

// New returns a client for the server at addr (a gRPC target such as "host:port").
func New(addr string, handler Handler, opts Options) *Client {
	if opts.InitialBackoff <= 0 {
		opts.InitialBackoff = 100 * time.Millisecond
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 15 * time.Second
	}
	if opts.Node == nil {
		opts.Node = &corev3.Node{}
	}
	c := &Client{addr: addr, handler: handler, opts: opts, versions: map[string]map[string]string{}, synced: map[string]bool{},
		syncedCh: make(chan struct{}), behind: map[string]string{}, nacks: map[string]int{}}
	for _, t := range opts.TypeURLs {
		c.versions[t] = map[string]string{}
	}
	return c
}

// Run connects and serves updates until ctx ends, reconnecting as needed. It returns an
// error only for a configuration that can never work.
func (c *Client) Run(ctx context.Context) error {
	if len(c.opts.TypeURLs) == 0 {
		return errors.New("xdsclient: no TypeURLs to subscribe to")
	}
	dial := append([]grpc.DialOption{grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxResponseSize))}, c.opts.DialOptions...)
	conn, err := grpc.NewClient(c.addr, dial...)
	if err != nil {
		return fmt.Errorf("xdsclient: %w", err)
	}
	defer conn.Close()
	ads := discoveryv3.NewAggregatedDiscoveryServiceClient(conn)
	backoff := c.opts.InitialBackoff
	for ctx.Err() == nil {
		gotResponse, err := c.runStream(ctx, ads)
		c.setDisconnected(err)
		if ctx.Err() != nil {
			break
		}
		if errors.Is(err, errResync) {
			c.opts.Log.Info("opening a new xDS stream to receive again what was rejected", "behind", c.Behind())
			continue // the stream already waited out the resync delay
		}
		if gotResponse {
			backoff = c.opts.InitialBackoff // the stream was healthy: start over
		}
		delay := backoff/2 + rand.N(backoff/2+1) // jitter spreads reconnects of many clients
		c.opts.Log.Info("xDS stream ended, reconnecting", "error", errString(err), "in", delay)
		select {
		case <-ctx.Done():
		case <-time.After(delay):
		}
		backoff = min(backoff*2, c.opts.MaxBackoff)
	}
	return nil
}

// runStream serves one stream; gotResponse reports whether any response arrived. After a
// NACK it keeps the stream for the resync delay (the server still sees the NACK and the
// client connected meanwhile), then ends it with errResync.
func (c *Client) runStream(ctx context.Context, ads discoveryv3.AggregatedDiscoveryServiceClient) (gotResponse bool, err error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stream, err := ads.DeltaAggregatedResources(ctx, c.opts.CallOptions...)
	if err != nil {
		return false, err
	}
	c.startStream()
	for i, t := range c.opts.TypeURLs {
		req := &discoveryv3.DeltaDiscoveryRequest{
			TypeUrl:                 t,
			ResourceNamesSubscribe:  []string{"*"},
			InitialResourceVersions: c.knownVersions(t),
		}
		if i == 0 {
			req.Node = c.opts.Node
		}
		if err := stream.Send(req); err != nil {
			return false, err
		}
	}
	c.setConnected()
	var resync *time.Timer
	defer func() {
		if resync != nil {
			resync.Stop()
		}
	}()
	for {
		resp, err := stream.Recv()
		if err != nil {
			if errors.Is(context.Cause(ctx), errResync) {
				return gotResponse, errResync
			}
			return gotResponse, err
		}
		gotResponse = true
		reply, nacked := c.handle(resp)
		if err := stream.Send(reply); err != nil {
			return true, err
		}
		if nacked && resync == nil {
			delay := c.nextResyncDelay()
			c.opts.Log.Info("configuration behind the server after a NACK; asking again on a new stream", "type", resp.GetTypeUrl(), "in", delay)
			resync = time.AfterFunc(delay, func() { cancel(errResync) })
		}
	}
}

// startStream notes that no response has come on the new stream yet.
func (c *Client) startStream() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.awaitingFirst = make(map[string]bool, len(c.opts.TypeURLs))
	for _, t := range c.opts.TypeURLs {
		c.awaitingFirst[t] = true
	}
}

// nextResyncDelay backs off like reconnects do: a response the client keeps rejecting is
// asked for again less and less often.
func (c *Client) nextResyncDelay() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.resyncDelay = min(max(c.resyncDelay*2, c.opts.InitialBackoff), c.opts.MaxBackoff)
	return c.resyncDelay
}

// handle applies one response and returns the ACK, or the NACK (nacked).
func (c *Client) handle(resp *discoveryv3.DeltaDiscoveryResponse) (reply *discoveryv3.DeltaDiscoveryRequest, nacked bool) {
	if c.opts.Observe != nil {
		c.opts.Observe(resp)
	}
	ack := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()}
	upserts := make(map[string]*anypb.Any, len(resp.GetResources()))
	for _, r := range resp.GetResources() {
		upserts[r.GetName()] = r.GetResource()
	}
	err := c.apply(resp, upserts)
	c.mu.Lock()
	defer c.mu.Unlock()
	typeURL := resp.GetTypeUrl()
	first := c.awaitingFirst[typeURL]
	delete(c.awaitingFirst, typeURL)
	if err != nil {
		c.stats.Nacks++
		c.stats.LastNack = err.Error()
		if _, subscribed := c.versions[typeURL]; subscribed {
			c.behind[typeURL] = err.Error()
			c.nacks[typeURL]++
		}
		ack.ErrorDetail = &status.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}
		c.opts.Log.Error(err, "rejected xDS update (NACK), keeping the last good configuration", "type", typeURL, "nonce", resp.GetNonce())
		return ack, true
	}
	c.stats.Acks++
	if first {
		// The first response of a stream carries everything that differs from the
		// versions announced: the client now holds the server's state of the type.
		delete(c.behind, typeURL)
		if len(c.behind) == 0 {
			c.resyncDelay = 0
		}
	}
	versions := c.versions[resp.GetTypeUrl()]
	for _, name := range resp.GetRemovedResources() {
		delete(versions, name)
	}
	for _, r := range resp.GetResources() {
		versions[r.GetName()] = r.GetVersion()
	}
	if !c.synced[resp.GetTypeUrl()] {
		c.synced[resp.GetTypeUrl()] = true
		if len(c.synced) == len(c.opts.TypeURLs) {
			close(c.syncedCh)
		}
	}
	return ack, false
}

func (c *Client) apply(resp *discoveryv3.DeltaDiscoveryResponse, upserts map[string]*anypb.Any) error {
	if _, ok := c.versions[resp.GetTypeUrl()]; !ok {
		return fmt.Errorf("type %s was not subscribed to", resp.GetTypeUrl())
	}
	for _, r := range resp.GetResources() {
		if r.GetResource() == nil {
			return fmt.Errorf("%s: resource without a body", r.GetName())
		}
	}
	return c.handler.Apply(resp.GetTypeUrl(), upserts, resp.GetRemovedResources())
}

func (c *Client) knownVersions(typeURL string) map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.versions[typeURL])
}

func (c *Client) setConnected() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stats.Connected = true
	c.stats.Connects++
}

func (c *Client) setDisconnected(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stats.Connected = false
	c.stats.LastError = errString(err)
}

// Stats returns a copy of the counters.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.stats
	if len(c.behind) > 0 {
		st.Behind = maps.Clone(c.behind)
	}
	return st
}

// Behind returns the subscribed types whose configuration is behind the server's, with
// the reason: the client rejected (NACKed) a response of the type and has not applied
// the server's state of it since. Empty when the client is level with what it received.
func (c *Client) Behind() map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.behind)
}

var (
	behindDesc = prometheus.NewDesc("ambientmesh_xds_config_behind",
		"1 while the configuration of a type is behind the control plane's: a response of it was rejected (NACKed) and its current state not applied since.",
		[]string{"type"}, nil)
	nacksDesc = prometheus.NewDesc("ambientmesh_xds_client_nacks_total",
		"Responses rejected (NACKed), per type.", []string{"type"}, nil)
)

// Describe implements prometheus.Collector: register the client to export
// ambientmesh_xds_config_behind and ambientmesh_xds_client_nacks_total per subscribed type.
func (c *Client) Describe(ch chan<- *prometheus.Desc) {
	ch <- behindDesc
	ch <- nacksDesc
}

// Collect implements prometheus.Collector.
func (c *Client) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range c.opts.TypeURLs {
		behind := 0.0
		if _, ok := c.behind[t]; ok {
			behind = 1
		}
		name := t[strings.LastIndex(t, ".")+1:]
		ch <- prometheus.MustNewConstMetric(behindDesc, prometheus.GaugeValue, behind, name)
		ch <- prometheus.MustNewConstMetric(nacksDesc, prometheus.CounterValue, float64(c.nacks[t]), name)
	}
}

// Synced is closed once a response of every subscribed type has been ACKed.
func (c *Client) Synced() <-chan struct{} { return c.syncedCh }

// Versions returns the ACKed version of each resource of a type.
func (c *Client) Versions(typeURL string) map[string]string { return c.knownVersions(typeURL) }

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// Package xdsclient is a delta ADS client (envoy.service.discovery.v3
// AggregatedDiscoveryService.DeltaAggregatedResources) for the workload API, usable as a
// library: ztunnel feeds it into its state store, and control-plane tests use it as a real
// client.
//
// It subscribes to every configured type with a wildcard, hands each response to a Handler
// and ACKs it, or NACKs it with the Handler's error (the Handler keeps its last good
// configuration). When the stream breaks it reconnects with exponential backoff and sends
// the versions it holds (initial_resource_versions) so the server only sends what changed.
package xdsclient

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/go-logr/logr"
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

// Stats are counters for dumps and tests.
type Stats struct {
	Connected   bool
	Connects    int
	Acks, Nacks int
	LastNack    string
	LastError   string
}

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
	c := &Client{addr: addr, handler: handler, opts: opts, versions: map[string]map[string]string{}, synced: map[string]bool{}, syncedCh: make(chan struct{})}
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
	conn, err := grpc.NewClient(c.addr, c.opts.DialOptions...)
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

// runStream serves one stream; gotResponse reports whether any response arrived.
func (c *Client) runStream(ctx context.Context, ads discoveryv3.AggregatedDiscoveryServiceClient) (gotResponse bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := ads.DeltaAggregatedResources(ctx, c.opts.CallOptions...)
	if err != nil {
		return false, err
	}
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
	for {
		resp, err := stream.Recv()
		if err != nil {
			return gotResponse, err
		}
		gotResponse = true
		if err := stream.Send(c.handle(resp)); err != nil {
			return true, err
		}
	}
}

// handle applies one response and returns the ACK or NACK.
func (c *Client) handle(resp *discoveryv3.DeltaDiscoveryResponse) *discoveryv3.DeltaDiscoveryRequest {
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
	if err != nil {
		c.stats.Nacks++
		c.stats.LastNack = err.Error()
		ack.ErrorDetail = &status.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}
		c.opts.Log.Error(err, "rejected xDS update (NACK), keeping the last good configuration", "type", resp.GetTypeUrl(), "nonce", resp.GetNonce())
		return ack
	}
	c.stats.Acks++
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
	return ack
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
	out := make(map[string]string, len(c.versions[typeURL]))
	for k, v := range c.versions[typeURL] {
		out[k] = v
	}
	return out
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
	return c.stats
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

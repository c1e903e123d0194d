// Package xdstest runs an in-process go-control-plane delta ADS server (a linear cache per
// type: the workload API's by default, Envoy's for the waypoint) on loopback, for the
// proxies' tests.
package xdstest

import (
	"context"
	"net"
	"sync"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
)

// Server is a running delta ADS server.
type Server struct {
	Addr   string
	caches map[string]*cache.LinearCache
	grpc   *grpc.Server
	lis    net.Listener

	mu    sync.Mutex
	nacks []string
	acks  int
}

// Start serves on 127.0.0.1 until the test ends. opts are extra grpc.ServerOptions
// (e.g. TLS credentials).
func Start(t testing.TB, opts ...grpc.ServerOption) *Server {
	t.Helper()
	return StartAt(t, "127.0.0.1:0", opts...)
}

// StartAt is Start on a given address (to restart a server where clients expect it).
func StartAt(t testing.TB, addr string, opts ...grpc.ServerOption) *Server {
	t.Helper()
	s := New()
	s.Serve(t, addr, opts...)
	return s
}

// New returns a server with empty caches that does not serve yet (Set resources, then
// Serve), for typeURLs (default: the workload API's types).
func New(typeURLs ...string) *Server {
	if len(typeURLs) == 0 {
		typeURLs = pb.TypeURLs
	}
	s := &Server{caches: map[string]*cache.LinearCache{}}
	for _, t := range typeURLs {
		s.caches[t] = cache.NewLinearCache(t)
	}
	return s
}

// Serve starts serving on addr until the test ends.
func (s *Server) Serve(t testing.TB, addr string, opts ...grpc.ServerOption) {
	t.Helper()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s.ServeListener(t, lis, opts...)
}

// ServeListener serves on l until the test ends: a listener the caller opened, for
// example inside a network namespace (netnstest.NS.Listen). Addr becomes l's address.
func (s *Server) ServeListener(t testing.TB, lis net.Listener, opts ...grpc.ServerOption) {
	t.Helper()
	mux := &cache.MuxCache{
		Classify:      func(r *cache.Request) string { return r.GetTypeUrl() },
		ClassifyDelta: func(r *cache.DeltaRequest) string { return r.GetTypeUrl() },
		Caches:        map[string]cache.Cache{},
	}
	for t, c := range s.caches {
		mux.Caches[t] = c
	}
	ctx, cancel := context.WithCancel(context.Background())
	callbacks := server.CallbackFuncs{
		StreamDeltaRequestFunc: func(_ int64, req *discoveryv3.DeltaDiscoveryRequest) error {
			if req.GetResponseNonce() == "" {
				return nil
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			if req.GetErrorDetail() != nil {
				s.nacks = append(s.nacks, req.GetErrorDetail().GetMessage())
			} else {
				s.acks++
			}
			return nil
		},
	}
	xds := server.NewServer(ctx, mux, callbacks)
	s.grpc = grpc.NewServer(opts...)
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(s.grpc, xds)
	s.lis = lis
	s.Addr = lis.Addr().String()
	go func() { _ = s.grpc.Serve(lis) }()
	t.Cleanup(func() {
		s.grpc.Stop()
		cancel()
	})
}

// Set adds or replaces resources of one type.
func (s *Server) Set(t testing.TB, typeURL string, resources map[string]proto.Message) {
	t.Helper()
	up := make(map[string]types.Resource, len(resources))
	for n, r := range resources {
		up[n] = r
	}
	if err := s.caches[typeURL].UpdateResources(up, nil); err != nil {
		t.Fatal(err)
	}
}

// Delete removes resources of one type.
func (s *Server) Delete(t testing.TB, typeURL string, names ...string) {
	t.Helper()
	if err := s.caches[typeURL].UpdateResources(nil, names); err != nil {
		t.Fatal(err)
	}
}

// Stop stops serving (clients see their stream break).
func (s *Server) Stop() { s.grpc.Stop() }

// Nacks returns the error messages of NACKs received so far.
func (s *Server) Nacks() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.nacks...)
}

// Acks counts ACKs received so far.
func (s *Server) Acks() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.acks
}

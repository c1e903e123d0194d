package waypoint

import (
	"net/netip"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/ambientmesh/ambient-operator/dataplane/waypoint/jwt"
	"github.com/ambientmesh/ambient-operator/dataplane/waypoint/upstream"
)

// FuzzApplyListener feeds arbitrary listeners (wire bytes, as a hostile or broken control
// plane could send) to the store: it must never panic, and a rejected listener must leave
// the previous configuration in place.
func FuzzApplyListener(f *testing.F) {
	good := validListener()
	seed, err := proto.Marshal(good)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x03, 'a', ':', '1'})
	f.Fuzz(func(t *testing.T, b []byte) {
		s := newStore(upstream.NewSet(upstream.Options{}), jwt.Options{}, logr.Discard())
		defer closeReplaced(s.compiled, nil)
		if err := s.Apply(resourcev3.ListenerType, map[string]*anypb.Any{"good": mustAny(t, good)}, nil); err != nil {
			t.Fatalf("the seed listener is rejected: %v", err)
		}
		l := &listenerv3.Listener{}
		if proto.Unmarshal(b, l) != nil {
			return
		}
		before := s.snapshot()
		if err := s.Apply(resourcev3.ListenerType, map[string]*anypb.Any{"fuzzed": mustAny(t, l)}, nil); err != nil {
			if s.snapshot() != before {
				t.Fatal("a NACKed update changed the configuration")
			}
			return
		}
		for addr := range s.snapshot().byAddr {
			_ = s.snapshot().listenerFor(netip.AddrPortFrom(addr.Addr(), addr.Port()))
		}
	})
}

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// validListener is an HTTP listener as the control plane makes one: RDS routes, router.
func validListener() *listenerv3.Listener {
	router, _ := anypb.New(&routerv3.Router{})
	hcm, _ := anypb.New(&hcmv3.HttpConnectionManager{
		StatPrefix: "reviews",
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: "reviews:9080",
			ConfigSource: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}},
	})
	return &listenerv3.Listener{
		Name: "reviews:9080",
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: "10.96.0.10", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 9080}}}},
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.http_connection_manager",
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm}}}}},
	}
}

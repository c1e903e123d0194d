package waypoint

import (
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
)

// Filter names, as Envoy registers them.
const (
	HTTPConnectionManagerName = "envoy.filters.network.http_connection_manager"
	HTTPRBACFilterName        = "envoy.filters.http.rbac"
	RouterFilterName          = "envoy.filters.http.router"
	NetworkRBACFilterName     = "envoy.filters.network.rbac"
	TCPProxyFilterName        = "envoy.filters.network.tcp_proxy"
)

// newListener listens on the first address; the others are additional addresses.
func newListener(name string, addresses []string, port uint32, filters []*listenerv3.Filter) *listenerv3.Listener {
	l := &listenerv3.Listener{
		Name:         name,
		Address:      socketAddress(addresses[0], port),
		FilterChains: []*listenerv3.FilterChain{{Filters: filters}},
	}
	for _, a := range addresses[1:] {
		l.AdditionalAddresses = append(l.AdditionalAddresses, &listenerv3.AdditionalAddress{Address: socketAddress(a, port)})
	}
	return l
}

// httpFilters: jwt_authn (when a policy sets jwt), RBAC DENY, RBAC ALLOW (when an ALLOW
// policy applies: then what no ALLOW rule matches is denied), fault, router.
func httpFilters(mesh Mesh, policies []*meshv1.MeshPolicy) []*hcmv3.HttpFilter {
	var out []*hcmv3.HttpFilter
	if jwt := jwtAuthn(policies); jwt != nil {
		out = append(out, httpFilter(JWTFilterName, jwt))
	}
	out = append(out, httpFilter(HTTPRBACFilterName, &rbachttpv3.RBAC{Rules: rbacRules(mesh, policies, meshv1.ActionDeny, true)}))
	if hasAction(policies, meshv1.ActionAllow) {
		out = append(out, httpFilter(HTTPRBACFilterName, &rbachttpv3.RBAC{Rules: rbacRules(mesh, policies, meshv1.ActionAllow, true)}))
	}
	return append(out,
		httpFilter(FaultFilterName, &faultv3.HTTPFault{}),
		httpFilter(RouterFilterName, &routerv3.Router{}))
}

func httpFilter(name string, config proto.Message) *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(config)}}
}

// httpListener routes with the RouteConfiguration of the same name (RDS over ADS).
func httpListener(mesh Mesh, name string, addresses []string, port uint32, policies []*meshv1.MeshPolicy) *listenerv3.Listener {
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: name,
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource:    adsSource(),
			RouteConfigName: name,
		}},
		HttpFilters: httpFilters(mesh, policies),
	}
	return newListener(name, addresses, port, []*listenerv3.Filter{networkFilter(HTTPConnectionManagerName, hcm)})
}

// tcpListener proxies bytes to cluster after the L4 parts of the policies (DENY, then
// ALLOW when an ALLOW policy applies).
func tcpListener(mesh Mesh, name string, addresses []string, port uint32, cluster string, policies []*meshv1.MeshPolicy) *listenerv3.Listener {
	filters := []*listenerv3.Filter{networkFilter(NetworkRBACFilterName, &rbacnetv3.RBAC{
		StatPrefix: name + ".deny", Rules: rbacRules(mesh, policies, meshv1.ActionDeny, false),
	})}
	if hasAction(policies, meshv1.ActionAllow) {
		filters = append(filters, networkFilter(NetworkRBACFilterName, &rbacnetv3.RBAC{
			StatPrefix: name + ".allow", Rules: rbacRules(mesh, policies, meshv1.ActionAllow, false),
		}))
	}
	filters = append(filters, networkFilter(TCPProxyFilterName, &tcpproxyv3.TcpProxy{
		StatPrefix:       name,
		ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: cluster},
	}))
	return newListener(name, addresses, port, filters)
}

func networkFilter(name string, config proto.Message) *listenerv3.Filter {
	return &listenerv3.Filter{Name: name, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(config)}}
}

// mustAny packs a message. Marshalling fails only on a string that is not UTF-8, which
// objects decoded from the API server's JSON never hold; should it happen, Build turns the
// panic back into its error (see packError).
func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(packError{err})
	}
	return a
}

// packError is the one panic Build recovers from.
type packError struct{ err error }

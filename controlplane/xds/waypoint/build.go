package waypoint

import (
	"errors"
	"fmt"
	"sort"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controlplane/xds/translate"
)

// Resources are one waypoint's Envoy resources, by resource name.
type Resources struct {
	Listeners map[string]*listenerv3.Listener
	Routes    map[string]*routev3.RouteConfiguration
	Clusters  map[string]*clusterv3.Cluster
	Endpoints map[string]*endpointv3.ClusterLoadAssignment
}

// ByType returns the resources keyed by xDS type URL, then name.
func (r Resources) ByType() map[string]map[string]proto.Message {
	out := map[string]map[string]proto.Message{
		resourcev3.ListenerType: {}, resourcev3.RouteType: {}, resourcev3.ClusterType: {}, resourcev3.EndpointType: {},
	}
	for n, m := range r.Listeners {
		out[resourcev3.ListenerType][n] = m
	}
	for n, m := range r.Routes {
		out[resourcev3.RouteType][n] = m
	}
	for n, m := range r.Clusters {
		out[resourcev3.ClusterType][n] = m
	}
	for n, m := range r.Endpoints {
		out[resourcev3.EndpointType][n] = m
	}
	return out
}

// TypeURLs are the Envoy resource types a waypoint is served.
var TypeURLs = []string{resourcev3.ListenerType, resourcev3.RouteType, resourcev3.ClusterType, resourcev3.EndpointType}

// Build computes every resource of one waypoint from st. It is pure; the error reports
// resources that fail their generated ValidateAll (a translation bug: the caller keeps
// serving the last good set).
func Build(mesh Mesh, wp *meshv1.Waypoint, st *State) (res Resources, err error) {
	defer func() {
		if r := recover(); r != nil {
			pe, ok := r.(packError)
			if !ok {
				panic(r)
			}
			res, err = Resources{}, fmt.Errorf("waypoint %s/%s: %w", wp.Namespace, wp.Name, pe.err)
		}
	}()
	res = Resources{
		Listeners: map[string]*listenerv3.Listener{},
		Routes:    map[string]*routev3.RouteConfiguration{},
		Clusters:  map[string]*clusterv3.Cluster{},
		Endpoints: map[string]*endpointv3.ClusterLoadAssignment{},
	}
	rb := &routeBuilder{mesh: mesh, st: st, clusters: map[string]backend{}}
	jwksURIs := map[string]bool{}
	routes := compileRoutes(st)
	for _, svc := range ServedServices(wp, st) {
		addresses := translate.ServiceVIPs(svc)
		sc := scope{namespace: svc.Namespace, service: svc.Name}
		policies := policiesFor(st.Policies, wp, sc)
		host := translate.Hostname(mesh, svc)
		for _, sp := range svc.Spec.Ports {
			if !translate.IsTCP(sp.Protocol) {
				continue
			}
			name := ListenerName(host, sp.Port)
			if PortProtocol(sp) == ProtocolTCP {
				own := serviceBackend(mesh, svc, sp)
				rb.clusters[own.name] = own
				res.Listeners[name] = tcpListener(mesh, name, addresses, uint32(sp.Port), own.name, policies)
				continue
			}
			res.Listeners[name] = httpListener(mesh, name, addresses, uint32(sp.Port), policies)
			res.Routes[name] = rb.buildRouteConfig(name, svc, sp, routes.attachedTo(svc, sp))
			collectJWKS(policies, jwksURIs)
		}
	}
	for _, pod := range ServedPods(wp, st) {
		sc := scope{namespace: pod.Namespace}
		policies := policiesFor(st.Policies, wp, sc)
		for _, wport := range workloadPorts(pod, st) {
			be := workloadBackend(pod, wport.port, wport.protocol)
			rb.clusters[be.name] = be
			name := ListenerName(pod.Status.PodIP, wport.port)
			if wport.protocol == ProtocolTCP {
				res.Listeners[name] = tcpListener(mesh, name, podIPs(pod), uint32(wport.port), be.name, policies)
				continue
			}
			res.Listeners[name] = httpListener(mesh, name, podIPs(pod), uint32(wport.port), policies)
			res.Routes[name] = defaultRouteConfig(name, be.name)
			collectJWKS(policies, jwksURIs)
		}
	}
	for _, be := range rb.clusters {
		res.Clusters[be.name] = buildCluster(be)
		res.Endpoints[be.name] = buildLoadAssignment(mesh, be, st)
	}
	for uri := range jwksURIs {
		c := jwksCluster(uri)
		res.Clusters[c.Name] = c
	}
	return res, res.validate()
}

// validate runs every resource's generated ValidateAll.
func (r Resources) validate() error {
	var errs []error
	for typeURL, byName := range r.ByType() {
		names := make([]string, 0, len(byName))
		for n := range byName {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			if v, ok := byName[n].(interface{ ValidateAll() error }); ok {
				if err := v.ValidateAll(); err != nil {
					errs = append(errs, fmt.Errorf("%s %q: %w", shortType(typeURL), n, err))
				}
			}
		}
	}
	return errors.Join(errs...)
}

func shortType(typeURL string) string {
	for i := len(typeURL) - 1; i >= 0; i-- {
		if typeURL[i] == '.' {
			return typeURL[i+1:]
		}
	}
	return typeURL
}

// collectJWKS notes the key set URIs of the policies of an HTTP listener: each gets a
// cluster to fetch through.
func collectJWKS(policies []*meshv1.MeshPolicy, uris map[string]bool) {
	for _, p := range policies {
		if j := p.Spec.JWT; j != nil && j.JWKS == "" && validJWKSURI(j.JWKSURI) {
			uris[j.JWKSURI] = true
		}
	}
}

// defaultRouteConfig sends everything to one cluster, with no timeout (Envoy's default
// would be 15s).
func defaultRouteConfig(name, cluster string) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{Name: name, VirtualHosts: []*routev3.VirtualHost{{
		Name:    name,
		Domains: []string{"*"},
		Routes:  []*routev3.Route{defaultRoute(cluster)},
	}}}
}

// podIPs are the pod's addresses, the primary first.
func podIPs(pod *corev1.Pod) []string {
	out := []string{pod.Status.PodIP}
	for _, ip := range pod.Status.PodIPs {
		if ip.IP != pod.Status.PodIP && ip.IP != "" {
			out = append(out, ip.IP)
		}
	}
	return out
}

// workloadPort is a port a served pod receives traffic on.
type workloadPort struct {
	port     int32
	protocol Protocol
}

// workloadPorts are the pod's TCP container ports and the target ports of the Services
// selecting it. A port is HTTP when a Service port targeting it is, or when its container
// port's name says so.
func workloadPorts(pod *corev1.Pod, st *State) []workloadPort {
	protocols := map[int32]Protocol{}
	for _, c := range pod.Spec.Containers {
		for _, cp := range c.Ports {
			if translate.IsTCP(cp.Protocol) {
				protocols[cp.ContainerPort] = max(protocols[cp.ContainerPort], protocolOfName(cp.Name))
			}
		}
	}
	for i := range st.Services {
		svc := &st.Services[i]
		if !contains(selectedPods(svc, st.Pods), pod) {
			continue
		}
		for _, sp := range svc.Spec.Ports {
			if p := int32(translate.TargetPort(pod, sp)); p != 0 && translate.IsTCP(sp.Protocol) {
				protocols[p] = max(protocols[p], PortProtocol(sp))
			}
		}
	}
	out := make([]workloadPort, 0, len(protocols))
	for p, protocol := range protocols {
		out = append(out, workloadPort{port: p, protocol: protocol})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].port < out[j].port })
	return out
}

func contains(pods []*corev1.Pod, pod *corev1.Pod) bool {
	for _, p := range pods {
		if p == pod {
			return true
		}
	}
	return false
}

// compiledRoutes are the cluster's routes, compiled once per Build.
type compiledRoutes struct {
	http []compiledHTTP
	grpc []compiledGRPC
}

type compiledHTTP struct {
	route    *gatewayv1.HTTPRoute
	compiled compiledRoute
}

type compiledGRPC struct {
	route    *gatewayv1.GRPCRoute
	compiled compiledRoute
}

func compileRoutes(st *State) compiledRoutes {
	var out compiledRoutes
	for i := range st.HTTPRoutes {
		r := &st.HTTPRoutes[i]
		out.http = append(out.http, compiledHTTP{r, compileHTTPRoute(r)})
	}
	for i := range st.GRPCRoutes {
		r := &st.GRPCRoutes[i]
		out.grpc = append(out.grpc, compiledGRPC{r, compileGRPCRoute(r)})
	}
	return out
}

// attachedTo lists the rules of the routes programmed on a Service port: routes of the
// Service's namespace that name it (and the port, when they name one) as a parent and
// use nothing unsupported.
func (c compiledRoutes) attachedTo(svc *corev1.Service, sp corev1.ServicePort) []*routeRule {
	var out []*routeRule
	for _, r := range c.http {
		if len(r.compiled.unsupported) == 0 && attaches(r.route.Namespace, r.route.Spec.ParentRefs, svc, sp) {
			for i := range r.compiled.rules {
				out = append(out, &r.compiled.rules[i])
			}
		}
	}
	for _, r := range c.grpc {
		if len(r.compiled.unsupported) == 0 && attaches(r.route.Namespace, r.route.Spec.ParentRefs, svc, sp) {
			for i := range r.compiled.rules {
				out = append(out, &r.compiled.rules[i])
			}
		}
	}
	return out
}

// attaches reports whether one of a route's parentRefs is the Service port. Only routes
// in the Service's own namespace (producer routes) attach.
func attaches(routeNamespace string, refs []gatewayv1.ParentReference, svc *corev1.Service, sp corev1.ServicePort) bool {
	if routeNamespace != svc.Namespace {
		return false
	}
	for _, ref := range refs {
		if isServiceRef(ref) && refNamespace(routeNamespace, ref) == svc.Namespace && string(ref.Name) == svc.Name &&
			(ref.Port == nil || *ref.Port == sp.Port) &&
			(ref.SectionName == nil || string(*ref.SectionName) == sp.Name) {
			return true
		}
	}
	return false
}

// isServiceRef: a GAMMA parent, group "" and kind Service (a parentRef defaults to a
// Gateway, so both must be written).
func isServiceRef(ref gatewayv1.ParentReference) bool {
	return ref.Group != nil && *ref.Group == "" && ref.Kind != nil && *ref.Kind == "Service"
}

func refNamespace(routeNamespace string, ref gatewayv1.ParentReference) string {
	if ref.Namespace != nil {
		return string(*ref.Namespace)
	}
	return routeNamespace
}

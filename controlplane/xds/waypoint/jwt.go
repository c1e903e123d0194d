package waypoint

import (
	"net"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
)

// JWKS fetching: how long a fetched key set is used, and how long a fetch may take.
const (
	jwksCacheDuration = 5 * time.Minute
	jwksFetchTimeout  = 5 * time.Second
	// systemRoots verifies a JWKS server's certificate (Debian's bundle, in the image).
	systemRoots = "/etc/ssl/certs/ca-certificates.crt"
)

// jwtAuthn builds the jwt_authn filter config of a listener from the policies enforced
// there that set jwt; nil when none does. Each policy is a provider named
// "<namespace>/<name>" whose validated payload goes to the "payload" metadata key. A
// requirement rule per path the policies cover demands a valid token from one of the
// providers covering it (a missing or invalid token gets 401); Envoy applies the first
// rule that matches, so rules go from the most specific path to the least, and each one
// names every provider whose paths include it.
func jwtAuthn(policies []*meshv1.MeshPolicy) *jwtv3.JwtAuthentication {
	out := &jwtv3.JwtAuthentication{Providers: map[string]*jwtv3.JwtProvider{}}
	var coverage []policyPaths
	for _, p := range policies {
		if p.Spec.JWT == nil {
			continue
		}
		name := policyKey(p)
		out.Providers[name] = jwtProvider(p.Spec.JWT)
		coverage = append(coverage, policyPaths{provider: name, paths: coveredPaths(p)})
	}
	if len(out.Providers) == 0 {
		return nil
	}
	var all []pathMatch
	seen := map[pathMatch]bool{}
	for _, c := range coverage {
		for _, m := range c.paths {
			if !seen[m] {
				seen[m] = true
				all = append(all, m)
			}
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].moreSpecific(all[j]) })
	for _, m := range all {
		var providers []string
		for _, c := range coverage {
			if c.covers(m) {
				providers = append(providers, c.provider)
			}
		}
		out.Rules = append(out.Rules, &jwtv3.RequirementRule{
			Match:           m.routeMatch(),
			RequirementType: &jwtv3.RequirementRule_Requires{Requires: requireAny(providers)},
		})
	}
	return out
}

func requireAny(providers []string) *jwtv3.JwtRequirement {
	if len(providers) == 1 {
		return &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: providers[0]}}
	}
	var any []*jwtv3.JwtRequirement
	for _, p := range providers {
		any = append(any, &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: p}})
	}
	return &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_RequiresAny{RequiresAny: &jwtv3.JwtRequirementOrList{Requirements: any}}}
}

// pathMatch is an exact path or a path prefix ("/" for every path).
type pathMatch struct {
	value  string
	prefix bool
}

func (m pathMatch) routeMatch() *routev3.RouteMatch {
	if m.prefix {
		return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: m.value}}
	}
	return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: m.value}}
}

// moreSpecific orders exact paths before prefixes, longer before shorter.
func (m pathMatch) moreSpecific(o pathMatch) bool {
	if m.prefix != o.prefix {
		return !m.prefix
	}
	if len(m.value) != len(o.value) {
		return len(m.value) > len(o.value)
	}
	return m.value < o.value
}

// includes reports whether every path m matches is also matched by o.
func (o pathMatch) includes(m pathMatch) bool {
	if !o.prefix {
		return !m.prefix && m.value == o.value
	}
	return strings.HasPrefix(m.value, o.value)
}

type policyPaths struct {
	provider string
	paths    []pathMatch
}

func (c policyPaths) covers(m pathMatch) bool {
	for _, p := range c.paths {
		if p.includes(m) {
			return true
		}
	}
	return false
}

// coveredPaths are the paths of the policy's rules; every path ("/") when a rule or one
// of its destinations names none.
func coveredPaths(p *meshv1.MeshPolicy) []pathMatch {
	var out []pathMatch
	for _, r := range p.Spec.Rules {
		if len(r.To) == 0 {
			return []pathMatch{{value: "/", prefix: true}}
		}
		for _, d := range r.To {
			if len(d.Paths) == 0 {
				return []pathMatch{{value: "/", prefix: true}}
			}
			for _, path := range d.Paths {
				if path.Prefix != "" {
					out = append(out, pathMatch{value: path.Prefix, prefix: true})
				} else {
					out = append(out, pathMatch{value: path.Exact})
				}
			}
		}
	}
	return out
}

func jwtProvider(j *meshv1.JWTSettings) *jwtv3.JwtProvider {
	p := &jwtv3.JwtProvider{
		Issuer:            j.Issuer,
		Audiences:         j.Audiences,
		Forward:           j.ForwardOriginalToken,
		PayloadInMetadata: JWTPayloadKey,
	}
	for _, h := range j.FromHeaders {
		p.FromHeaders = append(p.FromHeaders, &jwtv3.JwtHeader{Name: h.Name, ValuePrefix: h.Prefix})
	}
	if j.JWKS != "" {
		p.JwksSourceSpecifier = &jwtv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{
			Specifier: &corev3.DataSource_InlineString{InlineString: j.JWKS},
		}}
		return p
	}
	if !validJWKSURI(j.JWKSURI) {
		// Admission refuses such a URI; should one get through, no token validates and
		// the policy's paths answer 401, rather than dropping the requirement.
		p.JwksSourceSpecifier = &jwtv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{
			Specifier: &corev3.DataSource_InlineString{InlineString: `{"keys":[]}`},
		}}
		return p
	}
	p.JwksSourceSpecifier = &jwtv3.JwtProvider_RemoteJwks{RemoteJwks: &jwtv3.RemoteJwks{
		HttpUri: &corev3.HttpUri{
			Uri:              j.JWKSURI,
			HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: jwksClusterName(j.JWKSURI)},
			Timeout:          durationpb.New(jwksFetchTimeout),
		},
		CacheDuration: durationpb.New(jwksCacheDuration),
	}}
	return p
}

// jwksServer is the host and port of a JWKS URI, and whether it is https.
func jwksServer(uri string) (host, port string, https bool) {
	u, err := url.Parse(uri)
	if err != nil {
		return "", "", false
	}
	https = u.Scheme == "https"
	port = u.Port()
	if port == "" {
		port = "80"
		if https {
			port = "443"
		}
	}
	return u.Hostname(), port, https
}

// validJWKSURI: an http(s) URL with a host and a valid port.
func validJWKSURI(uri string) bool {
	u, err := url.Parse(uri)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Hostname() == "" {
		return false
	}
	_, port, _ := jwksServer(uri)
	n, err := strconv.ParseUint(port, 10, 16)
	return err == nil && n > 0
}

// jwksClusterName names the cluster that reaches a JWKS server: jwks|<host>:<port>.
func jwksClusterName(uri string) string {
	host, port, _ := jwksServer(uri)
	return "jwks|" + net.JoinHostPort(host, port)
}

// jwksCluster reaches a JWKS server by DNS, over TLS verified with the system roots for
// https. It is the one cluster that is not EDS: the server is outside the cluster, and an
// Envoy fetching the keys needs a cluster to fetch them through.
func jwksCluster(uri string) *clusterv3.Cluster {
	host, port, https := jwksServer(uri)
	portNum, _ := strconv.ParseUint(port, 10, 16)
	name := jwksClusterName(uri)
	c := &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_LOGICAL_DNS},
		ConnectTimeout:       durationpb.New(jwksFetchTimeout),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: socketAddress(host, uint32(portNum))}},
			}}}},
		},
	}
	if https {
		tlsCtx := mustAny(&tlsv3.UpstreamTlsContext{
			Sni: host,
			CommonTlsContext: &tlsv3.CommonTlsContext{
				ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
					TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: systemRoots}},
				}},
			},
		})
		c.TransportSocket = &corev3.TransportSocket{
			Name:       "envoy.transport_sockets.tls",
			ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: tlsCtx},
		}
	}
	return c
}

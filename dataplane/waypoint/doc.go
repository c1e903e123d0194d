// Package waypoint is the mesh's L7 proxy, one Deployment per Waypoint. It takes standard
// Envoy v3 xDS (LDS, RDS, CDS, EDS, and SDS for the trust bundle, the Secret ROOTCA, over
// delta ADS) from the control plane, so an Envoy could take its place, and nothing else:
// it knows nothing of Kubernetes.
//
// A connection's path:
//
//	client ztunnel ──HBONE (mTLS, CONNECT VIP:port)──▶ :15008 waypoint
//	  ServeHBONE: the CONNECT target picks the listener (its address or additional_addresses)
//	  HTTP listener: net/http serves HTTP/1.1 or h2c (prior knowledge, told by its preface) on the stream
//	    jwt_authn → RBAC (DENY filter, then ALLOW filter) → fault → router (RDS)
//	    router: weighted cluster, rewrites, header ops, mirrors, timeout, retries (proxyDirect or
//	            httputil.ReverseProxy over roundTrip: pick a host of the cluster, try, classify,
//	            retry with back-off)
//	  TCP listener: network RBAC, then tcp_proxy to a host of its cluster (hbone.Join)
//	waypoint ──HBONE (its own identity, peer = endpoint's identity, Forwarded: for=<client>)──▶ pod's ztunnel :15008
//
// Upstream HTTP connections are HTTP/1.1 or h2c as the client spoke (gRPC stays HTTP/2 end
// to end, trailers kept); each is one HBONE stream, and streams share the pool's mutual TLS
// connections. Connections are reused only for the same client address, because the
// Forwarded header of their CONNECT names that client to the destination's ztunnel.
// HTTP/1.1 requests to HBONE endpoints whose body is in memory (or that have none) go
// through the waypoint's own small client (h1client.go: net/http's request writer and
// response parser on the handler's goroutine, one write per request); everything else
// (h2c, plain-TCP endpoints, streamed bodies, upgrades, mirrors) goes through net/http's
// Transports. The HTTP/1.1 requests h1Client can carry are proxied by proxyDirect
// (direct.go: ReverseProxy's header, trailer and 1xx rules without its per-request
// copies); the others by httputil.ReverseProxy.
//
// The pieces, each compiled from its xDS resource and unit-tested on its own: route (RDS),
// rbac (the RBAC filters), jwt (jwt_authn), upstream (CDS/EDS: load balancing, outlier
// detection, circuit breakers, retry budget), telemetry (Istio's metrics, the access log,
// W3C trace context). config.go holds the xDS resources and compiles them all or nothing:
// a response that does not compile is NACKed with the reason and the last good
// configuration keeps serving. waypointtest runs a real waypoint in-process for tests.
package waypoint

// Package waypoint computes the Envoy v3 resources (Listener, RouteConfiguration, Cluster,
// ClusterLoadAssignment) a waypoint proxy is served, from plain cluster objects: the
// Waypoint (or the Gateway of the waypoint class read as one, translate.WaypointFromGateway),
// the Services and pods that use it, the HTTPRoutes and GRPCRoutes attached to
// those Services (GAMMA), and the MeshPolicies that target them. It also computes the
// status of those routes. Everything here is pure; controlplane/discovery gathers the
// inputs and the tests write them as YAML (testdata/, golden files, `-update`).
//
// What a waypoint gets (the contract in design.md, "The waypoint's xDS"):
//   - a Listener per TCP port of every Service using it (for: service|all), named
//     <hostname>:<port> on the cluster IP (other VIPs in additional_addresses), and for:
//     workload|all one per port of every enrolled pod using it, named <podIP>:<port>
//     (for: none gets nothing). Which objects use it is the workload API's rule
//     (translate.UsedWaypoint): the object's ambientmesh.dev/use-waypoint label, else its
//     namespace's, "none" opting out; of its own namespace, or of the one named by
//     ambientmesh.dev/use-waypoint-namespace when the waypoint's spec.allowedNamespaces
//     allows the object's namespace;
//   - HTTP ports (appProtocol http/http2/grpc, or a name prefixed http-/http2-/grpc-) run
//     the HTTP connection manager with RDS and the filters jwt_authn (when a policy sets
//     jwt), rbac DENY, rbac ALLOW (when an ALLOW policy applies), fault, router; TCP ports
//     run network rbac (DENY, ALLOW) and tcp_proxy;
//   - a RouteConfiguration per HTTP listener with one virtual host "*": the attached
//     routes' rules in Gateway API precedence, or a default route to the Service;
//   - an EDS Cluster outbound|<port>||<hostname> per Service port used, and its
//     ClusterLoadAssignment: pod endpoints with health from readiness and the metadata
//     "ambientmesh.dev/endpoint" {tunnel: hbone|none, identity: SPIFFE id} plus the
//     pod's telemetry names {workload, canonical_service, canonical_revision, app,
//     version, cluster} (app, version and cluster only when known).
//
// HTTPRoute support: every core and extended match (path Exact/PathPrefix/
// RegularExpression, headers, query parameters, method) and the filters
// RequestHeaderModifier, ResponseHeaderModifier, RequestRedirect, URLRewrite and
// RequestMirror (percent or fraction), weighted backendRefs with per-backend header
// modifiers, timeouts (request → route timeout, 0s when unset since Envoy's default is
// 15s; backendRequest → per-try timeout), and the experimental retry field. Faults come
// from the annotations ambientmesh.dev/fault-abort and ambientmesh.dev/fault-delay.
// GRPCRoute: method matches become paths, with header matches and the same filters.
//
// Not supported, and reported instead of half-applied: a route using CORS, ExternalAuth,
// ExtensionRef, sessionPersistence or a backend filter other than header modifiers is not
// Accepted (UnsupportedValue) and not applied. Routes attach only to Services of their
// own namespace (no consumer routes), backendRefs only name Services of that namespace
// (ReferenceGrants are not read: RefNotPermitted), and spec.hostnames are ignored, as
// GAMMA routes match by parent Service. A backend that does not resolve keeps its weight
// and answers 500, as Gateway API asks: the route names a cluster that does not exist and
// sets cluster_not_found_response_code to 500.
//
// Precedence follows Gateway API, with the implementation-specific part decided thus:
// exact paths, then regular expressions, then prefixes by length; then a method match,
// the most header matches, the most query matches; then the oldest route, its
// namespace/name, and rule and match order. GRPCRoute rules join the same ordering
// (service+method is an exact path, service alone a prefix, the rest regular expressions).
//
// MeshPolicy: policies whose targetRefs name the waypoint (from its own namespace: all the
// traffic it carries, whichever namespace it serves), or the listener's Service or
// namespace (from the listener's namespace) are enforced; ztunnel enforces the others. AUDIT policies change no decision
// and produce no filter here. A policy's "ports" match the port the client addressed (the
// Service port, or the pod port for workload traffic). On TCP ports HTTP conditions fail
// closed as at ztunnel: an ALLOW rule needing them is dropped, a DENY rule keeps its L4
// conditions. jwt makes the paths the policy's rules cover require a valid token (401
// otherwise); where several policies' jwt cover a path, a token of any of their issuers is
// accepted, so a claim condition should pin "iss" when issuers differ. Claims are read
// from the jwt_authn metadata key "payload"; a list claim matches when any element does.
// A JWKS URI is fetched through a LOGICAL_DNS cluster jwks|<host>:<port> (TLS with the
// system roots for https), the only non-EDS cluster.
//
// Every resource passes its generated ValidateAll: Build checks them all and returns an
// error otherwise (the caller keeps the last good set), and a route whose Envoy form would
// fail is refused alone at compile time (Accepted=False), so user input never blocks a
// waypoint's whole configuration.
package waypoint

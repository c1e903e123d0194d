// Package route compiles an Envoy RouteConfiguration (the waypoint's RDS
// resource) into a Table: an immutable, concurrency-safe routing table that
// the waypoint's HTTP handler consults once per request. It does no
// networking; the handler forwards, retries, mirrors and injects faults with
// what a matched Route tells it.
//
//	table, err := route.Compile(rc) // an error becomes an xDS NACK
//	rt := table.Match(req)          // nil: answer 404
//	switch {
//	case rt.Direct != nil:   // answer rt.Direct.Status with rt.Direct.Body
//	case rt.Redirect != nil: // status, location := rt.Redirect.Response(req)
//	case rt.Forward != nil:
//		wc := rt.Forward.PickCluster(rnd)
//		rt.ApplyRequest(req, wc) // header ops, host and path rewrite
//		// ... send to wc.Name, retry with rt.Forward.Retry ...
//		rt.ApplyResponse(resp.Header, wc)
//	}
//
// Compile runs the generated ValidateAll first, then rejects every populated
// field it does not implement, naming the virtual host, the route and the
// field, so that a configuration is either carried out in full or refused.
// A few fields that only describe or tune a route are accepted and ignored:
// metadata, decorator, tracing, stat_prefix, buffer limits, virtual_clusters,
// validate_clusters, priority, hash_policy (the load balancer's business),
// upgrade_configs (the handler proxies upgrades itself), retry host predicates
// and priorities, trace_sampled, runtime keys (there is no runtime: defaults
// apply) and the fault filter's stats, metadata and max_active_faults.
//
// # Supported
//
//   - Virtual hosts by Host: exact domains, "*.suffix" (longest first),
//     "prefix.*" (longest first), then "*"; case-insensitive;
//     ignore_port_in_host_matching.
//   - Route match: prefix, path, safe_regex (whole path), path_separated_prefix;
//     case_sensitive; headers (exact, prefix, suffix, contains, safe_regex,
//     string_match, range, present; invert_match,
//     treat_missing_header_as_empty; pseudo-headers :method, :authority, :path,
//     :scheme; repeated headers joined with ","); query_parameters
//     (string_match, present_match; first value of a repeated key; values as
//     sent, not URL-decoded, as Envoy does); grpc.
//   - Actions: route (cluster, weighted_clusters with per-cluster header ops
//     and host_rewrite_literal, timeout, retry_policy, request_mirror_policies,
//     prefix_rewrite, regex_rewrite, host_rewrite_literal), redirect (scheme,
//     host, port, path, prefix and regex rewrite, strip_query, response code)
//     and direct_response (inline body within
//     max_direct_response_body_size_bytes).
//   - Header operations at route configuration, virtual host, route and
//     weighted cluster level with every append_action and keep_empty_value,
//     evaluated in Envoy's order (see HeaderOps).
//   - Retry and mirror policies fall back from route to virtual host (mirrors
//     also to the route configuration); the fault filter's per-route config
//     (HTTPFault, optionally inside a FilterConfig) from route to virtual host
//     to route configuration. Other filters' typed_per_filter_config entries
//     are not read here.
//
// # Not supported (Compile refuses them)
//
// VHDS, matcher trees, cookies, runtime_fraction, TLS-context, metadata and
// filter-state matches, CONNECT matching, cluster_header and cluster
// specifier plugins, host rewrites other than a literal, path_rewrite and
// path rewrite/match policies, internal redirects, hedging, rate limits,
// CORS, per-try idle timeouts, rate-limited retry back-off, retriable
// headers, header-controlled or gRPC faults, body formats and non-inline
// bodies, and header values with substitution commands (%...%; "%%" is a
// literal percent sign).
//
// # Where we differ from Envoy, and why
//
//   - A Host with a port that matches no exact or wildcard domain is tried
//     again without its port before falling back to "*": the waypoint serves
//     one listener per service port, so the port carries no routing choice.
//   - prefix_rewrite does not produce a double slash: rewriting prefix "/api"
//     to "/" turns "/api/x" into "/x" (Envoy: "//x"), which is what Gateway
//     API's ReplacePrefixMatch means and what no one wants otherwise.
//   - Path matching never looks at the query string, for prefix matches too.
//   - A header matcher on "host" reads :authority (Go keeps Host apart from
//     the other headers; Envoy would see no such header).
//   - No x-envoy-original-path or x-envoy-original-host headers are added.
//   - Among retry_on conditions only 5xx, gateway-error, reset,
//     connect-failure, refused-stream, retriable-4xx and
//     retriable-status-codes are understood; others (gRPC status conditions,
//     retriable-headers, envoy-ratelimited, ...) are ignored.
//   - A weighted cluster's host_rewrite_literal wins over the route's (Envoy
//     applies the route's last): the more specific setting should win.
package route

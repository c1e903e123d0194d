// Package telemetry is the waypoint's observability: Istio-named Prometheus
// metrics, a JSON access log and W3C trace-context propagation.
//
// # Metrics
//
// Metrics registers, in a registry the waypoint owns (with the Go and
// process collectors, as ztunnel's metrics do), the metrics Istio's proxies
// report, under their names and with their label names, so that existing
// Istio dashboards and alerts work for the waypoint:
//
//   - HTTP and gRPC: istio_requests_total, istio_request_duration_milliseconds,
//     istio_request_bytes and istio_response_bytes (see ObserveRequest);
//   - TCP: istio_tcp_connections_opened_total, istio_tcp_connections_closed_total,
//     istio_tcp_sent_bytes_total and istio_tcp_received_bytes_total.
//
// All carry reporter="waypoint" and Istio's standard labels: the workload,
// namespace, principal, canonical service and revision, app, version and
// cluster of source and destination, the destination service (hostname, name
// and namespace), and for requests the response code, gRPC status and response
// flags. Label names match ztunnel's (dataplane/ztunnel/metrics). A field left
// empty is rendered "unknown", as ztunnel does; response_flags defaults to "-"
// and grpc_response_status stays empty for non-gRPC requests, as Istio's do.
//
// Besides the Istio metrics, the waypoint's filters count what they do under
// ambientmesh_waypoint_* (RBAC decisions, JWT failures, retries, injected
// faults, mirrored requests), with small fixed label sets; WriteStats prints
// them for the admin /stats page.
//
// The waypoint fills the destination's labels from the endpoint metadata and
// the source's from the client's identity alone (see the waypoint package's
// labels), so the source's workload, canonical names, app, version and cluster
// are "unknown". Not reported: request_operation, custom tags and per-request
// stat overrides (Istio's Telemetry API), and Envoy's own envoy_* statistics.
// TCP byte counters advance when the waypoint reports them (TCPBytes,
// TCPClosed), not continuously.
//
// # Access log
//
// AccessLog writes one JSON object per request (see Entry for the fields).
// Unlike Envoy's JSON access log, empty strings are logged as "" rather than
// omitted or null, so that every line has every field with a stable type.
//
// # Trace context
//
// Propagate carries a W3C traceparent (version 00) through the waypoint as a
// new hop: the trace id and sampled flag are kept, the parent id becomes a
// fresh span id. The waypoint records no spans and exports nothing to a
// tracing backend; it only keeps traces connected and gives the access log
// the ids to correlate with. Other trace formats (B3, x-cloud-trace-context)
// are passed through untouched.
package telemetry

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
// All carry reporter="waypoint". Label names match ztunnel's
// (dataplane/ztunnel/metrics) where both have them, plus Istio's app, version,
// service name/namespace, response code, gRPC status and response flags. A
// field left empty is rendered "unknown", as ztunnel does; response_flags
// defaults to "-" and grpc_response_status stays empty for non-gRPC requests,
// as Istio's do.
//
// Besides the Istio metrics, the waypoint's filters count what they do under
// ambientmesh_waypoint_* (RBAC decisions, JWT failures, retries, injected
// faults, mirrored requests), with small fixed label sets; WriteStats prints
// them for the admin /stats page.
//
// Not reported: source_cluster/destination_cluster and the other multi-cluster
// labels (there is one cluster), request_operation, custom tags and
// per-request stat overrides (Istio's Telemetry API), and Envoy's own
// envoy_* statistics. TCP byte counters advance when the waypoint reports
// them (TCPBytes, TCPClosed), not continuously.
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

// Package upstream holds the waypoint's clusters as runtime objects: the
// Envoy CDS Cluster (type EDS) and its EDS ClusterLoadAssignment compiled into
// a host list with load balancing, passive outlier detection, circuit breakers
// and a retry budget, plus the counters the admin /clusters dump shows. It
// does not dial: the proxy core asks a Cluster for a Host, dials it (HBONE or
// plain TCP, as the host's metadata says) and reports how the request ended.
//
//	set := upstream.NewSet(upstream.Options{})     // time.Now and math/rand/v2 by default
//	err := set.Update(clusters, loads)             // all or nothing: an error is an xDS NACK
//	c := set.Cluster("outbound|8080||reviews.shop.svc.cluster.local")
//	done, err := c.StartRequest()                  // once per request, for all its attempts
//	h, err := c.Pick()
//	h.Begin(); ...; h.End(upstream.Outcome{Status: 503})
//	rdone, err := c.StartRetry()                   // per retry attempt, held while it runs
//
// A Cluster keeps its identity across updates (same name), so done functions
// and Hosts handed out before an Update stay valid; a host whose address
// persists keeps its state (active requests, ejection, counters). All methods
// are safe for concurrent use; Options.Rand must be too.
//
// # Endpoints
//
// Each LbEndpoint is a socket address podIP:targetPort (TCP, literal IP,
// numeric port) with health_status (UNKNOWN and HEALTHY are healthy, every
// other status, DEGRADED included, is not) and the filter metadata
// "ambientmesh.dev/endpoint" = {tunnel: "hbone"|"none", identity:
// "spiffe://..."}; hbone requires a valid mesh identity. Its optional string
// fields workload, canonical_service, canonical_revision, app, version and
// cluster become Host.Workload, which the waypoint's metrics report. An
// endpoint without that metadata is reached over plain TCP, as an Envoy
// would. When an address is listed twice the first listing wins. The load
// assignment is looked up by the cluster's eds_cluster_config.service_name,
// or else its name.
//
// # Load balancing
//
// lb_policy ROUND_ROBIN (default), LEAST_REQUEST (choice_count random hosts,
// default 2, the one with fewest active requests wins; all hosts are compared
// when there are no more than choice_count) and RANDOM. The available hosts
// are the healthy, non-ejected ones. Panic mode as Envoy computes it for one
// priority: when fewer than healthy_panic_threshold percent (default 50; 0
// disables) of the hosts are available, and the load assignment's
// overprovisioning_factor (default 140) does not lift them to 100%, Pick
// chooses among all hosts, ejected and unhealthy ones included, because
// sending load to a few survivors would only take them down too.
//
// # Outlier detection
//
// Only when the cluster has outlier_detection (as in Envoy). Consecutive
// errors, as Envoy counts them: a 5xx response counts for consecutive_5xx
// (default 5), a 502/503/504 also for consecutive_gateway_failure (default
// 5); a connect failure or reset counts as a 503. With
// split_external_local_origin_errors, connect failures and resets count for
// consecutive_local_origin_failure instead, and any response clears that
// count. Any non-5xx response clears the 5xx and gateway counts. Reaching a
// threshold clears that count and ejects the host with probability enforcing_*
// percent: enforcing_consecutive_5xx and enforcing_consecutive_local_origin_failure
// default to 100, enforcing_consecutive_gateway_failure to 0 as in Envoy, so
// gateway failures only eject when the control plane asks (5xx ejection sees
// them anyway).
//
// An ejection is allowed only while (ejected hosts + 1) stays within
// max_ejection_percent (default 10) of the cluster's hosts — Envoy's current
// rule, under which a cluster of fewer than 10 hosts ejects nothing at the
// default — or, with always_eject_one_host, when no host is ejected. The host
// stays out for min(base_ejection_time × multiplier, max_ejection_time) plus
// a random jitter up to max_ejection_time_jitter; the multiplier grows by one
// per ejection and, as in Envoy, shrinks by one for every interval (default
// 10s) the host has spent back in service. Defaults: base 30s, max 300s (or
// base, if larger; a max below base is an error). Unlike Envoy, which returns
// hosts on its interval timer, a host returns exactly when its time is up,
// checked lazily against Options.Now; returning clears its counts.
//
// Not implemented: success-rate and failure-percentage detection (Istio
// disables success-rate ejection too), detect_degraded_hosts, extension
// monitors, active health checking (health_checks are ignored).
//
// # Circuit breakers and retry budget
//
// The first circuit_breakers.thresholds entry with priority DEFAULT (HIGH is
// ignored: every request is DEFAULT): max_requests, max_pending_requests,
// max_connections (each default 1024) and max_retries (default 3), each a
// limit on a gauge the caller holds through a done function or a ConnSlot. At
// max_connections a new HTTP connection waits as a pending request
// (WaitConnection, which closes idle connections to make room) and a TCP one is
// refused (StartConnection). Deviation from Envoy: max_requests counts
// requests, not upstream attempts (retries are limited separately), and a
// pending request is also an active one. A retry_budget replaces max_retries:
// concurrent retries may reach budget_percent (default 20) of the active
// requests, but never fall below min_retry_concurrency (default 3). Because
// retries are not requests, budget 100% at most doubles the load.
// budget_interval, track_remaining, max_connection_pools and
// per_host_thresholds are ignored.
//
// # Rejected configuration
//
// Fields whose loss would send traffic elsewhere are rejected rather than
// ignored: a cluster type other than EDS, another lb_policy or a
// load_balancing_policy, lb_subset_config selectors,
// locality_weighted_lb_config, transport sockets (the tunnel comes from
// endpoint metadata), endpoint priorities other than 0, differing endpoint
// load_balancing_weights, named endpoints, LEDS, drop_overloads and
// non-IP or non-TCP addresses.
package upstream

package telemetry

import (
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Reporter is the reporter label of every Istio metric the waypoint reports.
const Reporter = "waypoint"

// RequestProtocol values.
const (
	ProtocolHTTP = "http"
	ProtocolGRPC = "grpc"
	ProtocolTCP  = "tcp"
)

// ConnectionSecurityPolicy values.
const (
	SecurityMutualTLS = "mutual_tls"
	SecurityNone      = "none"
)

// Envoy's short response flags (Labels.ResponseFlags and the access log's
// response_flags). Several flags are joined with ",", as Envoy does.
const (
	FlagNone                            = "-"
	FlagNoHealthyUpstream               = "UH"
	FlagUpstreamConnectionFailure       = "UF"
	FlagUpstreamOverflow                = "UO"
	FlagNoRoute                         = "NR"
	FlagUpstreamRetryLimitExceeded      = "URX"
	FlagUpstreamRequestTimeout          = "UT"
	FlagDelayInjected                   = "DI"
	FlagFaultInjected                   = "FI"
	FlagUpstreamConnectionTermination   = "UC"
	FlagUpstreamRemoteReset             = "UR"
	FlagDownstreamConnectionTermination = "DC"
	FlagRBACAccessDenied                = "RBAC"
	FlagNoClusterFound                  = "NC"
)

// Labels are Istio's standard labels for one request (or TCP connection) seen
// by the waypoint; reporter is always "waypoint". Labels is comparable: the
// metrics use it as a map key to find a request's series without building
// label-value slices.
type Labels struct {
	SourceWorkload, SourceWorkloadNamespace, SourcePrincipal, SourceApp, SourceVersion string
	SourceCanonicalService, SourceCanonicalRevision, SourceCluster                     string

	DestinationWorkload, DestinationWorkloadNamespace, DestinationPrincipal, DestinationApp, DestinationVersion string
	DestinationCanonicalService, DestinationCanonicalRevision, DestinationCluster                               string

	DestinationService, DestinationServiceName, DestinationServiceNamespace string

	RequestProtocol          string // "http", "grpc" or "tcp"
	ResponseCode             int    // 0 for tcp
	GRPCResponseStatus       string // "" unless grpc
	ResponseFlags            string // Flag* constants; "" means "-"
	ConnectionSecurityPolicy string // "mutual_tls" or "none"
}

// The label names are ztunnel's, in its order, with Istio's other labels
// inserted next to their kin.
var (
	peerLabelNames = []string{
		"reporter",
		"source_workload", "source_workload_namespace", "source_principal", "source_app", "source_version",
		"source_canonical_service", "source_canonical_revision", "source_cluster",
		"destination_workload", "destination_workload_namespace", "destination_principal", "destination_app", "destination_version",
		"destination_canonical_service", "destination_canonical_revision", "destination_cluster",
		"destination_service", "destination_service_name", "destination_service_namespace",
	}
	requestLabelNames = append(append([]string{}, peerLabelNames...),
		"request_protocol", "response_code", "grpc_response_status", "response_flags", "connection_security_policy")
	tcpLabelNames = append(append([]string{}, peerLabelNames...),
		"request_protocol", "response_flags", "connection_security_policy")
)

func (l Labels) peerValues() []string {
	return []string{
		Reporter,
		orUnknown(l.SourceWorkload), orUnknown(l.SourceWorkloadNamespace), orUnknown(l.SourcePrincipal),
		orUnknown(l.SourceApp), orUnknown(l.SourceVersion),
		orUnknown(l.SourceCanonicalService), orUnknown(l.SourceCanonicalRevision), orUnknown(l.SourceCluster),
		orUnknown(l.DestinationWorkload), orUnknown(l.DestinationWorkloadNamespace), orUnknown(l.DestinationPrincipal),
		orUnknown(l.DestinationApp), orUnknown(l.DestinationVersion),
		orUnknown(l.DestinationCanonicalService), orUnknown(l.DestinationCanonicalRevision), orUnknown(l.DestinationCluster),
		orUnknown(l.DestinationService), orUnknown(l.DestinationServiceName), orUnknown(l.DestinationServiceNamespace),
	}
}

func (l Labels) requestValues() []string {
	return append(l.peerValues(),
		orUnknown(l.RequestProtocol), strconv.Itoa(l.ResponseCode), l.GRPCResponseStatus,
		orNone(l.ResponseFlags), orUnknown(l.ConnectionSecurityPolicy))
}

// tcpValues always says "tcp": these are the TCP metrics, whatever the
// caller put in RequestProtocol (ztunnel does the same).
func (l Labels) tcpValues() []string {
	return append(l.peerValues(), ProtocolTCP, orNone(l.ResponseFlags), orUnknown(l.ConnectionSecurityPolicy))
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func orNone(flags string) string {
	if flags == "" {
		return FlagNone
	}
	return flags
}

// Istio's default buckets.
var (
	durationBuckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
		300000, 600000, 1800000, 3600000}
	sizeBuckets = prometheus.ExponentialBuckets(1, 10, 10) // 1 B … 1 GB
)

// The name prefix of the waypoint's own (non-Istio) metrics.
const statsPrefix = "ambientmesh_waypoint_"

// Metrics is the waypoint's set of metrics. It is safe for concurrent use.
type Metrics struct {
	registry *prometheus.Registry

	requests      *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	requestBytes  *prometheus.HistogramVec
	responseBytes *prometheus.HistogramVec
	requestSeries seriesCache[requestSeries]

	tcpOpened   *prometheus.CounterVec
	tcpClosed   *prometheus.CounterVec
	tcpSent     *prometheus.CounterVec
	tcpReceived *prometheus.CounterVec
	tcpSeries   seriesCache[tcpSeries]

	rbacAllowed *prometheus.CounterVec
	rbacDenied  *prometheus.CounterVec
	jwtFailures *prometheus.CounterVec
	retries     *prometheus.CounterVec
	mirrors     *prometheus.CounterVec
	mirrorDrops *prometheus.CounterVec
	faultDelays prometheus.Counter
	faultAborts prometheus.Counter
}

// requestSeries and tcpSeries are one label set's children of the vectors,
// looked up once and then reused for every request with the same Labels.
type requestSeries struct {
	total                                 prometheus.Counter
	duration, requestBytes, responseBytes prometheus.Observer
}

type tcpSeries struct {
	opened, closed, sent, received prometheus.Counter
}

// NewMetrics registers the waypoint's metrics on reg, together with the Go
// and process collectors unless reg has them already. A nil reg gets a new
// registry. It panics if reg already holds the waypoint's metrics: that is a
// programming error.
func NewMetrics(reg *prometheus.Registry) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &Metrics{
		registry: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istio_requests_total", Help: "Requests handled by the waypoint.",
		}, requestLabelNames),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "istio_request_duration_milliseconds", Help: "Time from the first request byte to the last response byte, in milliseconds.",
			Buckets: durationBuckets,
		}, requestLabelNames),
		requestBytes: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "istio_request_bytes", Help: "Request size (headers and body), in bytes.", Buckets: sizeBuckets,
		}, requestLabelNames),
		responseBytes: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "istio_response_bytes", Help: "Response size (headers and body), in bytes.", Buckets: sizeBuckets,
		}, requestLabelNames),
		tcpOpened: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istio_tcp_connections_opened_total", Help: "TCP connections opened.",
		}, tcpLabelNames),
		tcpClosed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istio_tcp_connections_closed_total", Help: "TCP connections closed.",
		}, tcpLabelNames),
		tcpSent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istio_tcp_sent_bytes_total", Help: "Bytes sent to the client (response direction) on TCP connections.",
		}, tcpLabelNames),
		tcpReceived: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istio_tcp_received_bytes_total", Help: "Bytes received from the client (request direction) on TCP connections.",
		}, tcpLabelNames),
		rbacAllowed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: statsPrefix + "rbac_allowed_total", Help: "Requests or connections the RBAC filters of a listener let through (only listeners with RBAC filters count).",
		}, []string{"listener"}),
		rbacDenied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: statsPrefix + "rbac_denied_total", Help: "Requests or connections the RBAC filters of a listener denied.",
		}, []string{"listener"}),
		jwtFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: statsPrefix + "jwt_failures_total", Help: "Requests the JWT filter rejected, by the status it answered.",
		}, []string{"response_code"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: statsPrefix + "retries_total", Help: "Upstream request retries, by cluster.",
		}, []string{"cluster"}),
		mirrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: statsPrefix + "mirrored_requests_total", Help: "Requests mirrored, by the cluster they were mirrored to.",
		}, []string{"cluster"}),
		mirrorDrops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: statsPrefix + "mirror_dropped_total", Help: "Request copies not mirrored because too many mirrors were in flight, by cluster.",
		}, []string{"cluster"}),
		faultDelays: prometheus.NewCounter(prometheus.CounterOpts{
			Name: statsPrefix + "fault_delays_injected_total", Help: "Requests the fault filter delayed.",
		}),
		faultAborts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: statsPrefix + "fault_aborts_injected_total", Help: "Requests the fault filter aborted.",
		}),
	}
	m.requestSeries.newSeries = func(l Labels) *requestSeries {
		v := l.requestValues()
		return &requestSeries{
			total:         m.requests.WithLabelValues(v...),
			duration:      m.duration.WithLabelValues(v...),
			requestBytes:  m.requestBytes.WithLabelValues(v...),
			responseBytes: m.responseBytes.WithLabelValues(v...),
		}
	}
	m.tcpSeries.newSeries = func(l Labels) *tcpSeries {
		v := l.tcpValues()
		return &tcpSeries{
			opened:   m.tcpOpened.WithLabelValues(v...),
			closed:   m.tcpClosed.WithLabelValues(v...),
			sent:     m.tcpSent.WithLabelValues(v...),
			received: m.tcpReceived.WithLabelValues(v...),
		}
	}
	reg.MustRegister(m.requests, m.duration, m.requestBytes, m.responseBytes,
		m.tcpOpened, m.tcpClosed, m.tcpSent, m.tcpReceived,
		m.rbacAllowed, m.rbacDenied, m.jwtFailures, m.retries, m.mirrors, m.mirrorDrops, m.faultDelays, m.faultAborts)
	for _, c := range []prometheus.Collector{
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(c); err != nil && !errors.As(err, new(prometheus.AlreadyRegisteredError)) {
			panic(err)
		}
	}
	return m
}

// Registry is the registry the metrics are registered on (serve it on the
// metrics port).
func (m *Metrics) Registry() *prometheus.Registry { return m.registry }

// ObserveRequest records one finished HTTP or gRPC request: duration is from
// its first byte to the last byte of the response, the byte counts include
// headers. Negative byte counts count as 0.
func (m *Metrics) ObserveRequest(l Labels, duration time.Duration, requestBytes, responseBytes int64) {
	s := m.requestSeries.get(l)
	s.total.Inc()
	s.duration.Observe(float64(duration) / float64(time.Millisecond))
	s.requestBytes.Observe(float64(max(requestBytes, 0)))
	s.responseBytes.Observe(float64(max(responseBytes, 0)))
}

// TCPOpened counts a TCP connection the waypoint accepted on a TCP port.
func (m *Metrics) TCPOpened(l Labels) { m.tcpSeries.get(l).opened.Inc() }

// TCPBytes adds traffic of a TCP connection that is still open, so that
// long-lived connections show up before they close: sent is bytes sent to
// the client, received is bytes received from it, both since the last report.
func (m *Metrics) TCPBytes(l Labels, sent, received int64) {
	s := m.tcpSeries.get(l)
	if sent > 0 {
		s.sent.Add(float64(sent))
	}
	if received > 0 {
		s.received.Add(float64(received))
	}
}

// TCPClosed counts a closed TCP connection and adds the bytes not yet
// reported with TCPBytes (all of them if TCPBytes was never called).
func (m *Metrics) TCPClosed(l Labels, sent, received int64) {
	m.TCPBytes(l, sent, received)
	m.tcpSeries.get(l).closed.Inc()
}

// RBACAllowed counts a request or connection the RBAC filters of a listener allowed.
func (m *Metrics) RBACAllowed(listener string) { m.rbacAllowed.WithLabelValues(listener).Inc() }

// RBACDenied counts a request or connection the RBAC filters of a listener denied.
func (m *Metrics) RBACDenied(listener string) { m.rbacDenied.WithLabelValues(listener).Inc() }

// JWTFailed counts a request the JWT filter rejected with responseCode (401
// or 403).
func (m *Metrics) JWTFailed(responseCode int) {
	m.jwtFailures.WithLabelValues(strconv.Itoa(responseCode)).Inc()
}

// Retried counts one retry of a request to cluster.
func (m *Metrics) Retried(cluster string) { m.retries.WithLabelValues(cluster).Inc() }

// Mirrored counts one request copy sent to the mirror cluster.
func (m *Metrics) Mirrored(cluster string) { m.mirrors.WithLabelValues(cluster).Inc() }

// MirrorDropped counts a request copy dropped so that mirroring never slows the primary.
func (m *Metrics) MirrorDropped(cluster string) { m.mirrorDrops.WithLabelValues(cluster).Inc() }

// DelayInjected counts a request the fault filter delayed.
func (m *Metrics) DelayInjected() { m.faultDelays.Inc() }

// AbortInjected counts a request the fault filter aborted.
func (m *Metrics) AbortInjected() { m.faultAborts.Inc() }

// seriesCache maps Labels to the vectors' children for them. Finding a
// child through the vector costs a label-value slice and a hash per call;
// Labels is comparable, so a map lookup with it as key costs neither. The
// cache grows with the label sets seen, as the vectors themselves do.
type seriesCache[S any] struct {
	newSeries func(Labels) *S

	mu     sync.RWMutex
	series map[Labels]*S
}

func (c *seriesCache[S]) get(l Labels) *S {
	c.mu.RLock()
	s := c.series[l]
	c.mu.RUnlock()
	if s != nil {
		return s
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if s = c.series[l]; s == nil {
		if c.series == nil {
			c.series = make(map[Labels]*S)
		}
		s = c.newSeries(l)
		c.series[l] = s
	}
	return s
}

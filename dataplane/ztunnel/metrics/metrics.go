// Package metrics holds ztunnel's Prometheus metrics, named and labelled as Istio's
// ztunnel's so that existing dashboards work: istio_tcp_connections_opened_total,
// istio_tcp_connections_closed_total, istio_tcp_sent_bytes_total and
// istio_tcp_received_bytes_total, with Istio's standard labels (see Labels). The
// workload-derived labels (canonical service and revision, app, version, cluster) come
// from the Workload the control plane sends (see SetSource and SetDestination). The
// destination service is known only to the client's ztunnel (reporter="source"): the
// server's sees a connection to a pod address.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
)

// Reporter values: which end of the connection this ztunnel serves.
const (
	ReporterSource      = "source"
	ReporterDestination = "destination"
)

// Connection security values.
const (
	SecurityMutualTLS = "mutual_tls"
	SecurityNone      = "none"
)

// Labels describe one connection: Istio's label set for TCP metrics. A field left empty
// is reported as "unknown", as Istio does.
type Labels struct {
	Reporter string

	SourceWorkload, SourceWorkloadNamespace, SourcePrincipal string
	SourceCanonicalService, SourceCanonicalRevision          string
	SourceApp, SourceVersion, SourceCluster                  string

	DestinationWorkload, DestinationWorkloadNamespace, DestinationPrincipal string
	DestinationCanonicalService, DestinationCanonicalRevision               string
	DestinationApp, DestinationVersion, DestinationCluster                  string

	DestinationService, DestinationServiceName, DestinationServiceNamespace string

	ConnectionSecurityPolicy string
}

var labelNames = []string{
	"reporter",
	"source_workload", "source_workload_namespace", "source_principal",
	"source_canonical_service", "source_canonical_revision", "source_app", "source_version", "source_cluster",
	"destination_workload", "destination_workload_namespace", "destination_principal",
	"destination_canonical_service", "destination_canonical_revision", "destination_app", "destination_version", "destination_cluster",
	"destination_service", "destination_service_name", "destination_service_namespace",
	"request_protocol", "response_flags", "connection_security_policy",
}

// values are the label values in labelNames' order. request_protocol is always "tcp"
// and response_flags always "-" (no flags): ztunnel counts only the connections it
// established, and it does not parse what they carry.
func (l Labels) values() []string {
	return []string{
		l.Reporter,
		orUnknown(l.SourceWorkload), orUnknown(l.SourceWorkloadNamespace), orUnknown(l.SourcePrincipal),
		orUnknown(l.SourceCanonicalService), orUnknown(l.SourceCanonicalRevision),
		orUnknown(l.SourceApp), orUnknown(l.SourceVersion), orUnknown(l.SourceCluster),
		orUnknown(l.DestinationWorkload), orUnknown(l.DestinationWorkloadNamespace), orUnknown(l.DestinationPrincipal),
		orUnknown(l.DestinationCanonicalService), orUnknown(l.DestinationCanonicalRevision),
		orUnknown(l.DestinationApp), orUnknown(l.DestinationVersion), orUnknown(l.DestinationCluster),
		orUnknown(l.DestinationService), orUnknown(l.DestinationServiceName), orUnknown(l.DestinationServiceNamespace),
		"tcp", "-", l.ConnectionSecurityPolicy,
	}
}

// SetSource names the connection's source workload from its Workload (nil: unknown).
func (l *Labels) SetSource(w *pb.Workload) {
	if w == nil {
		return
	}
	l.SourceWorkload, l.SourceWorkloadNamespace = WorkloadName(w), w.GetNamespace()
	l.SourceCanonicalService, l.SourceCanonicalRevision = w.GetCanonicalName(), w.GetCanonicalRevision()
	l.SourceApp, l.SourceVersion, l.SourceCluster = w.GetApp(), w.GetVersion(), w.GetClusterId()
}

// SetDestination names the connection's destination workload from its Workload (nil:
// unknown).
func (l *Labels) SetDestination(w *pb.Workload) {
	if w == nil {
		return
	}
	l.DestinationWorkload, l.DestinationWorkloadNamespace = WorkloadName(w), w.GetNamespace()
	l.DestinationCanonicalService, l.DestinationCanonicalRevision = w.GetCanonicalName(), w.GetCanonicalRevision()
	l.DestinationApp, l.DestinationVersion, l.DestinationCluster = w.GetApp(), w.GetVersion(), w.GetClusterId()
}

// SetDestinationService names the Service the connection was addressed to (nil: none).
func (l *Labels) SetDestinationService(s *pb.Service) {
	if s == nil {
		return
	}
	l.DestinationService, l.DestinationServiceName, l.DestinationServiceNamespace = s.GetHostname(), s.GetName(), s.GetNamespace()
}

// WorkloadName is the workload's name for telemetry: its owner's (workload_name), else
// the pod's.
func WorkloadName(w *pb.Workload) string {
	if w.GetWorkloadName() != "" {
		return w.GetWorkloadName()
	}
	return w.GetName()
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// Metrics is one ztunnel's set of metrics, in its own registry.
type Metrics struct {
	Registry *prometheus.Registry
	opened   *prometheus.CounterVec
	closed   *prometheus.CounterVec
	sent     *prometheus.CounterVec
	received *prometheus.CounterVec
}

// New registers the metrics (and Go/process collectors) in a new registry.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		opened: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istio_tcp_connections_opened_total", Help: "The total number of TCP connections opened.",
		}, labelNames),
		closed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istio_tcp_connections_closed_total", Help: "The total number of TCP connections closed.",
		}, labelNames),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istio_tcp_sent_bytes_total", Help: "The size of total bytes sent during response in case of a TCP connection.",
		}, labelNames),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istio_tcp_received_bytes_total", Help: "The size of total bytes received during request in case of a TCP connection.",
		}, labelNames),
	}
	m.Registry.MustRegister(m.opened, m.closed, m.sent, m.received,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Opened counts a new connection.
func (m *Metrics) Opened(l Labels) { m.opened.WithLabelValues(l.values()...).Inc() }

// Closed counts a finished connection.
func (m *Metrics) Closed(l Labels) { m.closed.WithLabelValues(l.values()...).Inc() }

// Bytes adds traffic: received = client→server (request) bytes, sent = server→client.
func (m *Metrics) Bytes(l Labels, received, sent int64) {
	v := l.values()
	if received > 0 {
		m.received.WithLabelValues(v...).Add(float64(received))
	}
	if sent > 0 {
		m.sent.WithLabelValues(v...).Add(float64(sent))
	}
}

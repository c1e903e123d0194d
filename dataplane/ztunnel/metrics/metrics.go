// Package metrics holds ztunnel's Prometheus metrics, named and labelled as Istio's
// ztunnel's so that existing dashboards work.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
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

// Labels describe one connection (Istio's label set for TCP metrics, minus the ones we
// have no data for).
type Labels struct {
	Reporter                     string
	SourceWorkload               string
	SourceWorkloadNamespace      string
	SourcePrincipal              string
	DestinationWorkload          string
	DestinationWorkloadNamespace string
	DestinationPrincipal         string
	DestinationService           string
	ConnectionSecurityPolicy     string
}

var labelNames = []string{
	"reporter",
	"source_workload", "source_workload_namespace", "source_principal",
	"destination_workload", "destination_workload_namespace", "destination_principal",
	"destination_service", "request_protocol", "connection_security_policy",
}

func (l Labels) values() []string {
	return []string{
		l.Reporter,
		orUnknown(l.SourceWorkload), orUnknown(l.SourceWorkloadNamespace), orUnknown(l.SourcePrincipal),
		orUnknown(l.DestinationWorkload), orUnknown(l.DestinationWorkloadNamespace), orUnknown(l.DestinationPrincipal),
		orUnknown(l.DestinationService), "tcp", l.ConnectionSecurityPolicy,
	}
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

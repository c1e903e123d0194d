package agent

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the agent's Prometheus series.
type Metrics struct {
	EnrolledPods     prometheus.Gauge
	RuleOperations   *prometheus.CounterVec
	Failures         *prometheus.CounterVec
	ZtunnelConnected prometheus.Gauge
	PluginInstalls   prometheus.Counter
}

// NewMetrics creates and registers the series on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		EnrolledPods: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ambient_cni_enrolled_pods", Help: "Pods on this node whose traffic is captured into ztunnel."}),
		RuleOperations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ambient_cni_rule_operations_total",
			Help: "Redirection rule operations by backend, operation (install, remove, sync_host) and result (changed, unchanged, error)."},
			[]string{"backend", "operation", "result"}),
		Failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ambient_cni_failures_total",
			Help: "Failures by stage (rules, host_rules, netns, ztunnel, annotate, cni_request, cni_peer)."},
			[]string{"stage"}),
		ZtunnelConnected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ambient_cni_ztunnel_connected", Help: "1 while the hand-off connection to ztunnel is up."}),
		PluginInstalls: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ambient_cni_plugin_installs_total", Help: "Times the plugin binary or conflist entry was (re)written."}),
	}
	reg.MustRegister(m.EnrolledPods, m.RuleOperations, m.Failures, m.ZtunnelConnected, m.PluginInstalls)
	return m
}

func (m *Metrics) ruleOp(backend, op string, changed bool, err error) {
	result := "unchanged"
	switch {
	case err != nil:
		result = "error"
	case changed:
		result = "changed"
	}
	m.RuleOperations.WithLabelValues(backend, op, result).Inc()
}

package waypoint

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ambientmesh/ambient-operator/dataplane/waypoint/telemetry"
)

// The metrics port answers Istio's scrape path as well as /metrics.
func TestMetricsPortServesStatsPrometheus(t *testing.T) {
	w := &Waypoint{metrics: telemetry.NewMetrics(nil)}
	w.metrics.TCPOpened(telemetry.Labels{})
	for _, path := range []string{"/stats/prometheus", "/metrics"} {
		rec := httptest.NewRecorder()
		w.metricsHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "istio_tcp_connections_opened_total{") {
			t.Errorf("GET %s = %d, without istio_tcp_connections_opened_total:\n%.300s", path, rec.Code, rec.Body.String())
		}
	}
}

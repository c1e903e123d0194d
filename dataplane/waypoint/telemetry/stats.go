package telemetry

import (
	"io"
	"strconv"
	"strings"
)

// WriteStats writes the waypoint's filter counters (the ambientmesh_waypoint_*
// metrics) for the admin /stats page, one per line and sorted, in the
// "name: value" form of Envoy's /stats with the labels kept in Prometheus
// notation:
//
//	ambientmesh_waypoint_rbac_denied_total{filter="deny"}: 3
//
// Counters that have not counted anything yet are listed only when they have
// no labels.
func (m *Metrics) WriteStats(w io.Writer) error {
	families, err := m.registry.Gather()
	if err != nil {
		return err
	}
	// Built in memory (a strings.Builder write cannot fail), written out at once.
	var page strings.Builder
	for _, f := range families {
		if !strings.HasPrefix(f.GetName(), statsPrefix) {
			continue
		}
		for _, metric := range f.GetMetric() {
			page.WriteString(f.GetName())
			if len(metric.GetLabel()) > 0 {
				page.WriteByte('{')
				for i, l := range metric.GetLabel() {
					if i > 0 {
						page.WriteByte(',')
					}
					page.WriteString(l.GetName())
					page.WriteByte('=')
					page.WriteString(strconv.Quote(l.GetValue()))
				}
				page.WriteByte('}')
			}
			page.WriteString(": ")
			page.WriteString(strconv.FormatFloat(metric.GetCounter().GetValue(), 'f', -1, 64))
			page.WriteByte('\n')
		}
	}
	_, err = io.WriteString(w, page.String())
	return err
}

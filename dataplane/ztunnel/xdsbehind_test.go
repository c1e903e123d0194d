package ztunnel_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/internal/testwait"
)

// TestNotReadyWhileConfigurationIsBehind: after ztunnel rejects a response, readiness on
// 15021 turns false and ambientmesh_xds_config_behind says so, until a new stream brings
// the server's state again (here once the bad workload is fixed): the valid workload of
// the rejected response arrives too.
func TestNotReadyWhileConfigurationIsBehind(t *testing.T) {
	m := newMesh(t, true, 5*time.Second)
	testwait.For(t, "ready", 10*time.Second, func() bool { return ready(m.a) })
	readiness := func() (int, string) {
		rec := httptest.NewRecorder()
		m.a.ReadinessHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/healthz/ready", nil))
		return rec.Code, rec.Body.String()
	}
	behind := func() float64 {
		mfs, err := m.a.Metrics.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			for _, metric := range mf.GetMetric() {
				if mf.GetName() == "ambientmesh_xds_config_behind" && matches(metric, map[string]string{"type": "Workload"}) {
					return metric.GetGauge().GetValue()
				}
			}
		}
		t.Fatal("no ambientmesh_xds_config_behind{type=Workload}")
		return 0
	}

	m.xds.Set(t, pb.WorkloadTypeURL, map[string]proto.Message{
		"web-uid":    workload("web-uid", "web", "web", "127.10.0.7"),
		"broken-uid": workload("broken-uid", "broken", "web", "not-an-ip"),
	})
	testwait.For(t, "not ready", 10*time.Second, func() bool { return !ready(m.a) })
	if code, body := readiness(); code != http.StatusServiceUnavailable || !strings.Contains(body, "behind the control plane") || !strings.Contains(body, "not-an-ip") {
		t.Fatalf("/healthz/ready = %d %q, want 503 saying the configuration is behind and why", code, body)
	}
	if got := behind(); got != 1 {
		t.Fatalf("ambientmesh_xds_config_behind{type=Workload} = %v, want 1", got)
	}

	m.xds.Set(t, pb.WorkloadTypeURL, map[string]proto.Message{"broken-uid": workload("broken-uid", "broken", "web", "127.10.0.8")})
	testwait.For(t, "ready again", 10*time.Second, func() bool { return ready(m.a) })
	if m.a.Store.Workload("web-uid") == nil {
		t.Fatal("ready again without the valid workload of the rejected response")
	}
	if code, _ := readiness(); code != http.StatusOK {
		t.Fatalf("/healthz/ready = %d once level again", code)
	}
	if got := behind(); got != 0 {
		t.Fatalf("ambientmesh_xds_config_behind{type=Workload} = %v once level again", got)
	}
}

package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/dataplane/waypoint/telemetry"
	ztmetrics "github.com/ambientmesh/ambient-operator/dataplane/ztunnel/metrics"
)

// emitted is what a registry exposes: series name → label name → the values seen.
// Histograms expose <name>_bucket (with le), <name>_sum and <name>_count.
type emitted map[string]map[string]map[string]bool

func gatherEmitted(t *testing.T, g prometheus.Gatherer) emitted {
	t.Helper()
	families, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := emitted{}
	add := func(name string, m *dto.Metric, extra ...string) {
		if out[name] == nil {
			out[name] = map[string]map[string]bool{}
		}
		for _, l := range m.GetLabel() {
			if out[name][l.GetName()] == nil {
				out[name][l.GetName()] = map[string]bool{}
			}
			out[name][l.GetName()][l.GetValue()] = true
		}
		for _, e := range extra {
			if out[name][e] == nil {
				out[name][e] = map[string]bool{}
			}
		}
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			switch f.GetType() {
			case dto.MetricType_HISTOGRAM:
				add(f.GetName()+"_bucket", m, "le")
				add(f.GetName()+"_sum", m)
				add(f.GetName()+"_count", m)
			case dto.MetricType_SUMMARY:
				add(f.GetName(), m, "quantile")
				add(f.GetName()+"_sum", m)
				add(f.GetName()+"_count", m)
			default:
				add(f.GetName(), m)
			}
		}
	}
	return out
}

// ztunnelEmitted records a connection seen from both ends through ztunnel's metrics,
// its labels filled from Workloads and a Service as ztunnel fills them.
func ztunnelEmitted(t *testing.T) emitted {
	t.Helper()
	m := ztmetrics.New()
	for _, reporter := range []string{ztmetrics.ReporterSource, ztmetrics.ReporterDestination} {
		l := ztmetrics.Labels{Reporter: reporter, SourcePrincipal: "spiffe://cluster.local/ns/shop/sa/sleep",
			DestinationPrincipal: "spiffe://cluster.local/ns/shop/sa/echo", ConnectionSecurityPolicy: ztmetrics.SecurityMutualTLS}
		l.SetSource(&pb.Workload{Name: "sleep-1", Namespace: "shop", CanonicalName: "sleep", CanonicalRevision: "latest", ClusterId: "Kubernetes"})
		l.SetDestination(&pb.Workload{Name: "echo-1", Namespace: "shop", CanonicalName: "echo", CanonicalRevision: "v1", App: "echo", Version: "v1", ClusterId: "Kubernetes"})
		l.SetDestinationService(&pb.Service{Name: "echo", Namespace: "shop", Hostname: "echo.shop.svc.cluster.local"})
		m.Opened(l)
		m.Bytes(l, 10, 20)
		m.Closed(l)
	}
	return gatherEmitted(t, m.Registry)
}

// waypointEmitted records an HTTP request and a TCP connection through the waypoint's
// metrics.
func waypointEmitted(t *testing.T) emitted {
	t.Helper()
	m := telemetry.NewMetrics(nil)
	l := telemetry.Labels{SourcePrincipal: "spiffe://cluster.local/ns/shop/sa/sleep", DestinationService: "echo.shop.svc.cluster.local",
		DestinationServiceName: "echo", DestinationServiceNamespace: "shop", RequestProtocol: telemetry.ProtocolHTTP, ResponseCode: 200}
	m.ObserveRequest(l, time.Millisecond, 100, 200)
	m.TCPOpened(l)
	m.TCPClosed(l, 10, 20)
	return gatherEmitted(t, m.Registry())
}

// Every query of the Grafana dashboards (panel targets and template variables) names
// only metrics and labels that ztunnel or the waypoint emit, and matches reporter
// values they report. The dashboards are read from what config/grafana renders.
func TestDashboardQueriesUseEmittedNames(t *testing.T) {
	dashboards := map[string]emitted{"ztunnel.json": ztunnelEmitted(t), "waypoint.json": waypointEmitted(t)}
	objs := render(t, "config/grafana")
	if len(objs) != 1 || objs[0].GetKind() != "ConfigMap" || objs[0].GetLabels()["grafana_dashboard"] != "1" {
		t.Fatalf("config/grafana renders %d objects, want one ConfigMap labelled grafana_dashboard=1", len(objs))
	}
	data, found, err := unstructured.NestedStringMap(objs[0].Object, "data")
	if err != nil || !found {
		t.Fatalf("the ConfigMap's data: %v (found: %v)", err, found)
	}
	for file, names := range dashboards {
		t.Run(file, func(t *testing.T) {
			onDisk, err := os.ReadFile(filepath.Join(repoRoot(t), "config", "grafana", file))
			if err != nil {
				t.Fatal(err)
			}
			if data[file] != string(onDisk) {
				t.Fatalf("the ConfigMap's %s differs from config/grafana/%s", file, file)
			}
			queries := dashboardQueries(t, []byte(data[file]))
			if len(queries) < 5 {
				t.Fatalf("only %d queries found in %s", len(queries), file)
			}
			for _, q := range queries {
				for _, problem := range checkQuery(q, names) {
					t.Errorf("%s: %s", q.where, problem)
				}
			}
		})
	}
}

// query is one PromQL expression of a dashboard; label is set for a
// label_values(expr, label) template variable.
type query struct {
	where, expr, label string
}

var labelValuesCall = regexp.MustCompile(`^\s*label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$`)

func dashboardQueries(t *testing.T, raw []byte) []query {
	t.Helper()
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query string `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	var out []query
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for i, tg := range p.Targets {
			out = append(out, query{where: fmt.Sprintf("panel %q target %d", p.Title, i), expr: tg.Expr})
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		m := labelValuesCall.FindStringSubmatch(v.Query)
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(selector, label)", v.Name, v.Query)
			continue
		}
		out = append(out, query{where: "variable " + v.Name, expr: m[1], label: m[2]})
	}
	return out
}

// checkQuery lists what q refers to that the metrics do not emit.
func checkQuery(q query, names emitted) []string {
	refs, err := promRefs(q.expr)
	if err != nil {
		return []string{err.Error()}
	}
	if len(refs.selectors) == 0 {
		return []string{"no metric in " + q.expr}
	}
	var problems []string
	known := map[string]bool{} // labels of the expression's metrics
	for _, s := range refs.selectors {
		series, ok := names[s.metric]
		if !ok {
			problems = append(problems, "metric "+s.metric+" is not emitted")
			continue
		}
		for l := range series {
			known[l] = true
		}
		for _, m := range s.matchers {
			values, ok := series[m.name]
			switch {
			case !ok:
				problems = append(problems, fmt.Sprintf("%s has no label %s", s.metric, m.name))
			case m.name == "reporter" && m.op == "=" && !values[m.value]:
				problems = append(problems, fmt.Sprintf("%s is never reported with reporter=%q", s.metric, m.value))
			}
		}
	}
	for _, l := range append(refs.grouping, q.label) {
		if l != "" && !known[l] {
			problems = append(problems, "label "+l+" is not a label of the query's metrics")
		}
	}
	return problems
}

// The PromQL reader the dashboard check relies on.
func TestPromRefs(t *testing.T) {
	for _, tc := range []struct {
		expr      string
		selectors []string // metric{label op value,...}
		grouping  []string
		err       string
	}{
		{expr: `up`, selectors: []string{"up{}"}},
		{expr: `sum by (a, b) (rate(x_total{c="1", d=~"$ns"}[$__rate_interval]))`,
			selectors: []string{`x_total{c="1",d=~"$ns"}`}, grouping: []string{"a", "b"}},
		{expr: `histogram_quantile(0.99, sum(rate(h_bucket{e!~"5.."}[5m])) by (le))`,
			selectors: []string{`h_bucket{e!~"5.."}`}, grouping: []string{"le"}},
		{expr: `sum(a{x="}{,"}) / on (y) group_left (z) sum without (w) (b offset 5m) > bool 0`,
			selectors: []string{`a{x="}{,"}`, "b{}"}, grouping: []string{"y", "z", "w"}},
		{expr: `a and ignoring (p) b or c unless d`, selectors: []string{"a{}", "b{}", "c{}", "d{}"}, grouping: []string{"p"}},
		{expr: `sum(x{y="a\"b"})`, selectors: []string{`x{y="a\"b"}`}},
		{expr: `{job="a"}`, err: "without a metric name"},
		{expr: `x{y}`, err: "matcher"},
		{expr: `x{y="a"`, err: "unterminated"},
		{expr: `x[5m`, err: "unterminated"},
	} {
		t.Run(tc.expr, func(t *testing.T) {
			refs, err := promRefs(tc.expr)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one about %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, s := range refs.selectors {
				var ms []string
				for _, m := range s.matchers {
					ms = append(ms, fmt.Sprintf("%s%s%q", m.name, m.op, m.value))
				}
				got = append(got, s.metric+"{"+strings.Join(ms, ",")+"}")
			}
			if !slices.Equal(got, tc.selectors) || !slices.Equal(refs.grouping, tc.grouping) {
				t.Errorf("selectors %v grouping %v, want %v %v", got, refs.grouping, tc.selectors, tc.grouping)
			}
		})
	}
}

func TestCheckQueryFindsUnknownNames(t *testing.T) {
	names := ztunnelEmitted(t)
	for _, tc := range []struct {
		expr, want string
	}{
		{`rate(istio_tcp_connections_opened{reporter="destination"}[1m])`, "metric istio_tcp_connections_opened is not emitted"},
		{`istio_tcp_sent_bytes_total{destination_pod="x"}`, "has no label destination_pod"},
		{`istio_tcp_sent_bytes_total{reporter="ztunnel"}`, `never reported with reporter="ztunnel"`},
		{`sum by (response_code) (istio_tcp_sent_bytes_total)`, "label response_code is not a label"},
	} {
		problems := checkQuery(query{expr: tc.expr}, names)
		if len(problems) != 1 || !strings.Contains(problems[0], tc.want) {
			t.Errorf("checkQuery(%s) = %v, want one problem about %q", tc.expr, problems, tc.want)
		}
	}
	if problems := checkQuery(query{expr: `sum by (destination_cluster) (rate(istio_tcp_sent_bytes_total{reporter="source"}[1m]))`}, names); len(problems) != 0 {
		t.Errorf("a valid query has problems: %v", problems)
	}
}

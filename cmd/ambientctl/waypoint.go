package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
)

// The waypoint views read a waypoint pod's admin endpoint (127.0.0.1:15000 inside the
// pod, localhost only), as the ztunnel views read ztunnel's. The pods are found in the
// cluster (label ambientmesh.dev/waypoint=NAME in the namespace); the endpoint is
// reached as --via says (see admin.go).

// Type URLs of the Envoy resources a waypoint holds, in the order they are shown.
var envoyTypes = []struct{ url, short string }{
	{"type.googleapis.com/envoy.config.listener.v3.Listener", "Listener"},
	{"type.googleapis.com/envoy.config.route.v3.RouteConfiguration", "RouteConfiguration"},
	{"type.googleapis.com/envoy.config.cluster.v3.Cluster", "Cluster"},
	{"type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment", "ClusterLoadAssignment"},
}

// waypointViews are the waypoint subcommands, with what they show.
var waypointViews = []struct{ name, short string }{
	{"status", "the Waypoint's conditions and each of its pods' xDS state"},
	{"config", "every xDS resource the waypoint holds"},
	{"clusters", "the waypoint's clusters and endpoints: tunnel, identity, health, requests"},
	{"routes", "the waypoint's routes in match order"},
}

func waypointCommand(g *globalFlags) *cobra.Command {
	cmd := groupCommand("waypoint", "a waypoint: its status and configuration, from its pods' admin endpoints")
	for _, v := range waypointViews {
		cmd.AddCommand(waypointViewCommand(g, v.name, v.short))
	}
	return cmd
}

func waypointViewCommand(g *globalFlags, view, short string) *cobra.Command {
	var (
		podName string
		admin   adminFlags
	)
	cmd := &cobra.Command{
		Use:   view + " NAME",
		Short: short,
		Long: short + ".\n\nThe waypoint's pods are those labelled " + meshv1alpha1.LabelWaypoint + "=NAME in the namespace (-n); " +
			"status asks each, the other views the first ready one (or --pod).",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return fmt.Errorf("waypoint %s: want exactly one waypoint name, got %q", view, args)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := admin.resolve(cmd); err != nil {
				return err
			}
			return runWaypoint(cmd.OutOrStdout(), g, admin, view, args[0], podName)
		},
	}
	cmd.Flags().StringVar(&podName, "pod", "", "ask this pod of the waypoint (default: every pod for status, else the first ready one)")
	admin.bind(cmd)
	return cmd
}

func runWaypoint(out io.Writer, g *globalFlags, admin adminFlags, view, name, podName string) error {
	namespace, err := g.currentNamespace()
	if err != nil {
		return err
	}
	cl, cfg, err := g.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	pods, err := waypointPods(ctx, cl, namespace, name, podName)
	if err != nil {
		return err
	}
	if admin.via == viaAddress && len(pods) > 1 {
		return fmt.Errorf("waypoint %s/%s has %d pods: name the one --admin-address reaches with --pod", namespace, name, len(pods))
	}
	ask := func(pod corev1.Pod, path string) ([]byte, error) {
		return podAdmin(cfg, admin, pod, path)
	}
	if view == "status" {
		return waypointStatus(ctx, cl, out, g.output, namespace, name, pods, ask)
	}
	pod := preferred(pods)
	path := map[string]string{"config": "/config_dump", "clusters": "/clusters", "routes": "/config_dump"}[view]
	body, err := ask(pod, path)
	if err != nil {
		return err
	}
	switch view {
	case "config":
		var dump configDump
		if err := json.Unmarshal(body, &dump); err != nil {
			return fmt.Errorf("waypoint pod %s: /config_dump: %w", pod.Name, err)
		}
		return write(out, g.output, json.RawMessage(body), configTable(dump))
	case "clusters":
		var clusters []clusterStatus
		if err := json.Unmarshal(body, &clusters); err != nil {
			return fmt.Errorf("waypoint pod %s: /clusters: %w", pod.Name, err)
		}
		return write(out, g.output, json.RawMessage(body), clustersTable(clusters))
	default:
		var dump configDump
		if err := json.Unmarshal(body, &dump); err != nil {
			return fmt.Errorf("waypoint pod %s: /config_dump: %w", pod.Name, err)
		}
		routes, err := routeConfigs(dump)
		if err != nil {
			return fmt.Errorf("waypoint pod %s: %w", pod.Name, err)
		}
		return write(out, g.output, routes, routesTable(routes))
	}
}

// waypointPods lists the waypoint's pods by name (only podName when set).
func waypointPods(ctx context.Context, cl client.Client, namespace, name, podName string) ([]corev1.Pod, error) {
	var list corev1.PodList
	if err := cl.List(ctx, &list, client.InNamespace(namespace), client.MatchingLabels{meshv1alpha1.LabelWaypoint: name}); err != nil {
		return nil, fmt.Errorf("listing the pods of waypoint %s/%s: %w", namespace, name, err)
	}
	pods := list.Items
	if podName != "" {
		pods = slices.DeleteFunc(pods, func(p corev1.Pod) bool { return p.Name != podName })
	}
	if len(pods) == 0 {
		return nil, fmt.Errorf("waypoint %s/%s has no pod%s (kubectl get pods -n %s -l %s=%s)", namespace, name,
			map[bool]string{true: " named " + podName}[podName != ""], namespace, meshv1alpha1.LabelWaypoint, name)
	}
	slices.SortFunc(pods, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	return pods, nil
}

// podAdmin GETs path from the pod's admin endpoint, reached as admin says.
func podAdmin(cfg *rest.Config, admin adminFlags, pod corev1.Pod, path string) ([]byte, error) {
	dial, addr, err := admin.podDialer(cfg, pod)
	if err == nil {
		var body []byte
		if body, err = adminRequest(dial, addr, http.MethodGet, path); err == nil {
			return body, nil
		}
	}
	hint := ""
	if admin.via == viaPortForward {
		hint = "; on the local mesh, use --via netns"
	}
	return nil, fmt.Errorf("waypoint admin of %s/%s: %w%s", pod.Namespace, pod.Name, err, hint)
}

// configDump is what the waypoint's /config_dump holds, as far as ambientctl reads it.
type configDump struct {
	Node      string                    `json:"node"`
	Resources map[string][]heldResource `json:"resources"`
	LastNack  string                    `json:"lastNack"`
	XDS       *struct {
		Connected   bool
		Connects    int
		Acks, Nacks int
		LastNack    string
		LastError   string
	} `json:"xds"`
}

type heldResource struct {
	Name     string          `json:"name"`
	Version  string          `json:"version"`
	Resource json.RawMessage `json:"resource"`
}

// configTable: one row per held resource, by type then name.
func configTable(d configDump) Table {
	t := Table{Headers: []string{"TYPE", "NAME", "VERSION"}}
	for _, typ := range envoyTypes {
		for _, r := range d.Resources[typ.url] {
			t.Rows = append(t.Rows, []string{typ.short, r.Name, r.Version})
		}
	}
	for url, list := range d.Resources {
		if !slices.ContainsFunc(envoyTypes, func(e struct{ url, short string }) bool { return e.url == url }) {
			for _, r := range list {
				t.Rows = append(t.Rows, []string{url, r.Name, r.Version})
			}
		}
	}
	return t
}

// clusterStatus is one entry of the waypoint's /clusters.
type clusterStatus struct {
	Name       string `json:"name"`
	LbPolicy   string `json:"lb_policy"`
	RqActive   int64  `json:"rq_active"`
	RqTotal    uint64 `json:"rq_total"`
	RqOverflow uint64 `json:"rq_overflow"`
	Hosts      []struct {
		Address      string    `json:"address"`
		Tunnel       string    `json:"tunnel"`
		Identity     string    `json:"identity"`
		Health       string    `json:"health"`
		EjectedUntil time.Time `json:"ejected_until"`
		Active       int64     `json:"active"`
		Successes    uint64    `json:"successes"`
		Failures     uint64    `json:"failures"`
	} `json:"hosts"`
}

// clustersTable: one row per endpoint (a cluster without endpoints gets one
// row of its own), with the cluster's request count.
func clustersTable(clusters []clusterStatus) Table {
	t := Table{Headers: []string{"CLUSTER", "ENDPOINT", "TUNNEL", "IDENTITY", "HEALTH", "ACTIVE", "OK", "FAILED", "CLUSTER-REQUESTS"}}
	for _, c := range clusters {
		total := fmt.Sprint(c.RqTotal)
		if len(c.Hosts) == 0 {
			t.Rows = append(t.Rows, []string{c.Name, "", "", "", "", "", "", "", total})
		}
		for _, h := range c.Hosts {
			health := h.Health
			if !h.EjectedUntil.IsZero() {
				health += " (ejected until " + h.EjectedUntil.Format(time.TimeOnly) + ")"
			}
			t.Rows = append(t.Rows, []string{c.Name, h.Address, h.Tunnel, h.Identity, health,
				fmt.Sprint(h.Active), fmt.Sprint(h.Successes), fmt.Sprint(h.Failures), total})
		}
	}
	return t
}

// routeConfig is a RouteConfiguration as the waypoint holds it (protobuf
// JSON), reduced to what the routes view shows.
type routeConfig struct {
	Name         string `json:"name"`
	VirtualHosts []struct {
		Name   string       `json:"name"`
		Routes []routeEntry `json:"routes"`
	} `json:"virtualHosts"`
}

type routeEntry struct {
	Name  string `json:"name"`
	Match struct {
		Prefix              string        `json:"prefix"`
		Path                string        `json:"path"`
		PathSeparatedPrefix string        `json:"pathSeparatedPrefix"`
		SafeRegex           *regexMatcher `json:"safeRegex"`
		Headers             []struct {
			Name         string         `json:"name"`
			StringMatch  *stringMatcher `json:"stringMatch"`
			PresentMatch bool           `json:"presentMatch"`
			InvertMatch  bool           `json:"invertMatch"`
		} `json:"headers"`
		QueryParameters []struct {
			Name         string         `json:"name"`
			StringMatch  *stringMatcher `json:"stringMatch"`
			PresentMatch bool           `json:"presentMatch"`
		} `json:"queryParameters"`
	} `json:"match"`
	Route *struct {
		Cluster          string `json:"cluster"`
		WeightedClusters *struct {
			Clusters []struct {
				Name   string `json:"name"`
				Weight uint32 `json:"weight"`
			} `json:"clusters"`
		} `json:"weightedClusters"`
		Timeout               string                       `json:"timeout"`
		PrefixRewrite         string                       `json:"prefixRewrite"`
		RetryPolicy           *struct{ NumRetries uint32 } `json:"retryPolicy"`
		RequestMirrorPolicies []struct {
			Cluster string `json:"cluster"`
		} `json:"requestMirrorPolicies"`
	} `json:"route"`
	Redirect       map[string]any `json:"redirect"`
	DirectResponse *struct {
		Status uint32 `json:"status"`
	} `json:"directResponse"`
	TypedPerFilterConfig map[string]json.RawMessage `json:"typedPerFilterConfig"`
}

type regexMatcher struct {
	Regex string `json:"regex"`
}

type stringMatcher struct {
	Exact      string        `json:"exact"`
	Prefix     string        `json:"prefix"`
	Suffix     string        `json:"suffix"`
	Contains   string        `json:"contains"`
	SafeRegex  *regexMatcher `json:"safeRegex"`
	IgnoreCase bool          `json:"ignoreCase"`
}

func (m *stringMatcher) String() string {
	switch {
	case m == nil:
		return ""
	case m.SafeRegex != nil:
		return "~" + m.SafeRegex.Regex
	case m.Prefix != "":
		return m.Prefix + "*"
	case m.Suffix != "":
		return "*" + m.Suffix
	case m.Contains != "":
		return "*" + m.Contains + "*"
	}
	return m.Exact
}

// routeConfigs decodes the RouteConfigurations of a config dump, by name.
func routeConfigs(d configDump) ([]routeConfig, error) {
	var out []routeConfig
	for _, r := range d.Resources[envoyTypes[1].url] {
		var rc routeConfig
		if err := json.Unmarshal(r.Resource, &rc); err != nil {
			return nil, fmt.Errorf("route configuration %s: %w", r.Name, err)
		}
		out = append(out, rc)
	}
	slices.SortFunc(out, func(a, b routeConfig) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// routesTable: one row per route, in the order the waypoint matches them.
func routesTable(configs []routeConfig) Table {
	t := Table{Headers: []string{"ROUTE-CONFIG", "ROUTE", "MATCH", "ACTION"}}
	for _, rc := range configs {
		for _, vh := range rc.VirtualHosts {
			for _, r := range vh.Routes {
				t.Rows = append(t.Rows, []string{rc.Name, r.Name, r.match(), r.action()})
			}
		}
	}
	return t
}

// match is the route's match: the path, then the header and query
// conditions (":method=POST", "end-user=jason").
func (r routeEntry) match() string {
	m := r.Match
	var parts []string
	switch {
	case m.Path != "":
		parts = append(parts, "path "+m.Path)
	case m.SafeRegex != nil:
		parts = append(parts, "path ~"+m.SafeRegex.Regex)
	case m.PathSeparatedPrefix != "":
		parts = append(parts, "prefix "+m.PathSeparatedPrefix+"/")
	default:
		parts = append(parts, "prefix "+m.Prefix)
	}
	for _, h := range m.Headers {
		cond := h.Name + "=" + h.StringMatch.String()
		if h.PresentMatch {
			cond = h.Name + " present"
		}
		if h.InvertMatch {
			cond = "not " + cond
		}
		parts = append(parts, cond)
	}
	for _, q := range m.QueryParameters {
		cond := "?" + q.Name + "=" + q.StringMatch.String()
		if q.PresentMatch {
			cond = "?" + q.Name + " present"
		}
		parts = append(parts, cond)
	}
	return strings.Join(parts, " ")
}

// action is where the route sends a request: a cluster, weighted clusters
// ("a 80%, b 20%"), a redirect or a direct response; then its options.
func (r routeEntry) action() string {
	var parts []string
	switch {
	case r.Route != nil && r.Route.WeightedClusters != nil:
		total := uint32(0)
		for _, c := range r.Route.WeightedClusters.Clusters {
			total += c.Weight
		}
		var ws []string
		for _, c := range r.Route.WeightedClusters.Clusters {
			ws = append(ws, fmt.Sprintf("%s %s", c.Name, percent(c.Weight, total)))
		}
		parts = append(parts, strings.Join(ws, ", "))
	case r.Route != nil:
		parts = append(parts, r.Route.Cluster)
	case r.Redirect != nil:
		data, _ := json.Marshal(r.Redirect)
		parts = append(parts, "redirect "+string(data))
	case r.DirectResponse != nil:
		parts = append(parts, fmt.Sprintf("respond %d", r.DirectResponse.Status))
	}
	if rt := r.Route; rt != nil {
		if rt.PrefixRewrite != "" {
			parts = append(parts, "rewrite "+rt.PrefixRewrite)
		}
		if rt.Timeout != "" && rt.Timeout != "0s" {
			parts = append(parts, "timeout "+rt.Timeout)
		}
		if rt.RetryPolicy != nil {
			parts = append(parts, fmt.Sprintf("retries %d", rt.RetryPolicy.NumRetries))
		}
		for _, m := range rt.RequestMirrorPolicies {
			parts = append(parts, "mirror "+m.Cluster)
		}
	}
	if _, ok := r.TypedPerFilterConfig["envoy.filters.http.fault"]; ok {
		parts = append(parts, "fault")
	}
	return strings.Join(parts, "; ")
}

func percent(weight, total uint32) string {
	if total == 0 {
		return "0%"
	}
	p := float64(weight) * 100 / float64(total)
	if p == float64(int(p)) {
		return fmt.Sprintf("%d%%", int(p))
	}
	return fmt.Sprintf("%.1f%%", p)
}

// waypointReport is `waypoint status -o json|yaml`.
type waypointReport struct {
	Waypoint *meshv1alpha1.WaypointStatus `json:"waypoint,omitempty"`
	Pods     []podReport                  `json:"pods"`
}

type podReport struct {
	Name      string          `json:"name"`
	Node      string          `json:"node"`
	IP        string          `json:"ip"`
	Ready     bool            `json:"ready"`
	Resources map[string]int  `json:"resources,omitempty"`
	XDS       any             `json:"xds,omitempty"`
	LastNack  string          `json:"lastNack,omitempty"`
	Certs     json.RawMessage `json:"certs,omitempty"`
	Error     string          `json:"error,omitempty"`
}

func waypointStatus(ctx context.Context, cl client.Client, out io.Writer, format, namespace, name string, pods []corev1.Pod,
	ask func(corev1.Pod, string) ([]byte, error)) error {
	var report waypointReport
	wp := &meshv1alpha1.Waypoint{}
	switch err := cl.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, wp); {
	case err == nil:
		report.Waypoint = &wp.Status
	case client.IgnoreNotFound(err) != nil:
		return fmt.Errorf("reading waypoint %s/%s: %w", namespace, name, err)
	}
	dumps := make([]*configDump, len(pods))
	for i, p := range pods {
		pr := podReport{Name: p.Name, Node: p.Spec.NodeName, IP: p.Status.PodIP, Ready: podReady(p)}
		body, err := ask(p, "/config_dump")
		if err == nil {
			var dump configDump
			if err = json.Unmarshal(body, &dump); err == nil {
				dumps[i] = &dump
				pr.Resources = map[string]int{}
				for _, typ := range envoyTypes {
					pr.Resources[typ.short] = len(dump.Resources[typ.url])
				}
				pr.XDS, pr.LastNack = dump.XDS, dump.LastNack
			}
		}
		if err == nil {
			pr.Certs, err = ask(p, "/certs")
		}
		if err != nil {
			pr.Error = err.Error()
		}
		report.Pods = append(report.Pods, pr)
	}
	return write(out, format, report, waypointStatusTable(namespace, name, report.Waypoint, report.Pods, dumps))
}

// waypointStatusTable: the Waypoint's conditions and address, then one row
// per pod with its xDS state (resources held, ACKs, NACKs, the last NACK).
func waypointStatusTable(namespace, name string, st *meshv1alpha1.WaypointStatus, pods []podReport, dumps []*configDump) Table {
	t := Table{Headers: []string{"KIND", "NAME", "READY", "STATUS", "MESSAGE"}}
	if st != nil {
		ready := meta.FindStatusCondition(st.Conditions, meshv1alpha1.WaypointConditionReady)
		row := []string{"Waypoint", namespace + "/" + name, "Unknown", "", ""}
		if ready != nil {
			row[2], row[3], row[4] = string(ready.Status), ready.Reason, ready.Message
		}
		var addrs []string
		for _, a := range st.Addresses {
			addrs = append(addrs, a.Value)
		}
		if len(addrs) > 0 {
			row[4] = strings.TrimPrefix(row[4]+"; address "+strings.Join(addrs, ", "), "; ")
		}
		t.Rows = append(t.Rows, row)
		for _, c := range st.Conditions {
			if c.Type != meshv1alpha1.WaypointConditionReady {
				t.Rows = append(t.Rows, []string{"Condition", c.Type, string(c.Status), c.Reason, c.Message})
			}
		}
	}
	for i, p := range pods {
		row := []string{"Pod", p.Name, fmt.Sprint(p.Ready), "", fmt.Sprintf("node %s, IP %s", p.Node, p.IP)}
		switch d := dumps[i]; {
		case p.Error != "":
			row[3], row[4] = "Unreachable", row[4]+"; "+p.Error
		case d.XDS == nil:
			row[3] = "NoXDS"
		default:
			row[3] = "Disconnected"
			if d.XDS.Connected {
				row[3] = "Connected"
			}
			var held []string
			for _, typ := range envoyTypes {
				held = append(held, fmt.Sprintf("%d %s", p.Resources[typ.short], typ.short))
			}
			row[4] += fmt.Sprintf("; holds %s; %d ACKs, %d NACKs", strings.Join(held, ", "), d.XDS.Acks, d.XDS.Nacks)
			if d.LastNack != "" {
				row[4] += "; last NACK: " + d.LastNack
			}
		}
		t.Rows = append(t.Rows, row)
	}
	return t
}

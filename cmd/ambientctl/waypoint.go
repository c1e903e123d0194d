package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
)

// The waypoint views read a waypoint pod's admin endpoint (127.0.0.1:15000
// inside the pod, localhost only), as the ztunnel views read ztunnel's. The
// pods are found in the cluster (label ambientmesh.dev/waypoint=NAME); a
// pod's network namespace is found on this host by the pod's IP, among the
// namespaces in --netns-dir (the local mesh's pods, or a node's pods when
// run as root on that node). Elsewhere, `kubectl port-forward` the pod's
// 15000 and pass --admin-address.

const waypointViews = "status, config, clusters or routes"

// Type URLs of the Envoy resources a waypoint holds, in the order they are shown.
var envoyTypes = []struct{ url, short string }{
	{"type.googleapis.com/envoy.config.listener.v3.Listener", "Listener"},
	{"type.googleapis.com/envoy.config.route.v3.RouteConfiguration", "RouteConfiguration"},
	{"type.googleapis.com/envoy.config.cluster.v3.Cluster", "Cluster"},
	{"type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment", "ClusterLoadAssignment"},
}

func runWaypoint(args []string, kubeconfig string, out io.Writer) error {
	if len(args) == 0 || !slices.Contains([]string{"status", "config", "clusters", "routes"}, args[0]) {
		return fmt.Errorf("waypoint: want one of %s, then the waypoint's name", waypointViews)
	}
	view := args[0]
	fs, c := newFlagSet("waypoint "+view, kubeconfig)
	namespace := fs.String("n", "", "the waypoint's namespace (default: the kubeconfig context's)")
	fs.StringVar(namespace, "namespace", "", "the waypoint's namespace (default: the kubeconfig context's)")
	podName := fs.String("pod", "", "ask this pod of the waypoint (default: every pod for status, else the first ready one)")
	netnsDir := fs.String("netns-dir", "/var/run/netns", "where pods' network namespaces are found on this host")
	admin := fs.String("admin-address", "", "the admin endpoint to dial from here (after kubectl port-forward), instead of 127.0.0.1:15000 inside the pod's network namespace")
	positional, err := parseInterspersed(fs, args[1:])
	if err != nil {
		return err
	}
	if len(positional) != 1 {
		return fmt.Errorf("waypoint %s: want exactly one waypoint name, got %q", view, positional)
	}
	name := positional[0]
	if *namespace == "" {
		if *namespace, err = contextNamespace(c.kubeconfig); err != nil {
			return err
		}
	}
	cl, err := newClient(c.kubeconfig)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	pods, err := waypointPods(ctx, cl, *namespace, name, *podName)
	if err != nil {
		return err
	}
	ask := func(pod corev1.Pod, path string) ([]byte, error) {
		return podAdmin(pod, *netnsDir, *admin, path)
	}
	if view == "status" {
		return waypointStatus(ctx, cl, out, c.output, *namespace, name, pods, ask)
	}
	pod := firstReady(pods)
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
		return write(out, c.output, json.RawMessage(body), configTable(dump))
	case "clusters":
		var clusters []clusterStatus
		if err := json.Unmarshal(body, &clusters); err != nil {
			return fmt.Errorf("waypoint pod %s: /clusters: %w", pod.Name, err)
		}
		return write(out, c.output, json.RawMessage(body), clustersTable(clusters))
	default:
		var dump configDump
		if err := json.Unmarshal(body, &dump); err != nil {
			return fmt.Errorf("waypoint pod %s: /config_dump: %w", pod.Name, err)
		}
		routes, err := routeConfigs(dump)
		if err != nil {
			return fmt.Errorf("waypoint pod %s: %w", pod.Name, err)
		}
		return write(out, c.output, routes, routesTable(routes))
	}
}

// parseInterspersed parses flags that may come before or after the
// positional arguments (ambientctl waypoint routes NAME -n NS).
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return positional, nil
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
}

func contextNamespace(kubeconfig string) (string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kubeconfig != "" {
		rules.ExplicitPath = kubeconfig
	}
	ns, _, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, nil).Namespace()
	if err != nil {
		return "", fmt.Errorf("kubeconfig: %w", err)
	}
	return ns, nil
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

func firstReady(pods []corev1.Pod) corev1.Pod {
	for _, p := range pods {
		if podReady(p) {
			return p
		}
	}
	return pods[0]
}

func podReady(p corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// podAdmin GETs path from the pod's admin endpoint: at admin when set (a
// port-forward), else at 127.0.0.1:15000 inside the pod's network namespace.
func podAdmin(pod corev1.Pod, netnsDir, admin, path string) ([]byte, error) {
	dial := dialHere
	if admin == "" {
		admin = fmt.Sprintf("127.0.0.1:%d", meshv1alpha1.PortAdmin)
		nsPath, err := netnsWithIP(netnsDir, pod.Status.PodIP)
		if err != nil {
			return nil, fmt.Errorf("waypoint pod %s/%s (IP %q, node %s): %w; run ambientctl as root on its node, or `kubectl port-forward -n %s pod/%s %d` and pass --admin-address 127.0.0.1:%d",
				pod.Namespace, pod.Name, pod.Status.PodIP, pod.Spec.NodeName, err, pod.Namespace, pod.Name, meshv1alpha1.PortAdmin, meshv1alpha1.PortAdmin)
		}
		dial = dialerIn(nsPath)
	}
	body, err := adminRequest(dial, admin, http.MethodGet, path)
	if err != nil {
		return nil, fmt.Errorf("waypoint admin of %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return body, nil
}

// netnsWithIP finds the network namespace in dir that has ip on one of its
// interfaces.
func netnsWithIP(dir, ip string) (string, error) {
	want := net.ParseIP(ip)
	if want == nil {
		return "", errors.New("the pod has no IP yet")
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("no network namespace of it here: %w", err)
	}
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		found := false
		err := inNetns(path, func() error {
			addrs, err := net.InterfaceAddrs()
			for _, a := range addrs {
				if n, ok := a.(*net.IPNet); ok && n.IP.Equal(want) {
					found = true
				}
			}
			return err
		})
		if err == nil && found {
			return path, nil
		}
	}
	return "", fmt.Errorf("no network namespace in %s has it", dir)
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

package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/net/http/httpguts"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controlplane/xds/translate"
	cpwaypoint "github.com/ambientmesh/ambient-operator/controlplane/xds/waypoint"
	"github.com/ambientmesh/ambient-operator/internal/explain"
)

// `ambientctl why SRC DST[:PORT]` reads the cluster's objects and explains, hop by hop,
// which proxy decides the connection (and the HTTP request on it) and by which policy;
// the decisions are computed by the proxies' own code (see internal/explain).

const whyUsage = "why: want SRC and DST: [NAMESPACE/]POD and [NAMESPACE/]POD[:PORT] or svc/[NAMESPACE/]SERVICE[:PORT]"

func whyCommand(g *globalFlags) *cobra.Command {
	var (
		flags                   requestFlags
		meshName, clusterDomain string
	)
	cmd := &cobra.Command{
		Use:   "why SRC DST",
		Short: "which proxy decides a connection (and its HTTP request) from pod SRC to DST, and by which MeshPolicy",
		Long: "SRC is [NAMESPACE/]POD; DST is [NAMESPACE/]POD[:PORT] or svc/[NAMESPACE/]SERVICE[:PORT]; a name without a " +
			"namespace is in -n. The path hop by hop, computed by the proxies' own code on the control plane's translation " +
			"of the cluster's objects.",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 2 {
				return fmt.Errorf("%s; got %q", whyUsage, args)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			namespace, err := g.currentNamespace()
			if err != nil {
				return err
			}
			req, err := whyRequest(args[0], args[1], namespace, flags)
			if err != nil {
				return err
			}
			cl, _, err := g.client()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cluster, err := readCluster(ctx, cl, meshName, clusterDomain)
			if err != nil {
				return err
			}
			var opts explain.Options
			if flags.token != "" {
				opts.KeySetClient = &http.Client{Timeout: 10 * time.Second}
			}
			report, err := explain.Explain(ctx, cluster, req, opts)
			if err != nil {
				return err
			}
			return writeWhy(cmd.OutOrStdout(), g.output, report)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&flags.method, "method", http.MethodGet, "HTTP method of the request")
	fs.StringVar(&flags.path, "path", "/", "HTTP path of the request, with any query")
	fs.StringVar(&flags.host, "host", "", "HTTP Host of the request (default: a Host: header, else <service>.<namespace>.svc.<cluster domain>:<port> or <pod IP>:<port>)")
	fs.StringArrayVarP(&flags.headers, "header", "H", nil, "request header 'Name: value' (repeatable)")
	fs.StringVar(&flags.token, "token", "", "a JWT, sent as Authorization: Bearer <token>; a key set given by jwksUri is then fetched from this machine")
	fs.StringVar(&meshName, "mesh", "default", "the AmbientMesh's name")
	fs.StringVar(&clusterDomain, "cluster-domain", "cluster.local", "DNS suffix of Service hostnames (the control plane's --cluster-domain)")
	return cmd
}

// requestFlags are the flags that describe the HTTP request.
type requestFlags struct {
	method, path, host, token string
	headers                   []string // 'Name: value'
}

// whyRequest builds the request from the arguments and flags.
func whyRequest(src, dst, namespace string, f requestFlags) (explain.Request, error) {
	req := explain.Request{Method: f.method, Path: f.path, Host: f.host, Header: http.Header{}}
	var err error
	if req.Source, err = parseSource(src, namespace); err != nil {
		return req, err
	}
	if req.Destination, err = parseDestination(dst, namespace); err != nil {
		return req, err
	}
	for _, h := range f.headers {
		name, value, ok := strings.Cut(h, ":")
		name, value = strings.TrimSpace(name), strings.TrimSpace(value)
		if !ok || !httpguts.ValidHeaderFieldName(name) || !httpguts.ValidHeaderFieldValue(value) {
			return req, fmt.Errorf("-H %q: want 'Name: value'", h)
		}
		if http.CanonicalHeaderKey(name) == "Host" {
			if req.Host == "" {
				req.Host = value
			}
			continue
		}
		req.Header.Add(name, value)
	}
	if f.token != "" {
		req.Header.Set("Authorization", "Bearer "+f.token)
	}
	return req, nil
}

// parseSource parses [NAMESPACE/]POD.
func parseSource(s, namespace string) (types.NamespacedName, error) {
	ns, name, err := parseName(fmt.Sprintf("source %q", s), s, namespace)
	return types.NamespacedName{Namespace: ns, Name: name}, err
}

// parseDestination parses [NAMESPACE/]POD[:PORT] or svc/[NAMESPACE/]SERVICE[:PORT]
// (service/ too). A first segment svc or service always means a Service: a pod of a
// namespace of that name is given with -n.
func parseDestination(s, namespace string) (explain.Target, error) {
	t := explain.Target{Kind: explain.TargetPod}
	rest := s
	for _, prefix := range []string{"svc/", "service/"} {
		if r, ok := strings.CutPrefix(s, prefix); ok {
			t.Kind, rest = explain.TargetService, r
		}
	}
	if i := strings.LastIndexByte(rest, ':'); i >= 0 {
		port, err := strconv.ParseUint(rest[i+1:], 10, 16)
		if err != nil || port == 0 {
			return t, fmt.Errorf("destination %q: port %q is not a number in 1-65535", s, rest[i+1:])
		}
		t.Port, rest = int32(port), rest[:i]
	}
	var err error
	t.Namespace, t.Name, err = parseName(fmt.Sprintf("destination %q", s), rest, namespace)
	if err != nil {
		return t, err
	}
	if t.Kind == explain.TargetService {
		if errs := validation.IsDNS1035Label(t.Name); len(errs) > 0 {
			return t, fmt.Errorf("destination %q: service name %q: %s", s, t.Name, strings.Join(errs, "; "))
		}
	}
	return t, nil
}

// parseName parses [NAMESPACE/]NAME, the namespace defaulting to namespace; errors start
// with what.
func parseName(what, s, namespace string) (string, string, error) {
	ns, name, qualified := strings.Cut(s, "/")
	if !qualified {
		ns, name = namespace, s
	}
	if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
		return "", "", fmt.Errorf("%s: namespace %q: %s", what, ns, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return "", "", fmt.Errorf("%s: name %q: %s", what, name, strings.Join(errs, "; "))
	}
	return ns, name, nil
}

// readCluster lists the objects the control plane translates, in every namespace, and
// takes the mesh settings as the control plane does: the trust domain and root
// namespace (the install namespace) from the AmbientMesh, the cluster domain from a flag.
// The Gateway API kinds are optional: without their CRDs there are none.
func readCluster(ctx context.Context, cl client.Client, meshName, clusterDomain string) (*explain.Cluster, error) {
	mesh := &meshv1alpha1.AmbientMesh{}
	if err := cl.Get(ctx, client.ObjectKey{Name: meshName}, mesh); err != nil {
		return nil, fmt.Errorf("reading AmbientMesh %q: %w (is the operator installed, and the sample applied?)", meshName, err)
	}
	var (
		namespaces corev1.NamespaceList
		pods       corev1.PodList
		services   corev1.ServiceList
		policies   meshv1alpha1.MeshPolicyList
		waypoints  meshv1alpha1.WaypointList
		gateways   gatewayv1.GatewayList
		httpRoutes gatewayv1.HTTPRouteList
		grpcRoutes gatewayv1.GRPCRouteList
	)
	lists := []struct {
		kind     string
		list     client.ObjectList
		optional bool
	}{
		{"namespaces", &namespaces, false}, {"pods", &pods, false}, {"services", &services, false},
		{"meshpolicies", &policies, false}, {"waypoints", &waypoints, false},
		{"gateways", &gateways, true}, {"httproutes", &httpRoutes, true}, {"grpcroutes", &grpcRoutes, true},
	}
	for _, l := range lists {
		if err := cl.List(ctx, l.list); err != nil && !(l.optional && meta.IsNoMatchError(err)) {
			return nil, fmt.Errorf("listing %s: %w", l.kind, err)
		}
	}
	return &explain.Cluster{
		Mesh: translate.Mesh{
			TrustDomain:   mesh.Spec.EffectiveTrustDomain(),
			RootNamespace: mesh.Spec.InstallNamespace(),
			ClusterDomain: clusterDomain,
		},
		State: cpwaypoint.State{
			Namespaces: namespaces.Items,
			Pods:       pods.Items,
			Services:   services.Items,
			Policies:   policies.Items,
			Waypoints:  translate.MergeWaypoints(waypoints.Items, gateways.Items),
			HTTPRoutes: httpRoutes.Items,
			GRPCRoutes: grpcRoutes.Items,
		},
	}, nil
}

// writeWhy prints the report: as JSON or YAML, or as what was asked, one row per hop and
// the verdict.
func writeWhy(out io.Writer, format string, r *explain.Report) error {
	if format != "table" {
		return write(out, format, r, Table{})
	}
	fmt.Fprintf(out, "SOURCE:      %s\nDESTINATION: %s\nREQUEST:     %s\n\n", r.Source, r.Destination, r.Request)
	if err := whyTable(r).write(out); err != nil {
		return err
	}
	_, err := fmt.Fprintf(out, "\n%s\n", r.Verdict)
	return err
}

func whyTable(r *explain.Report) Table {
	t := Table{Headers: []string{"HOP", "PROXY", "ROLE", "AT", "POD", "LAYER", "DECISION", "POLICY", "DETAIL"}}
	for i, h := range r.Hops {
		policy := strings.TrimSpace(h.Policy + " " + h.Rule)
		t.Rows = append(t.Rows, []string{strconv.Itoa(i + 1), h.Proxy, h.Role, h.At, h.Pod, h.Layer, h.Decision, policy, h.Detail})
	}
	return t
}

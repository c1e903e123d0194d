package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ambientmesh/ambient-operator/internal/testwait"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	cpwaypoint "github.com/ambientmesh/ambient-operator/controlplane/xds/waypoint"
	"github.com/ambientmesh/ambient-operator/dataplane/hbone"
	"github.com/ambientmesh/ambient-operator/dataplane/waypoint"
	"github.com/ambientmesh/ambient-operator/dataplane/xdsclient"
	"github.com/ambientmesh/ambient-operator/internal/spiffe"
	"github.com/ambientmesh/ambient-operator/test/controlplane/meshenv"
)

const (
	waypointNS   = "bench-waypoint"
	waypointName = "wp"
	routeCount   = 1000
	routeEdits   = 100
	editedRoute  = "route-0500"
	editHeader   = "x-bench-edit"
	// appConfig is the RouteConfiguration (and Listener) of the Service app's port 80.
	appConfig = "app." + waypointNS + ".svc." + clusterDomain + ":80"
)

// waypointResult is what the waypoint phase measured.
type waypointResult struct {
	pushMs       []float64 // per edit, sorted
	bytesPerEdit int64     // protobuf bytes of RouteConfiguration responses per edit
}

// benchWaypointPush measures how fast an HTTPRoute edit reaches a waypoint: a Waypoint
// whose namespace's Service app has routeCount HTTPRoutes attached (one RouteConfiguration
// of routeCount routes), and the real waypoint's config store fed by the delta ADS client,
// authenticated with a token of the Waypoint's service account. Once the waypoint holds
// every route and the control plane has written every route's status, each of routeEdits
// edits sets a request header on one route and is timed from just before the API call to
// the moment the waypoint applied a RouteConfiguration carrying it (the client ACKs it
// right after).
func benchWaypointPush(ctx context.Context, b *testing.B, env *meshenv.Env, cs *kubernetes.Clientset, xdsAddr string, rootPEM []byte) waypointResult {
	createWaypoint(ctx, b, env)
	token := waypointToken(ctx, b, cs)

	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(rootPEM)
	wp, err := waypoint.New(waypoint.Config{
		Namespace: waypointNS, Name: waypointName, PodName: "wp-bench",
		Identity: spiffe.ID{TrustDomain: trustDomain, Namespace: waypointNS, ServiceAccount: waypointName},
		// The benchmark's waypoint only takes configuration: it never terminates or opens
		// HBONE, so it needs no certificate of its own.
		Certs: hbone.CertSourceFunc(func(context.Context, spiffe.ID) (*tls.Certificate, error) {
			return nil, errors.New("the benchmark's waypoint serves no traffic")
		}),
		Roots: hbone.RootsFunc(func() *x509.CertPool { return roots }),
	})
	if err != nil {
		b.Fatal(err)
	}
	watch := newRouteWatch(wp.Handler(), appConfig, waypointNS+"/"+editedRoute+"/0/0")
	var routeBytes atomic.Int64
	ads := xdsclient.New(xdsAddr, watch, xdsclient.Options{
		TypeURLs:    waypoint.TypeURLs,
		Node:        &corev3.Node{Id: "wp-bench." + waypointNS, Cluster: waypoint.NodeCluster(waypointNS, waypointName)},
		DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(clientTLS(rootPEM)))},
		CallOptions: []grpc.CallOption{grpc.PerRPCCredentials(bearer(token))},
		Observe: func(resp *discoveryv3.DeltaDiscoveryResponse) {
			if resp.GetTypeUrl() == resourcev3.RouteType {
				routeBytes.Add(int64(proto.Size(resp)))
			}
		},
	})
	clientCtx, stopClient := context.WithCancel(ctx)
	defer stopClient()
	go func() { _ = ads.Run(clientCtx) }()
	select {
	case <-ads.Synced():
	case <-time.After(time.Minute):
		b.Fatalf("waypoint xDS client did not sync: %+v", ads.Stats())
	}

	route := createRoutes(ctx, b, env)
	if _, err := watch.wait(func(s routeState) bool { return s.routes >= routeCount }, 5*time.Minute); err != nil {
		b.Fatalf("the waypoint never held the %d routes: %v (client %+v)", routeCount, err, ads.Stats())
	}
	waitRouteStatuses(ctx, b, env)

	var res waypointResult
	bytesBefore := routeBytes.Load()
	for i := range routeEdits {
		value := strconv.Itoa(i + 1)
		patch := client.MergeFrom(route.DeepCopy())
		route.Spec.Rules[0].Filters = []gatewayv1.HTTPRouteFilter{{
			Type:                  gatewayv1.HTTPRouteFilterRequestHeaderModifier,
			RequestHeaderModifier: &gatewayv1.HTTPHeaderFilter{Set: []gatewayv1.HTTPHeader{{Name: editHeader, Value: value}}},
		}}
		start := time.Now()
		if err := env.Client.Patch(ctx, route, patch); err != nil {
			b.Fatal(err)
		}
		applied, err := watch.wait(func(s routeState) bool { return s.edit == value }, 30*time.Second)
		if err != nil {
			b.Fatalf("edit %d never reached the waypoint: %v (client %+v)", i+1, err, ads.Stats())
		}
		res.pushMs = append(res.pushMs, float64(applied.Sub(start).Microseconds())/1000)
		time.Sleep(100 * time.Millisecond) // one edit at a time, as a user would make them
	}
	res.bytesPerEdit = (routeBytes.Load() - bytesBefore) / routeEdits
	sort.Float64s(res.pushMs)
	return res
}

// createWaypoint creates the waypoint's namespace (ambient, using the waypoint), its
// ServiceAccount, the Waypoint and its Service (what the operator would create), and the
// Service app that the routes attach to.
func createWaypoint(ctx context.Context, b *testing.B, env *meshenv.Env) {
	objs := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: waypointNS, Labels: map[string]string{
			meshv1.LabelDataplaneMode: meshv1.DataplaneModeAmbient, meshv1.LabelUseWaypoint: waypointName}}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: waypointNS, Name: waypointName}},
		&meshv1.Waypoint{ObjectMeta: metav1.ObjectMeta{Namespace: waypointNS, Name: waypointName}},
		&corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: waypointNS, Name: waypointName, Labels: map[string]string{meshv1.LabelWaypoint: waypointName}},
			Spec: corev1.ServiceSpec{Selector: map[string]string{meshv1.LabelWaypoint: waypointName},
				Ports: []corev1.ServicePort{{Name: "hbone", Port: 15008}}},
		},
		&corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: waypointNS, Name: "app"},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "app"},
				Ports: []corev1.ServicePort{{Name: "http", Port: 80, AppProtocol: ptr.To("http")}}},
		},
	}
	for _, o := range objs {
		if err := env.Client.Create(ctx, o); err != nil {
			b.Fatalf("create %T %s: %v", o, o.GetName(), err)
		}
	}
}

// waypointToken is a token of the Waypoint's service account for the CA audience, which
// the control plane's xDS server accepts (TokenReview) as the waypoint's identity.
func waypointToken(ctx context.Context, b *testing.B, cs *kubernetes.Clientset) string {
	tok, err := cs.CoreV1().ServiceAccounts(waypointNS).CreateToken(ctx, waypointName, &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{
		Audiences: []string{pb.CATokenAudience}, ExpirationSeconds: ptr.To(int64(3600)),
	}}, metav1.CreateOptions{})
	if err != nil {
		b.Fatal(err)
	}
	return tok.Status.Token
}

// createRoutes creates routeCount HTTPRoutes on the Service app, each matching its own
// path prefix, with several workers, and returns the one the edits change.
func createRoutes(ctx context.Context, b *testing.B, env *meshenv.Env) *gatewayv1.HTTPRoute {
	var edited *gatewayv1.HTTPRoute
	var mu sync.Mutex
	next := atomic.Int64{}
	var wg sync.WaitGroup
	errs := make(chan error, creators)
	for range creators {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= routeCount {
					return
				}
				route := benchRoute(fmt.Sprintf("route-%04d", i))
				if err := env.Client.Create(ctx, route); err != nil {
					errs <- err
					return
				}
				if route.Name == editedRoute {
					mu.Lock()
					edited = route
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	return edited
}

// waitRouteStatuses waits until the control plane has written every route's status for
// its current generation, so that the edits meet a control plane at rest rather than one
// still working through the routes just created.
func waitRouteStatuses(ctx context.Context, b *testing.B, env *meshenv.Env) {
	err := testwait.UntilContext(ctx, 5*time.Minute, func() error {
		var routes gatewayv1.HTTPRouteList
		if err := env.Client.List(ctx, &routes, client.InNamespace(waypointNS)); err != nil {
			return err
		}
		pending := 0
		for i := range routes.Items {
			if !statusCurrent(&routes.Items[i]) {
				pending++
			}
		}
		if pending > 0 {
			return fmt.Errorf("%d of %d HTTPRoutes have no status for their generation", pending, len(routes.Items))
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}

// statusCurrent: the control plane's status entry on the route is for its generation.
func statusCurrent(r *gatewayv1.HTTPRoute) bool {
	for _, p := range r.Status.Parents {
		if p.ControllerName != cpwaypoint.ControllerName {
			continue
		}
		for _, c := range p.Conditions {
			if c.ObservedGeneration != r.Generation {
				return false
			}
		}
		return len(p.Conditions) > 0
	}
	return false
}

func benchRoute(name string) *gatewayv1.HTTPRoute {
	return &gatewayv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: waypointNS, Name: name},
		Spec: gatewayv1.HTTPRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{
				Group: ptr.To(gatewayv1.Group("")), Kind: ptr.To(gatewayv1.Kind("Service")),
				Name: "app", Port: ptr.To(gatewayv1.PortNumber(80)),
			}}},
			Rules: []gatewayv1.HTTPRouteRule{{
				Matches: []gatewayv1.HTTPRouteMatch{{Path: &gatewayv1.HTTPPathMatch{
					Type: ptr.To(gatewayv1.PathMatchPathPrefix), Value: ptr.To("/" + name),
				}}},
				BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{
					Name: "app", Port: ptr.To(gatewayv1.PortNumber(80)),
				}}}},
			}},
		},
	}
}

// routeState is what the waypoint holds of one RouteConfiguration.
type routeState struct {
	routes int    // routes in it
	edit   string // editHeader value the watched route sets ("" when none)
}

// routeWatch is the xDS handler of the benchmark's waypoint: the real waypoint's config
// store, and after it has applied (and compiled) a response, a note of what the watched
// RouteConfiguration holds and when it got there. The client ACKs once Apply returns.
type routeWatch struct {
	store  xdsclient.Handler
	config string // RouteConfiguration name
	route  string // route name inside it

	mu      sync.Mutex
	state   routeState
	at      time.Time     // when state was applied
	changed chan struct{} // closed (and replaced) when state changes
}

func newRouteWatch(store xdsclient.Handler, config, route string) *routeWatch {
	return &routeWatch{store: store, config: config, route: route, changed: make(chan struct{})}
}

func (w *routeWatch) Apply(typeURL string, upserts map[string]*anypb.Any, removed []string) error {
	if err := w.store.Apply(typeURL, upserts, removed); err != nil {
		return err
	}
	applied := time.Now()
	a, ok := upserts[w.config]
	if typeURL != resourcev3.RouteType || !ok {
		return nil
	}
	var rc routev3.RouteConfiguration
	if err := a.UnmarshalTo(&rc); err != nil {
		return nil // unreachable: the store has just decoded it
	}
	st := routeState{}
	for _, vh := range rc.GetVirtualHosts() {
		st.routes += len(vh.GetRoutes())
		for _, r := range vh.GetRoutes() {
			if r.GetName() != w.route {
				continue
			}
			for _, h := range r.GetRequestHeadersToAdd() {
				if h.GetHeader().GetKey() == editHeader {
					st.edit = h.GetHeader().GetValue()
				}
			}
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.state, w.at = st, applied
	close(w.changed)
	w.changed = make(chan struct{})
	return nil
}

// wait returns when the waypoint applied a RouteConfiguration for which done holds.
func (w *routeWatch) wait(done func(routeState) bool, limit time.Duration) (time.Time, error) {
	deadline := time.After(limit)
	for {
		w.mu.Lock()
		st, at, changed := w.state, w.at, w.changed
		w.mu.Unlock()
		if done(st) {
			return at, nil
		}
		select {
		case <-changed:
		case <-deadline:
			return time.Time{}, fmt.Errorf("after %v the waypoint holds %d routes, edit %q", limit, st.routes, st.edit)
		}
	}
}

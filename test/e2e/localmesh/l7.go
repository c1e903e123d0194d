package localmesh

import (
	"bufio"
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/internal/testwait"
)

// The L7 scenario (make demo's L7 chapter and the e2e suite's waypoint
// tests): an enrolled namespace with two versions of an HTTP service and a
// client, a Waypoint, and the Gateway API and MeshPolicy objects a user
// applies.

// L7Workloads are the L7 scenario's pods and Service addresses.
type L7Workloads struct {
	Namespace string
	// V1 and V2 serve HTTP (reviews-v1 on the first node, reviews-v2 on
	// the second); Client runs curl (first node).
	V1, V2, Client *AppPod
	// ReviewsAddr is Service reviews (both versions), ReviewsV1Addr and
	// ReviewsV2Addr Services reviews-v1 and reviews-v2, ReviewsL4Addr Service
	// reviews-l4 (the same pods as reviews, labelled to use no waypoint).
	ReviewsAddr, ReviewsV1Addr, ReviewsV2Addr, ReviewsL4Addr string
}

// WaypointName is the scenario's Waypoint.
const WaypointName = "waypoint"

// DeployL7 creates the scenario's namespace (enrolled), pods and Services:
// reviews (app=reviews), reviews-v1 and reviews-v2 (one version each),
// reviews-l4 (app=reviews, ambientmesh.dev/use-waypoint=none), all on port
// 8080 named http.
func (m *Mesh) DeployL7(ctx context.Context, namespace string) (*L7Workloads, error) {
	if err := m.EnsureNamespace(ctx, namespace, map[string]string{EnrollLabel: "ambient"}); err != nil {
		return nil, err
	}
	w := &L7Workloads{Namespace: namespace}
	var err error
	n1, n2 := m.Nodes[0], m.Nodes[1]
	if w.V1, err = m.AddHTTPPod(ctx, namespace, "reviews-v1", "reviews", n1, map[string]string{"app": "reviews", "version": "v1"}); err != nil {
		return nil, err
	}
	if w.V2, err = m.AddHTTPPod(ctx, namespace, "reviews-v2", "reviews", n2, map[string]string{"app": "reviews", "version": "v2"}); err != nil {
		return nil, err
	}
	if w.Client, err = m.AddPod(ctx, namespace, "client", "client", n1, map[string]string{"app": "client"}); err != nil {
		return nil, err
	}
	services := []struct {
		name     string
		selector map[string]string
		labels   map[string]string
		addr     *string
	}{
		{"reviews", map[string]string{"app": "reviews"}, nil, &w.ReviewsAddr},
		{"reviews-v1", map[string]string{"app": "reviews", "version": "v1"}, nil, &w.ReviewsV1Addr},
		{"reviews-v2", map[string]string{"app": "reviews", "version": "v2"}, nil, &w.ReviewsV2Addr},
		{"reviews-l4", map[string]string{"app": "reviews"}, map[string]string{meshv1alpha1.LabelUseWaypoint: meshv1alpha1.UseWaypointNone}, &w.ReviewsL4Addr},
	}
	for _, s := range services {
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: s.name, Namespace: namespace, Labels: s.labels},
			Spec: corev1.ServiceSpec{Selector: s.selector, Ports: []corev1.ServicePort{{
				Name: "http", Port: EchoPort, TargetPort: intstr.FromInt32(EchoPort), Protocol: corev1.ProtocolTCP,
			}}},
		}
		created, err := m.Clientset.CoreV1().Services(namespace).Create(ctx, svc, metav1.CreateOptions{})
		if err != nil {
			return nil, err
		}
		if s.addr != nil {
			*s.addr = fmt.Sprintf("%s:%d", created.Spec.ClusterIP, EchoPort)
		}
	}
	return w, nil
}

// WaypointYAML is a Waypoint for the services of namespace.
func WaypointYAML(namespace string) string {
	return fmt.Sprintf(`apiVersion: mesh.ambientmesh.dev/v1alpha1
kind: Waypoint
metadata:
  name: %s
  namespace: %s
spec:
  for: service
`, WaypointName, namespace)
}

// ReviewsRouteYAML is a GAMMA HTTPRoute for Service reviews: requests with
// the header end-user: jason go to v2, the rest 80/20 to v1/v2.
func ReviewsRouteYAML(namespace string) string {
	return fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: reviews
  namespace: %s
spec:
  parentRefs:
  - group: ""
    kind: Service
    name: reviews
    port: %d
  rules:
  - matches:
    - headers:
      - name: end-user
        value: jason
    backendRefs:
    - name: reviews-v2
      port: %[2]d
  - backendRefs:
    - name: reviews-v1
      port: %[2]d
      weight: 80
    - name: reviews-v2
      port: %[2]d
      weight: 20
`, namespace, EchoPort)
}

// DenyAdminPostYAML is an L7 MeshPolicy on Service reviews: POST to paths
// under /admin is denied (403), everything else passes.
func DenyAdminPostYAML(namespace string) string {
	return fmt.Sprintf(`apiVersion: mesh.ambientmesh.dev/v1alpha1
kind: MeshPolicy
metadata:
  name: deny-admin-post
  namespace: %s
spec:
  targetRefs:
  - kind: Service
    name: reviews
  action: DENY
  rules:
  - to:
    - methods: ["POST"]
      paths:
      - prefix: /admin
`, namespace)
}

// JWTPolicyYAML is an L7 MeshPolicy on Service reviews with a jwt
// setting: paths under /private need a valid token of the issuer (401
// without one), and a token whose "group" claim is "banned" is denied
// (403). Other paths need no token.
func JWTPolicyYAML(namespace, issuer, jwks string) string {
	return fmt.Sprintf(`apiVersion: mesh.ambientmesh.dev/v1alpha1
kind: MeshPolicy
metadata:
  name: private-needs-jwt
  namespace: %s
spec:
  targetRefs:
  - kind: Service
    name: reviews
  action: DENY
  jwt:
    issuer: %s
    jwks: '%s'
  rules:
  - to:
    - paths:
      - prefix: /private
    when:
    - claim: group
      values: ["banned"]
`, namespace, issuer, jwks)
}

// FaultRouteYAML is an HTTPRoute for Service reviews-v1 whose fault
// annotation makes the waypoint answer half of its requests 503.
func FaultRouteYAML(namespace string) string {
	return fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: reviews-v1-fault
  namespace: %s
  annotations:
    ambientmesh.dev/fault-abort: "503:50"
spec:
  parentRefs:
  - group: ""
    kind: Service
    name: reviews-v1
    port: %d
  rules:
  - backendRefs:
    - name: reviews-v1
      port: %[2]d
`, namespace, EchoPort)
}

// RetryRouteYAML is an HTTPRoute for Service reviews-v2 that retries its
// 503s (Gateway API's retry field, experimental channel): reviews-v2's
// FlakyPath then always answers 200.
func RetryRouteYAML(namespace string) string {
	return fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: reviews-v2-retry
  namespace: %s
spec:
  parentRefs:
  - group: ""
    kind: Service
    name: reviews-v2
    port: %d
  rules:
  - backendRefs:
    - name: reviews-v2
      port: %[2]d
    retry:
      attempts: 2
      codes: [503]
      backoff: 10ms
`, namespace, EchoPort)
}

// WaitWaypointReady waits for the Waypoint's Ready condition.
func (m *Mesh) WaitWaypointReady(ctx context.Context, namespace, name string, timeout time.Duration) error {
	return testwait.Until(timeout, func() error {
		wp := &meshv1alpha1.Waypoint{}
		if err := m.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, wp); err != nil {
			return err
		}
		c := meta.FindStatusCondition(wp.Status.Conditions, meshv1alpha1.WaypointConditionReady)
		if c == nil || c.Status != metav1.ConditionTrue || c.ObservedGeneration != wp.Generation {
			return fmt.Errorf("waypoint %s/%s is not Ready: %+v (logs in %s)", namespace, name, c, m.LogDir())
		}
		return nil
	})
}

// WaypointGet fetches a path from the first ready pod of a waypoint, inside
// its netns: metrics (15020) or the localhost-only admin endpoint (15000).
func (m *Mesh) WaypointGet(namespace, name string, port int32, path string) (string, error) {
	for _, p := range m.WorkloadPods(namespace, name) {
		if p.Ready {
			return GetIn(p.NetnsPath, port, path)
		}
	}
	return "", fmt.Errorf("waypoint %s/%s has no ready pod", namespace, name)
}

// Response is one HTTP exchange as curl saw it.
type Response struct {
	Code int
	// ServedBy is the backend pod that answered (namespace/name), empty
	// when the body was not one of ours (a 403 from the waypoint).
	ServedBy string
}

// CurlN sends n requests from the pod to url (curl's URL globbing, over one
// kept-alive connection), with extra curl args (-H, -X ...), and returns
// each response.
func (p *AppPod) CurlN(ctx context.Context, n int, url string, args ...string) ([]Response, error) {
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	full := append([]string{"-m", "20", "-w", `\n%{http_code}\n`}, args...)
	out, err := p.Curl(ctx, append(full, fmt.Sprintf("%s%sn=[1-%d]", url, sep, n))...)
	responses := parseCurl(out)
	if err != nil {
		return responses, err
	}
	if len(responses) != n {
		return responses, fmt.Errorf("curl printed %d responses for %d requests:\n%s", len(responses), n, out)
	}
	return responses, nil
}

// parseCurl reads curl's output for bodies from serveHTTP, each followed by
// the status line that -w prints.
func parseCurl(out string) []Response {
	var responses []Response
	servedBy := ""
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if rest, ok := strings.CutPrefix(line, "hello from "); ok {
			servedBy, _, _ = strings.Cut(rest, " ")
			continue
		}
		if code, err := strconv.Atoi(line); err == nil && len(line) == 3 {
			responses = append(responses, Response{Code: code, ServedBy: servedBy})
			servedBy = ""
		}
	}
	return responses
}

// Tally counts responses by "<code> <served by>" ("200 l7/reviews-v1").
func Tally(responses []Response) map[string]int {
	out := map[string]int{}
	for _, r := range responses {
		key := strconv.Itoa(r.Code)
		if r.ServedBy != "" {
			key += " " + r.ServedBy
		}
		out[key]++
	}
	return out
}

// RequestsTotal sums a Prometheus counter's lines that have every fragment.
func RequestsTotal(metrics, name string, fragments ...string) float64 {
	sum := 0.0
	for _, line := range MetricLines(metrics, name, fragments...) {
		fields := strings.Fields(line)
		if v, err := strconv.ParseFloat(fields[len(fields)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/test/e2e/localmesh"
)

const l7Namespace = "l7"

// TestWaypointL7 walks the L7 story on real processes: a Waypoint made by
// the operator and run by the kubelet stand-in, a namespace labelled to use
// it, and a plain curl client. The steps share the setup and run in order.
func TestWaypointL7(t *testing.T) {
	requireMesh(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	l7, err := mesh.DeployL7(ctx, l7Namespace)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := mesh.Apply(localmesh.WaypointYAML(l7Namespace)); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Cleanup(func() { deleteWaypoint(t, l7Namespace, localmesh.WaypointName) })
	if _, err := mesh.Kubectl("label", "namespace", l7Namespace, meshv1alpha1.LabelUseWaypoint+"="+localmesh.WaypointName); err != nil {
		t.Fatal(err)
	}
	if err := mesh.WaitWaypointReady(ctx, l7Namespace, localmesh.WaypointName, 90*time.Second); err != nil {
		t.Fatal(err)
	}
	pods := mesh.WorkloadPods(l7Namespace, localmesh.WaypointName)
	if len(pods) != 1 || pods[0].IP == "" {
		t.Fatalf("want one waypoint pod with an IP, got %+v", pods)
	}
	reviews := "http://" + l7.ReviewsAddr + "/"

	t.Run("default route: the Service's traffic passes the waypoint", func(t *testing.T) {
		before := waypointRequests(t, `response_code="200"`)
		eventually(t, 30*time.Second, "GET / through the waypoint", func() error {
			r, err := l7.Client.CurlN(ctx, 1, reviews)
			if err != nil || r[0].Code != 200 || r[0].ServedBy == "" {
				return fmt.Errorf("%+v %v", r, err)
			}
			if after := waypointRequests(t, `response_code="200"`); after <= before {
				return fmt.Errorf("answered by %s, but the waypoint counted no request", r[0].ServedBy)
			}
			return nil
		})
	})

	if out, err := mesh.Apply(localmesh.ReviewsRouteYAML(l7Namespace)); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	// The route reaches the waypoint asynchronously: wait until a request
	// with the header is answered by v2 ten times in a row.
	eventually(t, 30*time.Second, "the HTTPRoute applied at the waypoint", func() error {
		r, err := l7.Client.CurlN(ctx, 10, reviews, "-H", "end-user: jason")
		if n := localmesh.Tally(r)["200 "+l7.V2.String()]; err != nil || n != 10 {
			return fmt.Errorf("%v %v", localmesh.Tally(r), err)
		}
		return nil
	})

	t.Run("HTTPRoute splits 80/20 between v1 and v2", func(t *testing.T) {
		const n = 100
		r, err := l7.Client.CurlN(ctx, n, reviews)
		if err != nil {
			t.Fatal(err)
		}
		got := localmesh.Tally(r)
		v1, v2 := got["200 "+l7.V1.String()], got["200 "+l7.V2.String()]
		// 80/20 over 100 requests: v2 ~ Binomial(100, 0.2), sd 4; ±3 sd.
		if v1+v2 != n || v2 < 8 || v2 > 32 {
			t.Errorf("%d requests should split about 80/20 between v1 and v2 (v2 in [8, 32]); got %v", n, got)
		}
		t.Logf("split over %d requests: %v", n, got)
	})

	t.Run("header match sends end-user jason to v2", func(t *testing.T) {
		r, err := l7.Client.CurlN(ctx, 20, reviews, "-H", "end-user: jason")
		if err != nil {
			t.Fatal(err)
		}
		if got := localmesh.Tally(r); got["200 "+l7.V2.String()] != 20 {
			t.Errorf("every request with end-user: jason should reach v2; got %v", got)
		}
	})

	if out, err := mesh.Apply(localmesh.DenyAdminPostYAML(l7Namespace)); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Run("L7 MeshPolicy denies POST /admin, GET / passes", func(t *testing.T) {
		eventually(t, 30*time.Second, "POST /admin denied with 403", func() error {
			r, err := l7.Client.CurlN(ctx, 1, "http://"+l7.ReviewsAddr+"/admin", "-X", "POST")
			if err != nil || r[0].Code != 403 || r[0].ServedBy != "" {
				return fmt.Errorf("%+v %v", r, err)
			}
			return nil
		})
		for _, c := range []struct{ method, path string }{{"GET", "/"}, {"GET", "/admin"}, {"POST", "/"}} {
			r, err := l7.Client.CurlN(ctx, 1, "http://"+l7.ReviewsAddr+c.path, "-X", c.method)
			if err != nil || r[0].Code != 200 {
				t.Errorf("%s %s should pass the policy (200), got %+v %v", c.method, c.path, r, err)
			}
		}
	})

	t.Run("ambientctl why names the L7 policy and the waypoint that enforces it", func(t *testing.T) {
		out, err := ambientctl(t, "why", "-n", l7Namespace, l7.Client.Name, "svc/reviews", "--method", "POST", "--path", "/admin")
		if err != nil {
			t.Fatalf("ambientctl why: %v\n%s", err, out)
		}
		contains(t, "ambientctl why POST /admin", out, "DENIED: MeshPolicy "+l7Namespace+"/deny-admin-post (L7)", "waypoint "+l7Namespace+"/"+localmesh.WaypointName)
		out, err = ambientctl(t, "why", "-n", l7Namespace, l7.Client.Name, "svc/reviews", "--method", "GET", "--path", "/")
		if err != nil {
			t.Fatalf("ambientctl why: %v\n%s", err, out)
		}
		contains(t, "ambientctl why GET /", out, "\nALLOWED")
	})

	t.Run("JWT: /private needs a valid token, a banned group is denied", func(t *testing.T) {
		issuer, err := localmesh.NewTokenIssuer("https://issuer.l7.example")
		if err != nil {
			t.Fatal(err)
		}
		jwks, err := issuer.JWKS()
		if err != nil {
			t.Fatal(err)
		}
		if out, err := mesh.Apply(localmesh.JWTPolicyYAML(l7Namespace, issuer.Issuer, jwks)); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		reviewer, err := issuer.Token("alice", map[string]any{"group": "reviewers"})
		if err != nil {
			t.Fatal(err)
		}
		banned, err := issuer.Token("mallory", map[string]any{"group": "banned"})
		if err != nil {
			t.Fatal(err)
		}
		private := "http://" + l7.ReviewsAddr + "/private"
		eventually(t, 30*time.Second, "GET /private without a token refused with 401", func() error {
			r, err := l7.Client.CurlN(ctx, 1, private)
			if err != nil || r[0].Code != 401 {
				return fmt.Errorf("%+v %v", r, err)
			}
			return nil
		})
		for _, c := range []struct {
			what, url string
			args      []string
			want      int
		}{
			{"GET /private with a reviewer's token", private, []string{"-H", "Authorization: Bearer " + reviewer}, 200},
			{"GET /private with a banned user's token", private, []string{"-H", "Authorization: Bearer " + banned}, 403},
			{"GET /private with a forged token", private, []string{"-H", "Authorization: Bearer " + reviewer[:len(reviewer)-4] + "AAAA"}, 401},
			{"GET / without a token", reviews, nil, 200},
		} {
			r, err := l7.Client.CurlN(ctx, 1, c.url, c.args...)
			if err != nil || r[0].Code != c.want {
				t.Errorf("%s: want %d, got %+v %v", c.what, c.want, r, err)
			}
		}
	})

	t.Run("fault injection answers about half of reviews-v1's requests 503", func(t *testing.T) {
		if out, err := mesh.Apply(localmesh.FaultRouteYAML(l7Namespace)); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		v1 := "http://" + l7.ReviewsV1Addr + "/"
		var got map[string]int
		eventually(t, 30*time.Second, "the fault route applied", func() error {
			r, err := l7.Client.CurlN(ctx, 20, v1)
			if got = localmesh.Tally(r); err != nil || got["503"] == 0 {
				return fmt.Errorf("%v %v", got, err)
			}
			return nil
		})
		const n = 100
		r, err := l7.Client.CurlN(ctx, n, v1)
		if err != nil {
			t.Fatal(err)
		}
		got = localmesh.Tally(r)
		// 50% of 100: sd 5; ±4 sd.
		if got["503"]+got["200 "+l7.V1.String()] != n || got["503"] < 30 || got["503"] > 70 {
			t.Errorf("%d requests to reviews-v1 with a 50%% abort fault: want 503 for 30..70 of them and v1 for the rest; got %v", n, got)
		}
		t.Logf("fault over %d requests: %v", n, got)
	})

	t.Run("a retry policy hides a flaky backend", func(t *testing.T) {
		flaky := "http://" + l7.ReviewsV2Addr + localmesh.FlakyPath
		r, err := l7.Client.CurlN(ctx, 20, flaky)
		if err != nil {
			t.Fatal(err)
		}
		if got := localmesh.Tally(r); got["503"] < 5 {
			t.Fatalf("without a retry policy reviews-v2's %s should fail about every other request; got %v", localmesh.FlakyPath, got)
		}
		retriesBefore := waypointCounter(t, "ambientmesh_waypoint_retries_total")
		if out, err := mesh.Apply(localmesh.RetryRouteYAML(l7Namespace)); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		eventually(t, 30*time.Second, "every request answered 200 once the retry route applies", func() error {
			r, err := l7.Client.CurlN(ctx, 20, flaky)
			if got := localmesh.Tally(r); err != nil || got["200 "+l7.V2.String()] != 20 {
				return fmt.Errorf("%v %v", got, err)
			}
			return nil
		})
		if after := waypointCounter(t, "ambientmesh_waypoint_retries_total"); after < retriesBefore+10 {
			t.Errorf("20 requests to a backend failing every other one should take at least 10 retries; the waypoint counted %v", after-retriesBefore)
		}
	})

	t.Run("the destination ztunnel's L4 policy sees the client, not the waypoint", func(t *testing.T) {
		waypointPod := mesh.WorkloadPods(l7Namespace, localmesh.WaypointName)[0]
		waypointSA := fmt.Sprintf("%s/%s", l7Namespace, localmesh.WaypointName)
		v2 := "http://" + l7.ReviewsV2Addr + "/"
		clientSA := l7.Client.Namespace + "/" + l7.Client.ServiceAccount
		for _, c := range []struct {
			what, from string
			// marker shows the policy's rule in the ztunnel's /policies.
			marker string
			denied bool
		}{
			{"the waypoint's IP", "ipBlocks: [" + waypointPod.IP + "/32]", waypointPod.IP, false},
			{"the waypoint's identity", "serviceAccounts: [" + waypointSA + "]", "sa/" + localmesh.WaypointName, false},
			{"the client's IP", "ipBlocks: [" + l7.Client.IP + "/32]", l7.Client.IP, true},
			{"the client's identity", "serviceAccounts: [" + clientSA + "]", "sa/" + l7.Client.ServiceAccount, true},
		} {
			policy := fmt.Sprintf(`apiVersion: mesh.ambientmesh.dev/v1alpha1
kind: MeshPolicy
metadata:
  name: l4-deny
  namespace: %s
spec:
  selector:
    matchLabels: {app: reviews, version: v2}
  action: DENY
  rules:
  - from:
    - %s
`, l7Namespace, c.from)
			if out, err := mesh.Apply(policy); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			eventually(t, 30*time.Second, "the policy at reviews-v2's ztunnel", func() error {
				policies, err := localmesh.ZtunnelGet(l7.V2.Node, meshv1alpha1.PortAdmin, "/policies")
				if err != nil || !strings.Contains(policies, `"l4-deny"`) || !strings.Contains(policies, c.marker) {
					return fmt.Errorf("no l4-deny with %s in the ztunnel's policies (%v)", c.marker, err)
				}
				return nil
			})
			r, err := l7.Client.CurlN(ctx, 5, v2)
			if err != nil {
				t.Fatal(err)
			}
			got := localmesh.Tally(r)
			if c.denied && got["503"] != 5 {
				t.Errorf("a DENY on %s at reviews-v2's ztunnel: the relayed requests should fail (503 from the waypoint), got %v", c.what, got)
			}
			if !c.denied && got["200 "+l7.V2.String()] != 5 {
				t.Errorf("a DENY on %s at reviews-v2's ztunnel must not apply to the client's relayed requests: want 5 × 200, got %v", c.what, got)
			}
			// ambientctl why says the same, from the objects alone.
			out, err := ambientctl(t, "why", "-n", l7Namespace, l7.Client.Name, "svc/reviews-v2")
			if err != nil {
				t.Fatalf("ambientctl why: %v\n%s", err, out)
			}
			want := "\nALLOWED"
			if c.denied {
				want = "DENIED: MeshPolicy " + l7Namespace + "/l4-deny (L4)"
			}
			contains(t, "ambientctl why with a DENY on "+c.what, out, want)
		}
		if _, err := mesh.Kubectl("delete", "meshpolicy", "-n", l7Namespace, "l4-deny"); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "reviews-v2 reachable again", func() error {
			r, err := l7.Client.CurlN(ctx, 1, v2)
			if err != nil || r[0].Code != 200 {
				return fmt.Errorf("%+v %v", r, err)
			}
			return nil
		})
	})

	t.Run("the waypoint's access log names the real client", func(t *testing.T) {
		path := fmt.Sprintf("/access-log-%d", time.Now().UnixNano())
		if r, err := l7.Client.CurlN(ctx, 1, reviews[:len(reviews)-1]+path); err != nil || r[0].Code != 200 {
			t.Fatalf("GET %s: %+v %v", path, r, err)
		}
		pod := mesh.WorkloadPods(l7Namespace, localmesh.WaypointName)[0]
		var entry struct {
			Path            string `json:"path"`
			ResponseCode    int    `json:"response_code"`
			SourceAddress   string `json:"source_address"`
			SourcePrincipal string `json:"source_principal"`
		}
		// The waypoint writes its access log in batches, once a second.
		eventually(t, 10*time.Second, "the request in the waypoint's access log", func() error {
			line, err := localmesh.LogLine(pod.Proc.LogPath, path)
			if err != nil {
				return err
			}
			return json.Unmarshal([]byte(line), &entry)
		})
		if entry.ResponseCode != 200 || entry.SourceAddress != l7.Client.IP || entry.SourcePrincipal != localmesh.Principal(l7.Client) {
			t.Errorf("access log entry %+v: want response_code 200, source_address %s, source_principal %s",
				entry, l7.Client.IP, localmesh.Principal(l7.Client))
		}
	})

	t.Run("waypoint metrics count requests by response code", func(t *testing.T) {
		metrics, err := mesh.WaypointGet(l7Namespace, localmesh.WaypointName, meshv1alpha1.PortMetrics, "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		client := `source_principal="` + localmesh.Principal(l7.Client) + `"`
		for _, code := range []string{"200", "401", "403", "503"} {
			if localmesh.RequestsTotal(metrics, "istio_requests_total", `reporter="waypoint"`, `response_code="`+code+`"`, client) == 0 {
				t.Errorf("no istio_requests_total{reporter=\"waypoint\",response_code=%q,%s} in the waypoint's metrics:\n%s",
					code, client, strings.Join(localmesh.MetricLines(metrics, "istio_requests_total"), "\n"))
			}
		}
	})

	t.Run("ambientctl waypoint routes shows the HTTPRoute", func(t *testing.T) {
		out, err := ambientctl(t, "waypoint", "routes", "--via", "netns", "-n", l7Namespace, localmesh.WaypointName)
		if err != nil {
			t.Fatalf("ambientctl waypoint routes: %v\n%s", err, out)
		}
		contains(t, "ambientctl waypoint routes", out, "end-user", "reviews-v1.l7.svc.cluster.local", "80", "reviews-v2.l7.svc.cluster.local")
	})

	t.Run("scaled to two replicas, both waypoint pods carry traffic", func(t *testing.T) {
		scaleWaypoint(t, 2)
		defer scaleWaypoint(t, 1)
		eventually(t, 30*time.Second, "both waypoint pods count requests", func() error {
			before := perPodRequests(t)
			if len(before) != 2 {
				return fmt.Errorf("%d ready waypoint pods", len(before))
			}
			// One connection per request: each connection picks a waypoint pod.
			if _, err := l7.Client.CurlN(ctx, 20, reviews, "-H", "Connection: close"); err != nil {
				return err
			}
			after := perPodRequests(t)
			for pod, n := range before {
				if after[pod] <= n {
					return fmt.Errorf("waypoint pod %s counted no request of 20 (before %v, after %v)", pod, before, after)
				}
			}
			return nil
		})
	})

	t.Run("a rolling update under steady load fails no request", func(t *testing.T) {
		old := mesh.WorkloadPods(l7Namespace, localmesh.WaypointName)
		// Four keep-alive clients at ~50 requests/s each, none of which
		// retries: every request lost in the hand-over shows as a failure.
		load := l7.Client.StartLoad(reviews, 4, 20*time.Millisecond)
		defer load.Stop()
		eventually(t, 10*time.Second, "the load flowing", func() error {
			if ok, failures := load.Counts(); ok < 50 || len(failures) > 0 {
				return fmt.Errorf("%d answered, failures %v", ok, failures)
			}
			return nil
		})
		if _, err := mesh.Kubectl("patch", "waypoint", "-n", l7Namespace, localmesh.WaypointName, "--type=merge",
			"-p", `{"spec":{"resources":{"requests":{"cpu":"150m","memory":"128Mi"}}}}`); err != nil {
			t.Fatal(err)
		}
		eventually(t, time.Minute, "a new waypoint pod replaces the old one", func() error {
			pods := mesh.WorkloadPods(l7Namespace, localmesh.WaypointName)
			if len(pods) != 1 || len(old) != 1 || pods[0].Name == old[0].Name || !pods[0].Ready {
				return fmt.Errorf("pods %+v (before: %+v)", pods, old)
			}
			return nil
		})
		// The old pod is gone: its drain is over. Keep the load one more
		// second on the new pod alone, then count.
		before, _ := load.Counts()
		eventually(t, 10*time.Second, "the load flowing through the new pod", func() error {
			if ok, _ := load.Counts(); ok < before+50 {
				return fmt.Errorf("%d answered since the old pod left", ok-before)
			}
			return nil
		})
		load.Stop()
		ok, failures := load.Counts()
		if len(failures) > 0 {
			t.Errorf("%d of %d requests failed while the waypoint rolled:\n%s", len(failures), ok+len(failures), strings.Join(failures, "\n"))
		}
		t.Logf("rolling update under load: %d requests answered, %d failed", ok, len(failures))
		eventually(t, 30*time.Second, "POST /admin denied by the new waypoint pod", func() error {
			r, err := l7.Client.CurlN(ctx, 1, "http://"+l7.ReviewsAddr+"/admin", "-X", "POST")
			if err != nil || r[0].Code != 403 {
				return fmt.Errorf("%+v %v", r, err)
			}
			return nil
		})
	})

	t.Run("a Service without a waypoint stays L4 only", func(t *testing.T) {
		before := waypointRequests(t)
		r, err := l7.Client.CurlN(ctx, 10, "http://"+l7.ReviewsL4Addr+"/admin", "-X", "POST")
		if err != nil {
			t.Fatal(err)
		}
		got := localmesh.Tally(r)
		if got["200 "+l7.V1.String()]+got["200 "+l7.V2.String()] != 10 {
			t.Errorf("POST /admin to reviews-l4 (use-waypoint=none) is not subject to the L7 policy of reviews: want 10 × 200, got %v", got)
		}
		if after := waypointRequests(t); after != before {
			t.Errorf("requests to reviews-l4 passed the waypoint (its request count went from %v to %v)", before, after)
		}
	})

	t.Run("removing use-waypoint returns traffic to the L4 path without restart", func(t *testing.T) {
		if _, err := mesh.Kubectl("label", "namespace", l7Namespace, meshv1alpha1.LabelUseWaypoint+"-"); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "POST /admin allowed once the waypoint is out of the path", func() error {
			r, err := l7.Client.CurlN(ctx, 1, "http://"+l7.ReviewsAddr+"/admin", "-X", "POST")
			if err != nil || r[0].Code != 200 {
				return fmt.Errorf("%+v %v", r, err)
			}
			return nil
		})
		before := waypointRequests(t)
		// One connection per request: ztunnel balances connections, not requests.
		r, err := l7.Client.CurlN(ctx, 20, reviews, "-H", "end-user: jason", "-H", "Connection: close")
		if err != nil {
			t.Fatal(err)
		}
		if got := localmesh.Tally(r); got["200 "+l7.V1.String()] == 0 || got["200 "+l7.V2.String()] == 0 {
			t.Errorf("without the waypoint the header route no longer applies: 20 connections should reach both v1 and v2, got %v", got)
		}
		if after := waypointRequests(t); after != before {
			t.Errorf("the waypoint still counts requests after the label was removed (%v → %v)", before, after)
		}
	})
}

// waypointRequests sums the waypoint's istio_requests_total lines with the fragments.
func waypointRequests(t *testing.T, fragments ...string) float64 {
	t.Helper()
	metrics, err := mesh.WaypointGet(l7Namespace, localmesh.WaypointName, meshv1alpha1.PortMetrics, "/metrics")
	if err != nil {
		t.Fatalf("reading the waypoint's metrics: %v", err)
	}
	return localmesh.RequestsTotal(metrics, "istio_requests_total", append([]string{`reporter="waypoint"`}, fragments...)...)
}

// waypointCounter sums a counter of the waypoint's metrics over its labels.
func waypointCounter(t *testing.T, name string) float64 {
	t.Helper()
	metrics, err := mesh.WaypointGet(l7Namespace, localmesh.WaypointName, meshv1alpha1.PortMetrics, "/metrics")
	if err != nil {
		t.Fatalf("reading the waypoint's metrics: %v", err)
	}
	return localmesh.RequestsTotal(metrics, name)
}

// perPodRequests reads istio_requests_total{reporter="waypoint"} of each
// ready waypoint pod.
func perPodRequests(t *testing.T) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, p := range mesh.WorkloadPods(l7Namespace, localmesh.WaypointName) {
		if !p.Ready {
			continue
		}
		metrics, err := localmesh.GetIn(p.NetnsPath, meshv1alpha1.PortMetrics, "/metrics")
		if err != nil {
			t.Fatalf("metrics of waypoint pod %s: %v", p.Name, err)
		}
		out[p.Name] = localmesh.RequestsTotal(metrics, "istio_requests_total", `reporter="waypoint"`)
	}
	return out
}

func scaleWaypoint(t *testing.T, replicas int) {
	t.Helper()
	if _, err := mesh.Kubectl("patch", "waypoint", "-n", l7Namespace, localmesh.WaypointName, "--type=merge",
		"-p", fmt.Sprintf(`{"spec":{"replicas":%d}}`, replicas)); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, fmt.Sprintf("%d ready waypoint pods", replicas), func() error {
		pods := mesh.WorkloadPods(l7Namespace, localmesh.WaypointName)
		nodes := map[string]bool{}
		for _, p := range pods {
			if !p.Ready {
				return fmt.Errorf("pod %s not ready", p.Name)
			}
			nodes[p.Node] = true
		}
		if len(pods) != replicas || len(nodes) != replicas {
			return fmt.Errorf("want %d pods on %[1]d nodes, have %+v", replicas, pods)
		}
		return nil
	})
}

// deleteWaypoint deletes a Waypoint and waits until the stand-in stopped
// its pods (the uninstall test expects no component process to remain).
func deleteWaypoint(t *testing.T, namespace, name string) {
	ctx := context.Background()
	wp := &meshv1alpha1.Waypoint{}
	wp.Namespace, wp.Name = namespace, name
	if err := client.IgnoreNotFound(mesh.Client.Delete(ctx, wp)); err != nil {
		t.Errorf("deleting waypoint %s/%s: %v", namespace, name, err)
		return
	}
	eventually(t, time.Minute, "the deleted waypoint's pods should stop", func() error {
		if pods := mesh.WorkloadPods(namespace, name); len(pods) > 0 {
			return fmt.Errorf("still running: %+v", pods)
		}
		return nil
	})
}

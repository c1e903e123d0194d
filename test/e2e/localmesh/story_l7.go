package localmesh

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/internal/testwait"
)

// L7Namespace is the namespace of the demo's L7 chapter.
const L7Namespace = "bookinfo"

// runL7 is the demo's L7 chapter: a Waypoint for namespace bookinfo, then
// an HTTPRoute (80/20 split and a header match), an L7 MeshPolicy, a JWT
// requirement and an injected fault as a plain curl client sees them, the
// waypoint's metrics and ambientctl's view of it.
func (s *Story) runL7(ctx context.Context, m *Mesh) error {
	ns := L7Namespace
	s.Heading("L7: namespace " + ns + " (in the mesh) gets a waypoint")
	w, err := m.DeployL7(ctx, ns)
	if err != nil {
		return err
	}
	s.Say("reviews-v1 (%s) and reviews-v2 (%s) serve HTTP behind Service reviews %s; bookinfo/client runs curl",
		w.V1.Node.Name, w.V2.Node.Name, w.ReviewsAddr)
	if err := s.apply(m, WaypointYAML(ns)); err != nil {
		return err
	}
	label := meshv1alpha1.LabelUseWaypoint + "=" + WaypointName
	s.Say("$ kubectl label namespace %s %s", ns, label)
	if _, err := m.Kubectl("label", "namespace", ns, label); err != nil {
		return err
	}
	if err := m.WaitWaypointReady(ctx, ns, WaypointName, 90*time.Second); err != nil {
		return err
	}
	out, _ := m.Kubectl("get", "waypoint", "-n", ns)
	s.Show(out)
	out, _ = m.Kubectl("get", "pods", "-n", ns, "-l", meshv1alpha1.LabelWaypoint, "-o", "wide")
	s.Show(out)
	s.Say("the operator rendered its Deployment; the local mesh runs bin/waypoint in the pod's own netns (not captured by ztunnel)")
	reviews := "http://" + w.ReviewsAddr + "/"
	var first []Response
	err = testwait.Until(30*time.Second, func() (err error) {
		first, err = w.Client.CurlN(ctx, 1, reviews)
		if err == nil && first[0].Code != 200 {
			err = fmt.Errorf("%+v", first)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("bookinfo/client → reviews through the waypoint: %w", err)
	}
	s.Say("$ curl %s   (from bookinfo/client) → %d, answered by %s", reviews, first[0].Code, first[0].ServedBy)

	s.Heading("An HTTPRoute (Gateway API, parentRef Service reviews) splits 80/20 between v1 and v2")
	if err := s.apply(m, ReviewsRouteYAML(ns)); err != nil {
		return err
	}
	var jason []Response
	err = testwait.Until(30*time.Second, func() (err error) {
		jason, err = w.Client.CurlN(ctx, 10, reviews, "-H", "end-user: jason")
		if n := Tally(jason)["200 "+w.V2.String()]; err == nil && n != 10 {
			err = fmt.Errorf("%v", Tally(jason))
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("the HTTPRoute did not reach the waypoint: %w", err)
	}
	split, err := w.Client.CurlN(ctx, 100, reviews)
	if err != nil {
		return err
	}
	s.Say("100 × curl %s: %s", reviews, tallyLine(split))

	s.Heading("The route's header match sends end-user: jason to v2")
	jason, err = w.Client.CurlN(ctx, 20, reviews, "-H", "end-user: jason")
	if err != nil {
		return err
	}
	s.Say("20 × curl -H 'end-user: jason' %s: %s", reviews, tallyLine(jason))

	s.Heading("An L7 MeshPolicy on Service reviews denies POST /admin; the waypoint enforces it")
	if err := s.apply(m, DenyAdminPostYAML(ns)); err != nil {
		return err
	}
	admin := "http://" + w.ReviewsAddr + "/admin"
	var denied []Response
	err = testwait.Until(30*time.Second, func() (err error) {
		denied, err = w.Client.CurlN(ctx, 1, admin, "-X", "POST")
		if err == nil && denied[0].Code != 403 {
			err = fmt.Errorf("%+v", denied)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("POST /admin was not denied: %w", err)
	}
	s.Say("curl -X POST %s → %d", admin, denied[0].Code)
	for _, c := range []struct{ method, url string }{{"GET", reviews}, {"GET", admin}} {
		r, err := w.Client.CurlN(ctx, 1, c.url, "-X", c.method)
		if err != nil {
			return err
		}
		if r[0].Code != 200 {
			return fmt.Errorf("%s %s: want 200 past the policy, got %d", c.method, c.url, r[0].Code)
		}
		s.Say("curl -X %s %s → %d (%s)", c.method, c.url, r[0].Code, r[0].ServedBy)
	}

	s.Heading("JWT: a MeshPolicy's jwt makes /private need a token of the issuer")
	if err := s.jwt(ctx, m, w); err != nil {
		return err
	}

	s.Heading("Fault injection: an HTTPRoute annotation answers half of reviews-v1's requests with 503")
	if err := s.apply(m, FaultRouteYAML(ns)); err != nil {
		return err
	}
	v1 := "http://" + w.ReviewsV1Addr + "/"
	err = testwait.Until(30*time.Second, func() error {
		r, err := w.Client.CurlN(ctx, 20, v1)
		if err == nil && Tally(r)["503"] == 0 {
			err = fmt.Errorf("no fault yet: %v", Tally(r))
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("the fault route did not reach the waypoint: %w", err)
	}
	faults, err := w.Client.CurlN(ctx, 100, v1)
	if err != nil {
		return err
	}
	counts := Tally(faults)
	s.Say("100 × curl %s: %d × 503 (injected by the waypoint), %d × 200 from reviews-v1", v1, counts["503"], counts["200 "+w.V1.String()])

	s.Heading("Retries: an HTTPRoute's retry policy hides a flaky backend")
	flaky := "http://" + w.ReviewsV2Addr + FlakyPath
	before, err := w.Client.CurlN(ctx, 20, flaky)
	if err != nil {
		return err
	}
	s.Say("reviews-v2 fails every other request to %s; 20 × curl %s: %v", FlakyPath, flaky, Tally(before))
	if err := s.apply(m, RetryRouteYAML(ns)); err != nil {
		return err
	}
	var after []Response
	err = testwait.Until(30*time.Second, func() (err error) {
		after, err = w.Client.CurlN(ctx, 20, flaky)
		if n := Tally(after)["200 "+w.V2.String()]; err == nil && n != 20 {
			err = fmt.Errorf("%v", Tally(after))
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("the retry route did not hide the flaky backend: %w", err)
	}
	s.Say("with retry {attempts: 2, codes: [503]}: 20 × curl %s: %v", flaky, Tally(after))

	s.Heading(`The waypoint's metrics: istio_requests_total{reporter="waypoint"} by response code`)
	metrics, err := m.WaypointGet(ns, WaypointName, meshv1alpha1.PortMetrics, "/metrics")
	if err != nil {
		return err
	}
	lines := MetricLines(metrics, "istio_requests_total", `reporter="waypoint"`, `source_principal="`+Principal(w.Client)+`"`)
	if len(lines) == 0 {
		return fmt.Errorf("the waypoint's metrics have no istio_requests_total from %s", Principal(w.Client))
	}
	var short []string
	for _, l := range lines {
		short = append(short, keepLabels(l, "reporter", "source_principal", "destination_service", "response_code"))
	}
	s.Say("from :15020/metrics inside the waypoint's pod (labels shortened):")
	s.Show(strings.Join(short, "\n"))

	s.Heading("ambientctl waypoint: the proxy's own view (its admin endpoint, 127.0.0.1:15000 in its pod)")
	ctl := filepath.Join(m.BinDir, "ambientctl")
	for _, view := range []string{"status", "routes", "clusters"} {
		args := []string{"waypoint", view, "--via", "netns", "-n", ns, WaypointName}
		out, err := exec.Command(ctl, append([]string{"--kubeconfig", m.Kubeconfig}, args...)...).CombinedOutput()
		s.Say("$ ambientctl %s", strings.Join(args, " "))
		if err != nil {
			s.Show(fmt.Sprintf("%s(%v)", out, err))
			continue
		}
		s.Show(string(out))
	}
	s.Say("also: ambientctl waypoint config --via netns -n %s %s (every xDS resource held; -o json for all of it)", ns, WaypointName)

	s.Heading("ambientctl why: which policy decides a request, and which proxy enforces it")
	args := []string{"why", "-n", ns, w.Client.Name, "svc/reviews", "--method", "POST", "--path", "/admin"}
	why, err := exec.Command(ctl, append([]string{"--kubeconfig", m.Kubeconfig}, args...)...).CombinedOutput()
	s.Say("$ ambientctl %s", strings.Join(args, " "))
	if err != nil {
		return fmt.Errorf("ambientctl why: %w\n%s", err, why)
	}
	s.Show(string(why))
	return nil
}

// jwt applies a MeshPolicy with an inline key set and shows what curl
// gets on /private without a token, with a valid one and with a banned one.
func (s *Story) jwt(ctx context.Context, m *Mesh, w *L7Workloads) error {
	issuer, err := NewTokenIssuer("https://issuer.bookinfo.example")
	if err != nil {
		return err
	}
	jwks, err := issuer.JWKS()
	if err != nil {
		return err
	}
	if err := s.apply(m, JWTPolicyYAML(w.Namespace, issuer.Issuer, jwks)); err != nil {
		return err
	}
	reviewer, err := issuer.Token("alice", map[string]any{"group": "reviewers"})
	if err != nil {
		return err
	}
	banned, err := issuer.Token("mallory", map[string]any{"group": "banned"})
	if err != nil {
		return err
	}
	private := "http://" + w.ReviewsAddr + "/private"
	err = testwait.Until(30*time.Second, func() error {
		r, err := w.Client.CurlN(ctx, 1, private)
		if err == nil && r[0].Code != 401 {
			err = fmt.Errorf("%+v", r)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("GET /private without a token was not refused: %w", err)
	}
	s.Say("curl %s → 401 (no token)", private)
	for _, c := range []struct {
		who, token string
		want       int
	}{{"alice, group reviewers", reviewer, 200}, {"mallory, group banned", banned, 403}} {
		r, err := w.Client.CurlN(ctx, 1, private, "-H", "Authorization: Bearer "+c.token)
		if err != nil {
			return err
		}
		if r[0].Code != c.want {
			return fmt.Errorf("GET /private with %s's token: want %d, got %d", c.who, c.want, r[0].Code)
		}
		s.Say("curl -H 'Authorization: Bearer <token of %s>' %s → %d", c.who, private, r[0].Code)
	}
	return nil
}

// apply shows a manifest as `kubectl apply -f -` (long lines cut) and
// applies it.
func (s *Story) apply(m *Mesh, manifest string) error {
	s.Say("$ kubectl apply -f - <<EOF")
	var shown []string
	for _, line := range strings.Split(manifest, "\n") {
		if len(line) > 100 {
			line = line[:96] + " ..."
		}
		shown = append(shown, line)
	}
	s.Show(strings.Join(shown, "\n"))
	out, err := m.Apply(manifest)
	if err != nil {
		return err
	}
	s.Say("%s", strings.TrimSpace(out))
	return nil
}

// tallyLine is "v1: 81, v2: 19" for responses all 200, else the full tally.
func tallyLine(rs []Response) string {
	counts := map[string]int{}
	for _, r := range rs {
		if r.Code != 200 {
			return fmt.Sprint(Tally(rs))
		}
		counts[r.ServedBy]++
	}
	var parts []string
	for _, who := range []string{L7Namespace + "/reviews-v1", L7Namespace + "/reviews-v2"} {
		parts = append(parts, fmt.Sprintf("%s: %d", who, counts[who]))
	}
	return strings.Join(parts, ", ")
}

// keepLabels shortens a Prometheus line to the named labels and the value.
func keepLabels(line string, keys ...string) string {
	name, rest, ok := strings.Cut(line, "{")
	if !ok {
		return line
	}
	labels, value, _ := strings.Cut(rest, "} ")
	var kept []string
	for _, kv := range splitLabels(labels) {
		k, _, _ := strings.Cut(kv, "=")
		for _, want := range keys {
			if k == want {
				kept = append(kept, kv)
			}
		}
	}
	return name + "{" + strings.Join(kept, ",") + "} " + value
}

// splitLabels splits `a="x",b="y,z"` at the commas between labels.
func splitLabels(s string) []string {
	var out []string
	quoted, start := false, 0
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\':
			i++
		case s[i] == '"':
			quoted = !quoted
		case s[i] == ',' && !quoted:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

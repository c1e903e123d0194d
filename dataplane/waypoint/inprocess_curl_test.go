package waypoint_test

import (
	"context"
	"os/exec"
	"testing"
	"time"

	wt "github.com/ambientmesh/ambient-operator/dataplane/waypoint/waypointtest"
)

// TestCurlThroughTheWaypoint has Debian's curl, an HTTP client we did not write, talk to
// the waypoint: curl cannot speak HBONE, so a forwarder plays the client's ztunnel and
// tunnels its connection to the waypoint with the reviews VIP as target.
func TestCurlThroughTheWaypoint(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed (apt-get install -y curl):", err)
	}
	m, _, _ := reviewsMesh(t, wt.PrefixRoute("v2", "/v2", "v2"), wt.PrefixRoute("default", "/", "v1"))
	forwarder := m.Forwarder(wt.ClientID, reviewsVIP)
	for _, tc := range []struct {
		name    string
		args    []string
		path    string
		want    string
		version string
	}{
		{"HTTP/1.1", []string{"--http1.1"}, "/v2/ratings", "v2 GET /v2/ratings", "1.1"},
		{"h2c prior knowledge", []string{"--http2-prior-knowledge"}, "/products?id=1", "v1 GET /products?id=1", "2"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		args := append(tc.args, "-sS", "-H", "Host: "+reviews+":9080", "-w", "\n%{http_code} HTTP/%{http_version}",
			"http://"+forwarder.String()+tc.path)
		out, err := exec.CommandContext(ctx, curl, args...).CombinedOutput()
		cancel()
		if want := tc.want + "\n200 HTTP/" + tc.version; err != nil || string(out) != want {
			t.Errorf("%s: curl %q: %v\n%s\nwant:\n%s", tc.name, args, err, out, want)
		}
	}
}

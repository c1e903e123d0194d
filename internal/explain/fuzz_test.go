package explain

import (
	"context"
	"net/http"
	"testing"
)

// FuzzExplain sends arbitrary requests (method, path, host, a header, port) through the
// bookinfo mesh with a waypoint and an L7 policy: Explain answers an error or a report
// whose verdict agrees with Allowed, and never panics.
func FuzzExplain(f *testing.F) {
	f.Add("POST", "/admin", "", "end-user", "jason", int32(0), true)
	f.Add("GET", "/?a=1&a=2", "reviews:8080", "Authorization", "Bearer x.y.z", int32(8080), false)
	f.Add("", "", "[::1", ":authority", "", int32(-1), true)
	c := loadCluster(f, bookinfo, waypointNamespace, denyAdminPostL7, everythingToV2)
	f.Fuzz(func(t *testing.T, method, path, host, header, value string, port int32, service bool) {
		dst := Target{Kind: TargetPod, Namespace: "bookinfo", Name: "reviews-v1", Port: port}
		if service {
			dst = Target{Kind: TargetService, Namespace: "bookinfo", Name: "reviews", Port: port}
		}
		req := Request{Source: clientPod, Destination: dst, Method: method, Path: path, Host: host,
			Header: http.Header{header: {value}}}
		report, err := Explain(context.Background(), c, req, Options{})
		if err != nil {
			return
		}
		if report.Allowed != (report.Verdict == "ALLOWED") || report.Verdict == "" {
			t.Fatalf("allowed %v with verdict %q", report.Allowed, report.Verdict)
		}
		if len(report.Hops) == 0 || report.Hops[0].Role != RoleSource {
			t.Fatalf("hops %+v: want the source first", report.Hops)
		}
	})
}

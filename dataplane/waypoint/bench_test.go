package waypoint_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/ambientmesh/ambient-operator/dataplane/hbone"
	"github.com/ambientmesh/ambient-operator/dataplane/waypoint"
	wt "github.com/ambientmesh/ambient-operator/dataplane/waypoint/waypointtest"
)

// BenchmarkProxyHTTP1 is the in-process counterpart of make bench-waypoint: 1 KB
// HTTP/1.1 POSTs on 16 keep-alive connections, answered by a backend that echoes the
// body (as fortio's server does). The listener has the RBAC filter of that benchmark
// (deny paths under /admin) before the router. Sub-benchmarks:
//
//   - waypoint: client → HBONE → waypoint (filters, router, JSON access log) → HBONE →
//     the backend's ztunnel stand-in → backend;
//   - waypoint-transport: the same with every upstream request sent by http.Transport,
//     as before the waypoint had its own HTTP/1.1 client (h1Client);
//   - direct: the same client and backend without the waypoint (client → HBONE → the
//     backend's ztunnel stand-in → backend), the L4 path.
//
// Everything runs in this process, so cpu-µs/op (the process's user + system CPU time
// per request, from getrusage) counts the client and the backend too: the waypoint's own
// CPU per request is a waypoint figure minus the direct one. allocs/op and B/op count
// every part likewise. Run with:
//
//	go test ./dataplane/waypoint -run '^$' -bench ProxyHTTP1 -count 5
func BenchmarkProxyHTTP1(b *testing.B) {
	m := wt.Start(b, wt.Options{AccessLog: io.Discard})
	backend := m.Backend("echo", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body) // all of it first: HTTP/1 is not full duplex
		_, _ = w.Write(body)
	}))
	pushReviews(b, m, []*hcmv3.HttpFilter{denyAdmin()}, []*routev3.Route{route("default", prefix("/"), toCluster("echo"))},
		upstreams(map[string][]*wt.Backend{"echo": {backend}})...)

	for _, path := range []struct {
		name          string
		transportOnly bool
	}{{"waypoint", false}, {"waypoint-transport", true}} {
		b.Run(path.name, func(b *testing.B) {
			waypoint.SetTransportOnly(m.Waypoint, path.transportOnly)
			defer waypoint.SetTransportOnly(m.Waypoint, false)
			c := m.Client(wt.ClientID, netip.Addr{}, false)
			keepConnections(c)
			runPosts(b, c, "http://"+reviewsVIP.String()+"/echo")
		})
	}
	b.Run("direct", func(b *testing.B) {
		pool, err := hbone.NewPool(hbone.PoolConfig{Certs: m.Certs, Roots: m.Roots})
		if err != nil {
			b.Fatal(err)
		}
		defer pool.Close()
		c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return pool.Dial(ctx, hbone.DialRequest{Source: wt.ClientID, Peer: backend.ID, Target: backend.App})
		}}}
		keepConnections(c)
		runPosts(b, c, "http://"+backend.App.String()+"/echo")
	})
}

// denyAdmin is an RBAC filter that denies paths under /admin to anyone.
func denyAdmin() *hcmv3.HttpFilter {
	return httpRBAC(rbacv3.RBAC_DENY, "ns[shop]-policy[deny-admin]-rule[0]", &rbacv3.Policy{
		Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{
			Rule: &matcherv3.PathMatcher_Path{Path: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "/admin"}}}}}}},
		Principals: anyone,
	})
}

// benchConnections is the number of keep-alive connections (fortio's -c 16).
const benchConnections = 16

// benchBody is the 1 KB request body.
var benchBody = bytes.Repeat([]byte("x"), 1024)

// keepConnections lets client c keep all its connections open between requests
// (http.Transport keeps two idle connections per host by default).
func keepConnections(c *http.Client) {
	tr := c.Transport.(*http.Transport)
	tr.MaxIdleConnsPerHost = benchConnections
	tr.DisableCompression = true
}

// runPosts sends b.N POSTs of benchBody to url with client c from benchConnections
// goroutines, each on its own keep-alive connection, and reports the process's CPU time
// per request.
func runPosts(b *testing.B, c *http.Client, url string) {
	post := func() error {
		resp, err := c.Post(url, "application/octet-stream", bytes.NewReader(benchBody))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		n, err := io.Copy(io.Discard, resp.Body)
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK || n != int64(len(benchBody)) {
			return fmt.Errorf("got %d with %d bytes, want 200 with the %d bytes sent", resp.StatusCode, n, len(benchBody))
		}
		return nil
	}
	// Open every connection (and the waypoint's upstream ones) before measuring.
	var wg sync.WaitGroup
	errs := make(chan error, benchConnections)
	for range benchConnections {
		wg.Go(func() {
			if err := post(); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}

	var remaining atomic.Int64
	remaining.Store(int64(b.N))
	errs = make(chan error, benchConnections)
	before := cpuTime(b)
	b.ReportAllocs()
	b.ResetTimer()
	for range benchConnections {
		wg.Go(func() {
			for remaining.Add(-1) >= 0 {
				if err := post(); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	b.ReportMetric(float64((cpuTime(b)-before).Microseconds())/float64(b.N), "cpu-µs/op")
}

// cpuTime is the user + system CPU time this process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

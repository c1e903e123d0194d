package waypoint_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/ambientmesh/ambient-operator/dataplane/waypoint"
	wt "github.com/ambientmesh/ambient-operator/dataplane/waypoint/waypointtest"
)

// The waypoint sends the HTTP/1.1 requests h1Client carries without
// httputil.ReverseProxy; the transport-only switch sends them through ReverseProxy and
// http.Transport as before. Both must look the same to the client and to the endpoint:
// hop-by-hop headers (and those Connection names) dropped both ways, "TE: trailers"
// kept, the client's Forwarded and X-Forwarded-* dropped, no User-Agent added, an
// unparsable query cleaned, trailers (announced or not) passed on, HTTP/1.0 keep-alive,
// and an unrequested 101 refused.
func TestDirectProxyMatchesReverseProxy(t *testing.T) {
	m := wt.Start(t, wt.Options{})
	seen := make(chan string, 1)
	b := m.Backend("reviews-v1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		seen <- requestDump(r, body)
		answerLikeAnApp(w, r)
	}))
	pushReviews(t, m, nil, []*routev3.Route{route("default", prefix("/"), toCluster("v1"))}, wt.Cluster("v1"), wt.Endpoints("v1", b))
	dial := m.Dialer(wt.ClientID, netip.Addr{})

	for _, tc := range []struct{ name, request string }{
		{"hop-by-hop and forwarding headers", "POST /items?a=1;b=2&c=%zz HTTP/1.1\r\nHost: reviews\r\nContent-Length: 5\r\n" +
			"Connection: keep-alive, X-Drop\r\nX-Drop: 1\r\nKeep-Alive: 300\r\nTE: trailers, deflate\r\nProxy-Authorization: Basic eA==\r\n" +
			"Forwarded: for=192.0.2.1\r\nX-Forwarded-For: 192.0.2.1\r\nX-Forwarded-Host: evil\r\nX-Forwarded-Proto: https\r\n\r\nhello"},
		{"user agent and query kept", "GET /items?a=1&b=%41 HTTP/1.1\r\nHost: reviews\r\nUser-Agent: curl/8.5\r\nTE: deflate\r\n\r\n"},
		{"trailers", "GET /trailers HTTP/1.1\r\nHost: reviews\r\n\r\n"},
		{"HTTP/1.0 keep-alive", "GET /items HTTP/1.0\r\nHost: reviews\r\nConnection: keep-alive\r\n\r\n"},
		{"HTTP/1.0 without Host", "GET /items HTTP/1.0\r\n\r\n"},
		{"client closes", "GET /items HTTP/1.1\r\nHost: reviews\r\nConnection: close\r\n\r\n"},
		{"unrequested upgrade", "GET /switch HTTP/1.1\r\nHost: reviews\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got [2]string
			for i, transportOnly := range []bool{true, false} {
				waypoint.SetTransportOnly(m.Waypoint, transportOnly)
				got[i] = exchangeRaw(t, dial, tc.request, seen)
			}
			waypoint.SetTransportOnly(m.Waypoint, false)
			if got[0] != got[1] {
				t.Errorf("through ReverseProxy:\n%s\n\ndirect:\n%s", got[0], got[1])
			}
			t.Logf("%s", got[1])
		})
	}
	// What both must do, so that they cannot agree on something wrong.
	waypoint.SetTransportOnly(m.Waypoint, false)
	first := exchangeRaw(t, dial, "POST /items?a=1;b=2&c=%zz HTTP/1.1\r\nHost: reviews\r\nContent-Length: 2\r\nConnection: X-Drop\r\n"+
		"X-Drop: 1\r\nTE: trailers\r\nForwarded: for=192.0.2.1\r\nX-Forwarded-For: 192.0.2.1\r\n\r\nhi", seen)
	for _, want := range []string{"endpoint got: POST /items HTTP/1.1", `Te: ["trailers"]`, `X-Kept: ["1"]`, "body hi"} {
		if !strings.Contains(first, want) {
			t.Errorf("missing %q in\n%s", want, first)
		}
	}
	for _, unwanted := range []string{"X-Drop", "Forwarded", "User-Agent", "X-Hop", "Keep-Alive", "Proxy-Authenticate"} {
		if strings.Contains(first, unwanted) {
			t.Errorf("%q crossed the waypoint:\n%s", unwanted, first)
		}
	}
}

// answerLikeAnApp answers with hop-by-hop headers the waypoint must drop, trailers on
// /trailers and an unrequested 101 on /switch.
func answerLikeAnApp(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/switch" {
		c, rw, err := http.NewResponseController(w).Hijack()
		if err == nil {
			_, _ = rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: other\r\n\r\n")
			_ = rw.Flush()
			c.Close()
		}
		return
	}
	h := w.Header()
	h.Set("Connection", "X-Hop")
	h.Set("X-Hop", "1")
	h.Set("Keep-Alive", "timeout=5")
	h.Set("Proxy-Authenticate", "Basic")
	h.Set("X-Kept", "1")
	if r.URL.Path == "/trailers" {
		h.Set("Trailer", "X-Checksum")
		_, _ = io.WriteString(w, "body with trailers")
		h.Set("X-Checksum", "c0ffee")
		h.Set(http.TrailerPrefix+"X-Late", "unannounced")
		return
	}
	_, _ = io.WriteString(w, "ok")
}

// requestDump is the request as the endpoint got it, headers sorted; the waypoint's
// new trace and request ids differ from request to request.
func requestDump(r *http.Request, body []byte) string {
	for _, k := range []string{"Traceparent", "X-Request-Id"} {
		if r.Header.Get(k) != "" {
			r.Header.Set(k, "(new)")
		}
	}
	return fmt.Sprintf("endpoint got: %s %s %s\nHost: %s\n%sbody %s", r.Method, r.RequestURI, r.Proto, r.Host, headerDump(r.Header), body)
}

// exchangeRaw sends request as written on a new stream through the waypoint and returns
// what the endpoint got and what the client got back.
func exchangeRaw(t *testing.T, dial func(context.Context, netip.AddrPort) (net.Conn, error), request string, seen chan string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := dial(ctx, reviewsVIP)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, request); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	resp.Header.Del("Date")
	var endpoint string
	select {
	case endpoint = <-seen:
	case <-ctx.Done():
		t.Fatal("the endpoint got no request")
	}
	return fmt.Sprintf("%s\nclient got: %s\n%sbody %s\ntrailers:\n%s", endpoint, resp.Status, headerDump(resp.Header), body, headerDump(resp.Trailer))
}

func headerDump(h http.Header) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(h)) {
		fmt.Fprintf(&b, "%s: %q\n", k, h[k])
	}
	return b.String()
}

// An answer of unknown length is passed on as it comes, both ways: the endpoint sends
// its second part only once the client has read the first.
func TestHTTP1StreamedAnswerFlowsThroughBothProxies(t *testing.T) {
	m := wt.Start(t, wt.Options{})
	clientGotFirst := make(chan struct{}, 1)
	b := m.Backend("reviews-v1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "first\n")
		http.NewResponseController(w).Flush()
		select {
		case <-clientGotFirst:
			_, _ = io.WriteString(w, "second\n")
		case <-time.After(5 * time.Second):
			_, _ = io.WriteString(w, "timed out waiting for the client\n")
		}
	}))
	pushReviews(t, m, nil, []*routev3.Route{route("default", prefix("/"), toCluster("v1"))}, wt.Cluster("v1"), wt.Endpoints("v1", b))
	client := m.Client(wt.ClientID, netip.Addr{}, false)
	for _, transportOnly := range []bool{true, false} {
		waypoint.SetTransportOnly(m.Waypoint, transportOnly)
		resp, err := client.Get("http://" + reviewsVIP.String() + "/stream")
		if err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(resp.Body)
		first, err := br.ReadString('\n')
		if err != nil || first != "first\n" {
			t.Fatalf("transport only %v: first part %q, %v", transportOnly, first, err)
		}
		select {
		case clientGotFirst <- struct{}{}:
		default: // the endpoint stopped waiting (and the test fails below)
		}
		rest, err := io.ReadAll(br)
		resp.Body.Close()
		if err != nil || string(rest) != "second\n" {
			t.Errorf("transport only %v: then %q, %v; want the second part", transportOnly, rest, err)
		}
	}
	waypoint.SetTransportOnly(m.Waypoint, false)
}

package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/types"

	"github.com/ambientmesh/ambient-operator/internal/explain"
)

func TestWhyRequest(t *testing.T) {
	defaults := requestFlags{method: "GET", path: "/"}
	withFlags := func(f func(*requestFlags)) requestFlags {
		r := defaults
		f(&r)
		return r
	}
	cases := []struct {
		name     string
		src, dst string
		flags    requestFlags
		want     explain.Request
		err      string
	}{{
		name: "pod to a Service port, namespace from -n",
		src:  "client", dst: "svc/reviews:8080", flags: defaults,
		want: explain.Request{Source: types.NamespacedName{Namespace: "bookinfo", Name: "client"},
			Destination: explain.Target{Kind: explain.TargetService, Namespace: "bookinfo", Name: "reviews", Port: 8080},
			Method:      "GET", Path: "/", Header: http.Header{}},
	}, {
		name: "qualified names, service/ prefix, no port",
		src:  "legacy/curl", dst: "service/shop/cart", flags: defaults,
		want: explain.Request{Source: types.NamespacedName{Namespace: "legacy", Name: "curl"},
			Destination: explain.Target{Kind: explain.TargetService, Namespace: "shop", Name: "cart"},
			Method:      "GET", Path: "/", Header: http.Header{}},
	}, {
		name: "a pod destination with a port; headers, Host and token",
		src:  "client", dst: "shop/cart-0:9080",
		flags: withFlags(func(f *requestFlags) {
			f.method, f.path, f.token = "POST", "/admin?x=1", "abc"
			f.headers = []string{"end-user: jason", "Host: cart.example", "X-A:b"}
		}),
		want: explain.Request{Source: types.NamespacedName{Namespace: "bookinfo", Name: "client"},
			Destination: explain.Target{Kind: explain.TargetPod, Namespace: "shop", Name: "cart-0", Port: 9080},
			Method:      "POST", Path: "/admin?x=1", Host: "cart.example",
			Header: http.Header{"End-User": {"jason"}, "X-A": {"b"}, "Authorization": {"Bearer abc"}}},
	}, {
		name: "--host wins over a Host header",
		src:  "client", dst: "svc/reviews",
		flags: withFlags(func(f *requestFlags) { f.host, f.headers = "flag.example", []string{"Host: header.example"} }),
		want: explain.Request{Source: types.NamespacedName{Namespace: "bookinfo", Name: "client"},
			Destination: explain.Target{Kind: explain.TargetService, Namespace: "bookinfo", Name: "reviews"},
			Method:      "GET", Path: "/", Host: "flag.example", Header: http.Header{}},
	},
		{name: "port zero", src: "client", dst: "svc/reviews:0", flags: defaults,
			err: `destination "svc/reviews:0": port "0" is not a number in 1-65535`},
		{name: "port too big", src: "client", dst: "reviews-0:70000", flags: defaults,
			err: `destination "reviews-0:70000": port "70000" is not a number in 1-65535`},
		{name: "empty name", src: "client", dst: "svc/bookinfo/", flags: defaults,
			err: `destination "svc/bookinfo/": name "": a lowercase RFC 1123 subdomain`},
		{name: "too many segments", src: "a/b/c", dst: "svc/reviews", flags: defaults,
			err: `source "a/b/c": name "b/c": a lowercase RFC 1123 subdomain`},
		{name: "a namespace that is no DNS label", src: "client", dst: "svc/Shop/cart", flags: defaults,
			err: `destination "svc/Shop/cart": namespace "Shop": a lowercase RFC 1123 label`},
		{name: "a service name that is no DNS label", src: "client", dst: "svc/rev.iews", flags: defaults,
			err: `destination "svc/rev.iews": service name "rev.iews": a DNS-1035 label`},
		{name: "a header without a colon", src: "client", dst: "svc/reviews",
			flags: withFlags(func(f *requestFlags) { f.headers = []string{"end-user jason"} }),
			err:   `-H "end-user jason": want 'Name: value'`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := whyRequest(tc.src, tc.dst, "bookinfo", tc.flags)
			if tc.err != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tc.err) {
					t.Fatalf("error %v\nwant  %s...", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestWhyNeedsSourceAndDestination(t *testing.T) {
	err := run([]string{"why", "-n", "bookinfo", "client"}, &bytes.Buffer{})
	if err == nil || !strings.HasPrefix(err.Error(), whyUsage) {
		t.Fatalf("error %v, want the usage", err)
	}
}

var deniedReport = &explain.Report{
	Source:      "pod bookinfo/client (10.0.1.5, node n1) spiffe://cluster.local/ns/bookinfo/sa/client",
	Destination: "service bookinfo/reviews port 8080 (10.96.0.10:8080)",
	Request:     "POST /admin, Host reviews.bookinfo.svc.cluster.local:8080",
	Hops: []explain.Hop{
		{Proxy: "ztunnel", Role: "source", At: "node n1", Pod: "bookinfo/client", Layer: "L4", Decision: "outbound",
			Detail: "HBONE to waypoint pod bookinfo/waypoint-0 (10.0.2.7:15008) for 10.96.0.10:8080"},
		{Proxy: "waypoint", Role: "waypoint", At: "bookinfo/waypoint", Pod: "bookinfo/waypoint-0", Layer: "L7", Decision: "denied",
			Policy: "bookinfo/deny-admin-post", Rule: "rules[0]", Detail: "denied by MeshPolicy bookinfo/deny-admin-post rules[0] (DENY)"},
	},
	Verdict: "DENIED: MeshPolicy bookinfo/deny-admin-post (L7) at waypoint bookinfo/waypoint",
}

func TestWhyTable(t *testing.T) {
	var out bytes.Buffer
	if err := writeWhy(&out, "table", deniedReport); err != nil {
		t.Fatal(err)
	}
	want := `SOURCE:      pod bookinfo/client (10.0.1.5, node n1) spiffe://cluster.local/ns/bookinfo/sa/client
DESTINATION: service bookinfo/reviews port 8080 (10.96.0.10:8080)
REQUEST:     POST /admin, Host reviews.bookinfo.svc.cluster.local:8080

HOP   PROXY      ROLE       AT                  POD                   LAYER   DECISION   POLICY                              DETAIL
1     ztunnel    source     node n1             bookinfo/client       L4      outbound   <none>                              HBONE to waypoint pod bookinfo/waypoint-0 (10.0.2.7:15008) for 10.96.0.10:8080
2     waypoint   waypoint   bookinfo/waypoint   bookinfo/waypoint-0   L7      denied     bookinfo/deny-admin-post rules[0]   denied by MeshPolicy bookinfo/deny-admin-post rules[0] (DENY)

DENIED: MeshPolicy bookinfo/deny-admin-post (L7) at waypoint bookinfo/waypoint
`
	if out.String() != want {
		t.Fatalf("got:\n%s\nwant:\n%s", out.String(), want)
	}
}

func TestWhyJSON(t *testing.T) {
	var out bytes.Buffer
	if err := writeWhy(&out, "json", deniedReport); err != nil {
		t.Fatal(err)
	}
	var got explain.Report
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&got, deniedReport) {
		t.Fatalf("round trip:\n%+v\nwant\n%+v", got, *deniedReport)
	}
	if err := writeWhy(&out, "xml", deniedReport); err == nil {
		t.Fatal("-o xml accepted")
	}
}

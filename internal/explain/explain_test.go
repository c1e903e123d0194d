package explain

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/ambientmesh/ambient-operator/controlplane/xds/translate"
	cpwaypoint "github.com/ambientmesh/ambient-operator/controlplane/xds/waypoint"
	"github.com/ambientmesh/ambient-operator/internal/meshscheme"
)

// bookinfo: a client on node n1; Service reviews (8080 → 9080) over reviews-v1 (n2) and
// reviews-v2 (n1), and Service reviews-v2 over v2 alone; Waypoint "waypoint" with its
// Service and pod (n2), used when the namespace is labelled so; a pod outside the mesh.
const bookinfo = `
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: bookinfo, labels: {app: client}}
spec: {serviceAccountName: client, nodeName: n1, containers: [{name: curl, image: curl}]}
status: {phase: Running, podIP: 10.0.1.5, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v1, namespace: bookinfo, labels: {app: reviews, version: v1}}
spec: {serviceAccountName: reviews, nodeName: n2, containers: [{name: app, image: app, ports: [{name: http, containerPort: 9080}]}]}
status: {phase: Running, podIP: 10.0.2.11, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v2, namespace: bookinfo, labels: {app: reviews, version: v2}}
spec: {serviceAccountName: reviews, nodeName: n1, containers: [{name: app, image: app, ports: [{name: http, containerPort: 9080}]}]}
status: {phase: Running, podIP: 10.0.1.12, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: bookinfo}
spec: {selector: {app: reviews}, clusterIP: 10.96.0.10, ports: [{name: http, port: 8080, targetPort: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: reviews-v2, namespace: bookinfo}
spec: {selector: {app: reviews, version: v2}, clusterIP: 10.96.0.12, ports: [{name: http, port: 8080, targetPort: 9080}]}
---
apiVersion: mesh.ambientmesh.dev/v1alpha1
kind: Waypoint
metadata: {name: waypoint, namespace: bookinfo}
---
apiVersion: v1
kind: Service
metadata: {name: waypoint, namespace: bookinfo, labels: {ambientmesh.dev/waypoint: waypoint}}
spec: {selector: {ambientmesh.dev/waypoint: waypoint}, clusterIP: 10.96.0.99, ports: [{name: mesh, port: 15008}]}
---
apiVersion: v1
kind: Pod
metadata: {name: waypoint-0, namespace: bookinfo, labels: {ambientmesh.dev/waypoint: waypoint}}
spec: {serviceAccountName: waypoint, nodeName: n2, containers: [{name: proxy, image: waypoint}]}
status: {phase: Running, podIP: 10.0.2.7, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: legacy}
---
apiVersion: v1
kind: Pod
metadata: {name: outsider, namespace: legacy}
spec: {nodeName: n1, containers: [{name: curl, image: curl}]}
status: {phase: Running, podIP: 10.0.1.99, conditions: [{type: Ready, status: "True"}]}
`

const (
	ambientNamespace = `
apiVersion: v1
kind: Namespace
metadata: {name: bookinfo, labels: {ambientmesh.dev/dataplane-mode: ambient}}
`
	waypointNamespace = `
apiVersion: v1
kind: Namespace
metadata: {name: bookinfo, labels: {ambientmesh.dev/dataplane-mode: ambient, ambientmesh.dev/use-waypoint: waypoint}}
`
	denyClientL4 = `
apiVersion: mesh.ambientmesh.dev/v1alpha1
kind: MeshPolicy
metadata: {name: deny-client, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: reviews}}
  action: DENY
  rules: [{from: [{serviceAccounts: [bookinfo/client]}]}]
`
	denyAdminPostL7 = `
apiVersion: mesh.ambientmesh.dev/v1alpha1
kind: MeshPolicy
metadata: {name: deny-admin-post, namespace: bookinfo}
spec:
  targetRefs: [{kind: Service, name: reviews}]
  action: DENY
  rules: [{to: [{methods: [POST], paths: [{exact: /admin}]}]}]
`
	allowProductpageL4 = `
apiVersion: mesh.ambientmesh.dev/v1alpha1
kind: MeshPolicy
metadata: {name: allow-productpage, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: reviews}}
  rules: [{from: [{serviceAccounts: [bookinfo/productpage]}]}]
`
	strictMTLS = `
apiVersion: mesh.ambientmesh.dev/v1alpha1
kind: MeshPolicy
metadata: {name: strict, namespace: bookinfo}
spec: {mtls: {mode: STRICT}}
`
	reviewsWithoutWaypoint = `
apiVersion: v1
kind: Service
metadata: {name: reviews-l4, namespace: bookinfo, labels: {ambientmesh.dev/use-waypoint: none}}
spec: {selector: {app: reviews}, clusterIP: 10.96.0.11, ports: [{name: http, port: 8080, targetPort: 9080}]}
`
	everythingToV2 = `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: to-v2, namespace: bookinfo}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews, port: 8080}]
  rules: [{backendRefs: [{name: reviews-v2, port: 8080}]}]
`
	splitWithMissingBackend = `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: split, namespace: bookinfo}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews, port: 8080}]
  rules: [{backendRefs: [{name: reviews-v2, port: 8080, weight: 50}, {name: ratings, port: 8080, weight: 50}]}]
`
	unreadyRatings = `
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: bookinfo}
spec: {selector: {app: ratings}, clusterIP: 10.96.0.20, ports: [{name: http, port: 8080, targetPort: 9080}]}
---
apiVersion: v1
kind: Pod
metadata: {name: ratings-v1, namespace: bookinfo, labels: {app: ratings}}
spec: {serviceAccountName: ratings, nodeName: n2, containers: [{name: app, image: app}]}
status: {phase: Running, podIP: 10.0.2.20, conditions: [{type: Ready, status: "False"}]}
`
	database = `
apiVersion: v1
kind: Service
metadata: {name: db, namespace: bookinfo}
spec: {selector: {app: db}, clusterIP: 10.96.0.30, ports: [{name: tcp-pg, port: 5432}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: bookinfo, labels: {app: db}}
spec: {serviceAccountName: db, nodeName: n2, containers: [{name: pg, image: pg}]}
status: {phase: Running, podIP: 10.0.2.30, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: mesh.ambientmesh.dev/v1alpha1
kind: MeshPolicy
metadata: {name: db-no-client, namespace: bookinfo}
spec:
  targetRefs: [{kind: Service, name: db}]
  action: DENY
  rules: [{from: [{serviceAccounts: [bookinfo/client]}]}]
`
)

var (
	clientPod = types.NamespacedName{Namespace: "bookinfo", Name: "client"}
	outsider  = types.NamespacedName{Namespace: "legacy", Name: "outsider"}
	reviews   = Target{Kind: TargetService, Namespace: "bookinfo", Name: "reviews"}
)

func TestExplain(t *testing.T) {
	cases := []struct {
		name    string
		objects []string
		req     Request
		// hops as "proxy role pod decision [policy [rule]]"
		hops    []string
		verdict string
		// details holds text that some hop's detail must contain.
		details []string
	}{{
		name:    "no policy: the client's ztunnel goes to each endpoint directly",
		objects: []string{ambientNamespace},
		req:     Request{Source: clientPod, Destination: reviews},
		hops: []string{
			"ztunnel source bookinfo/client outbound",
			"ztunnel destination bookinfo/reviews-v1 allowed",
			"ztunnel destination bookinfo/reviews-v2 allowed",
		},
		verdict: "ALLOWED",
		details: []string{"load-balances over 2 endpoints", "HBONE to 10.0.2.11:15008 (spiffe://cluster.local/ns/bookinfo/sa/reviews) for 10.0.2.11:9080",
			"allowed: no ALLOW policy applies; as seen by the destination ztunnel: client 10.0.1.5, spiffe://cluster.local/ns/bookinfo/sa/client, port 9080"},
	}, {
		name:    "L4 DENY of the client's service account at the destination",
		objects: []string{ambientNamespace, denyClientL4},
		req:     Request{Source: clientPod, Destination: reviews},
		hops: []string{
			"ztunnel source bookinfo/client outbound",
			"ztunnel destination bookinfo/reviews-v1 denied bookinfo/deny-client",
			"ztunnel destination bookinfo/reviews-v2 denied bookinfo/deny-client",
		},
		verdict: "DENIED: MeshPolicy bookinfo/deny-client (L4) at the ztunnel on node n2, pod bookinfo/reviews-v1",
	}, {
		name:    "L7 DENY of POST /admin at the waypoint",
		objects: []string{waypointNamespace, denyAdminPostL7},
		req:     Request{Source: clientPod, Destination: reviews, Method: "POST", Path: "/admin"},
		hops: []string{
			"ztunnel source bookinfo/client outbound",
			"waypoint waypoint bookinfo/waypoint-0 denied bookinfo/deny-admin-post rules[0]",
		},
		verdict: "DENIED: MeshPolicy bookinfo/deny-admin-post (L7) at waypoint bookinfo/waypoint",
		details: []string{"HBONE to waypoint pod bookinfo/waypoint-0 (10.0.2.7:15008) for 10.96.0.10:8080",
			"denied by MeshPolicy bookinfo/deny-admin-post rules[0] (DENY); principal spiffe://cluster.local/ns/bookinfo/sa/client from 10.0.1.5"},
	}, {
		name:    "GET / passes the waypoint and each destination sees the original client",
		objects: []string{waypointNamespace, denyAdminPostL7},
		req:     Request{Source: clientPod, Destination: reviews, Method: "GET", Path: "/"},
		hops: []string{
			"ztunnel source bookinfo/client outbound",
			"waypoint waypoint bookinfo/waypoint-0 allowed",
			"ztunnel destination bookinfo/reviews-v2 allowed",
			"ztunnel destination bookinfo/reviews-v1 allowed",
		},
		verdict: "ALLOWED",
		details: []string{"no DENY rule matched and no ALLOW policy applies",
			"route default → outbound|8080||reviews.bookinfo.svc.cluster.local",
			"as seen by the destination ztunnel: client 10.0.1.5, spiffe://cluster.local/ns/bookinfo/sa/client (relayed by waypoint bookinfo/waypoint with Forwarded: for=10.0.1.5), port 9080"},
	}, {
		name:    "L4 DENY behind the waypoint applies to the original client",
		objects: []string{waypointNamespace, denyClientL4},
		req:     Request{Source: clientPod, Destination: reviews},
		hops: []string{
			"ztunnel source bookinfo/client outbound",
			"waypoint waypoint bookinfo/waypoint-0 allowed",
			"ztunnel destination bookinfo/reviews-v2 denied bookinfo/deny-client",
			"ztunnel destination bookinfo/reviews-v1 denied bookinfo/deny-client",
		},
		verdict: "DENIED: MeshPolicy bookinfo/deny-client (L4) at the ztunnel on node n1, pod bookinfo/reviews-v2",
		details: []string{"no policy applies here"},
	}, {
		name:    "an L4 ALLOW that does not name the client",
		objects: []string{ambientNamespace, allowProductpageL4},
		req:     Request{Source: clientPod, Destination: reviews},
		hops: []string{
			"ztunnel source bookinfo/client outbound",
			"ztunnel destination bookinfo/reviews-v1 denied",
			"ztunnel destination bookinfo/reviews-v2 denied",
		},
		verdict: "DENIED: none of the 1 ALLOW policies matched (L4) at the ztunnel on node n2, pod bookinfo/reviews-v1",
	}, {
		name:    "a Service labelled use-waypoint=none skips the namespace's waypoint",
		objects: []string{waypointNamespace, denyAdminPostL7, reviewsWithoutWaypoint},
		req: Request{Source: clientPod, Destination: Target{Kind: TargetService, Namespace: "bookinfo", Name: "reviews-l4", Port: 8080},
			Method: "POST", Path: "/admin"},
		hops: []string{
			"ztunnel source bookinfo/client outbound",
			"ztunnel destination bookinfo/reviews-v1 allowed",
			"ztunnel destination bookinfo/reviews-v2 allowed",
		},
		verdict: "ALLOWED",
	}, {
		name:    "an HTTPRoute sends every request to reviews-v2",
		objects: []string{waypointNamespace, everythingToV2},
		req:     Request{Source: clientPod, Destination: reviews},
		hops: []string{
			"ztunnel source bookinfo/client outbound",
			"waypoint waypoint bookinfo/waypoint-0 allowed",
			"ztunnel destination bookinfo/reviews-v2 allowed",
		},
		verdict: "ALLOWED",
		details: []string{"→ outbound|8080||reviews-v2.bookinfo.svc.cluster.local"},
	}, {
		name:    "a client outside the mesh bypasses the waypoint",
		objects: []string{waypointNamespace, denyAdminPostL7},
		req:     Request{Source: outsider, Destination: reviews, Method: "POST", Path: "/admin"},
		hops: []string{
			"none source legacy/outsider outbound",
			"ztunnel destination bookinfo/reviews-v1 allowed",
			"ztunnel destination bookinfo/reviews-v2 allowed",
		},
		verdict: "ALLOWED",
		details: []string{"plaintext straight to 10.0.2.11:9080, 10.0.1.12:9080",
			"as seen by the destination ztunnel: client 10.0.1.99, plaintext, no identity, port 9080"},
	}, {
		name:    "STRICT mTLS refuses a client outside the mesh",
		objects: []string{ambientNamespace, strictMTLS},
		req:     Request{Source: outsider, Destination: Target{Kind: TargetPod, Namespace: "bookinfo", Name: "reviews-v1"}},
		hops: []string{
			"none source legacy/outsider outbound",
			"ztunnel destination bookinfo/reviews-v1 denied",
		},
		verdict: "DENIED: plaintext refused: workload requires mTLS (STRICT) (L4) at the ztunnel on node n2, pod bookinfo/reviews-v1",
	}, {
		name:    "a pod addressed directly on its only port",
		objects: []string{ambientNamespace},
		req:     Request{Source: clientPod, Destination: Target{Kind: TargetPod, Namespace: "bookinfo", Name: "reviews-v2"}},
		hops: []string{
			"ztunnel source bookinfo/client outbound",
			"ztunnel destination bookinfo/reviews-v2 allowed",
		},
		verdict: "ALLOWED",
		details: []string{"HBONE to 10.0.1.12:15008 (spiffe://cluster.local/ns/bookinfo/sa/reviews) for 10.0.1.12:9080"},
	}, {
		name:    "a route to a Service that does not exist fails at the waypoint",
		objects: []string{waypointNamespace, strings.ReplaceAll(everythingToV2, "reviews-v2", "ratings")},
		req:     Request{Source: clientPod, Destination: reviews},
		hops: []string{
			"ztunnel source bookinfo/client outbound",
			"waypoint waypoint bookinfo/waypoint-0 failed",
		},
		verdict: "FAILED: no policy applies here; principal spiffe://cluster.local/ns/bookinfo/sa/client from 10.0.1.5; " +
			"route bookinfo/to-v2/0/0 answers 500 itself (at waypoint bookinfo/waypoint)",
	}, {
		name:    "a split with a backend that does not exist fails for its share",
		objects: []string{waypointNamespace, splitWithMissingBackend},
		req:     Request{Source: clientPod, Destination: reviews},
		hops: []string{
			"ztunnel source bookinfo/client outbound",
			"waypoint waypoint bookinfo/waypoint-0 allowed",
			"ztunnel destination bookinfo/reviews-v2 allowed",
		},
		verdict: "PARTLY FAILED: 1 of 2 ways: cluster unresolved|8080||bookinfo/ratings does not exist: " +
			"the waypoint answers 500 (at waypoint bookinfo/waypoint)",
		details: []string{"route bookinfo/split/0/0 → outbound|8080||reviews-v2.bookinfo.svc.cluster.local 50%, unresolved|8080||bookinfo/ratings 50%"},
	}, {
		name:    "a route to a Service whose only pod is not ready",
		objects: []string{waypointNamespace, strings.ReplaceAll(everythingToV2, "reviews-v2", "ratings"), unreadyRatings},
		req:     Request{Source: clientPod, Destination: reviews},
		hops: []string{
			"ztunnel source bookinfo/client outbound",
			"waypoint waypoint bookinfo/waypoint-0 failed",
		},
		verdict: "FAILED: no policy applies here; principal spiffe://cluster.local/ns/bookinfo/sa/client from 10.0.1.5; " +
			"route bookinfo/to-v2/0/0 → outbound|8080||ratings.bookinfo.svc.cluster.local; " +
			"cluster outbound|8080||ratings.bookinfo.svc.cluster.local has no healthy endpoint: the waypoint answers 503 (at waypoint bookinfo/waypoint)",
	}, {
		name:    "a TCP port at the waypoint: network RBAC, then tcp_proxy",
		objects: []string{waypointNamespace, database},
		req:     Request{Source: clientPod, Destination: Target{Kind: TargetService, Namespace: "bookinfo", Name: "db"}},
		hops: []string{
			"ztunnel source bookinfo/client outbound",
			"waypoint waypoint bookinfo/waypoint-0 denied bookinfo/db-no-client rules[0]",
		},
		verdict: "DENIED: MeshPolicy bookinfo/db-no-client (L4) at waypoint bookinfo/waypoint",
	}, {
		name:    "a TCP port at the waypoint allows another client",
		objects: []string{waypointNamespace, strings.ReplaceAll(database, "bookinfo/client", "bookinfo/productpage")},
		req:     Request{Source: clientPod, Destination: Target{Kind: TargetService, Namespace: "bookinfo", Name: "db"}},
		hops: []string{
			"ztunnel source bookinfo/client outbound",
			"waypoint waypoint bookinfo/waypoint-0 allowed",
			"ztunnel destination bookinfo/db-0 allowed",
		},
		verdict: "ALLOWED",
		details: []string{"no DENY rule matched and no ALLOW policy applies; principal spiffe://cluster.local/ns/bookinfo/sa/client from 10.0.1.5; tcp_proxy → outbound|5432||db.bookinfo.svc.cluster.local"},
	}, {
		name: "a backend that does not use the waypoint sees the waypoint, not the client",
		objects: []string{waypointNamespace, strings.ReplaceAll(everythingToV2, "reviews-v2", "ratings"),
			strings.ReplaceAll(strings.ReplaceAll(unreadyRatings, `"False"`, `"True"`), "name: ratings, namespace: bookinfo}", "name: ratings, namespace: bookinfo, labels: {ambientmesh.dev/use-waypoint: none}}")},
		req: Request{Source: clientPod, Destination: reviews},
		hops: []string{
			"ztunnel source bookinfo/client outbound",
			"waypoint waypoint bookinfo/waypoint-0 allowed",
			"ztunnel destination bookinfo/ratings-v1 allowed",
		},
		verdict: "ALLOWED",
		details: []string{"as seen by the destination ztunnel: client 10.0.2.7, spiffe://cluster.local/ns/bookinfo/sa/waypoint " +
			"(waypoint bookinfo/waypoint itself: it is not this pod's waypoint, so its Forwarded header is not trusted), port 9080"},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := loadCluster(t, append([]string{bookinfo}, tc.objects...)...)
			report, err := Explain(context.Background(), c, tc.req, Options{})
			if err != nil {
				t.Fatal(err)
			}
			checkReport(t, report, tc.hops, tc.verdict, tc.details)
		})
	}
}

func checkReport(t *testing.T, report *Report, hops []string, verdict string, details []string) {
	t.Helper()
	var got []string
	for _, h := range report.Hops {
		got = append(got, strings.TrimSpace(strings.Join([]string{h.Proxy, h.Role, h.Pod, h.Decision, h.Policy, h.Rule}, " ")))
	}
	if strings.Join(got, "\n") != strings.Join(hops, "\n") {
		t.Errorf("hops:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(hops, "\n"))
	}
	if report.Verdict != verdict {
		t.Errorf("verdict %q\nwant    %q", report.Verdict, verdict)
	}
	if report.Allowed != (verdict == "ALLOWED") {
		t.Errorf("allowed %v with verdict %q", report.Allowed, report.Verdict)
	}
	var all []string
	for _, h := range report.Hops {
		all = append(all, h.Detail)
	}
	for _, want := range details {
		if !strings.Contains(strings.Join(all, "\n"), want) {
			t.Errorf("no hop detail contains %q; details:\n%s", want, strings.Join(all, "\n"))
		}
	}
}

// TestExplainJWT: a DENY policy with jwt on /private, refusing tokens whose claim group
// is banned; tokens are signed with a key made here and checked by the waypoint's
// authenticator against the policy's inline key set.
func TestExplainJWT(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
	if err != nil {
		t.Fatal(err)
	}
	policy := fmt.Sprintf(`
apiVersion: mesh.ambientmesh.dev/v1alpha1
kind: MeshPolicy
metadata: {name: private, namespace: bookinfo}
spec:
  targetRefs: [{kind: Service, name: reviews}]
  action: DENY
  jwt: {issuer: https://auth.example.com, jwks: '%s'}
  rules: [{to: [{paths: [{prefix: /private}]}], when: [{claim: group, values: [banned]}]}]
`, jwks)
	token := func(group string) http.Header {
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "k1"))
		if err != nil {
			t.Fatal(err)
		}
		raw, err := josejwt.Signed(signer).Claims(map[string]any{
			"iss": "https://auth.example.com", "sub": "alice", "group": group, "exp": time.Now().Add(time.Hour).Unix(),
		}).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return http.Header{"Authorization": {"Bearer " + raw}}
	}
	c := loadCluster(t, bookinfo, waypointNamespace, policy)
	cases := []struct {
		name    string
		path    string
		header  http.Header
		hops    []string
		verdict string
		details []string
	}{{
		name:    "no token where one is required",
		path:    "/private/x",
		hops:    []string{"ztunnel source bookinfo/client outbound", "waypoint waypoint bookinfo/waypoint-0 denied bookinfo/private"},
		verdict: "DENIED: 401 Jwt is missing (L7 jwt_authn, MeshPolicy bookinfo/private) at waypoint bookinfo/waypoint",
		details: []string{"a JWT of issuer https://auth.example.com (MeshPolicy bookinfo/private) is checked here"},
	}, {
		name: "no token where none is required",
		path: "/",
		hops: []string{"ztunnel source bookinfo/client outbound", "waypoint waypoint bookinfo/waypoint-0 allowed",
			"ztunnel destination bookinfo/reviews-v2 allowed", "ztunnel destination bookinfo/reviews-v1 allowed"},
		verdict: "ALLOWED",
		details: []string{"none is required for this request"},
	}, {
		name:   "a valid token",
		path:   "/private/x",
		header: token("staff"),
		hops: []string{"ztunnel source bookinfo/client outbound", "waypoint waypoint bookinfo/waypoint-0 allowed",
			"ztunnel destination bookinfo/reviews-v2 allowed", "ztunnel destination bookinfo/reviews-v1 allowed"},
		verdict: "ALLOWED",
		details: []string{"valid JWT"},
	}, {
		name:    "a valid token with a banned group",
		path:    "/private/x",
		header:  token("banned"),
		hops:    []string{"ztunnel source bookinfo/client outbound", "waypoint waypoint bookinfo/waypoint-0 denied bookinfo/private rules[0]"},
		verdict: "DENIED: MeshPolicy bookinfo/private (L7) at waypoint bookinfo/waypoint",
	}, {
		name:    "a forged token",
		path:    "/private/x",
		header:  http.Header{"Authorization": {"Bearer eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIn0.eyJpc3MiOiJodHRwczovL2F1dGguZXhhbXBsZS5jb20ifQ.AAAA"}},
		hops:    []string{"ztunnel source bookinfo/client outbound", "waypoint waypoint bookinfo/waypoint-0 denied bookinfo/private"},
		verdict: "DENIED: 401 Jwt verification fails (L7 jwt_authn, MeshPolicy bookinfo/private) at waypoint bookinfo/waypoint",
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			report, err := Explain(context.Background(), c, Request{Source: clientPod, Destination: reviews, Path: tc.path, Header: tc.header}, Options{})
			if err != nil {
				t.Fatal(err)
			}
			checkReport(t, report, tc.hops, tc.verdict, tc.details)
		})
	}
}

func TestExplainRefusesWhatItCannotAnswer(t *testing.T) {
	c := loadCluster(t, bookinfo, ambientNamespace, `
apiVersion: v1
kind: Service
metadata: {name: two-ports, namespace: bookinfo}
spec: {selector: {app: reviews}, clusterIP: 10.96.0.13, ports: [{name: http, port: 8080}, {name: grpc, port: 9090}]}
---
apiVersion: v1
kind: Pod
metadata: {name: pending, namespace: bookinfo}
spec: {serviceAccountName: client, containers: [{name: curl, image: curl}]}
status: {phase: Pending}
---
apiVersion: v1
kind: Service
metadata: {name: headless, namespace: bookinfo}
spec: {selector: {app: reviews}, clusterIP: None, ports: [{name: http, port: 8080}]}
`)
	cases := []struct {
		name string
		req  Request
		want string
	}{
		{"unknown source pod", Request{Source: types.NamespacedName{Namespace: "bookinfo", Name: "nope"}, Destination: reviews},
			"source: pod bookinfo/nope not found"},
		{"a source without an IP", Request{Source: types.NamespacedName{Namespace: "bookinfo", Name: "pending"}, Destination: reviews},
			"source: pod bookinfo/pending has no IP yet"},
		{"unknown service", Request{Source: clientPod, Destination: Target{Kind: TargetService, Namespace: "bookinfo", Name: "nope"}},
			"destination: service bookinfo/nope not found"},
		{"several ports and none given", Request{Source: clientPod, Destination: Target{Kind: TargetService, Namespace: "bookinfo", Name: "two-ports"}},
			"destination: service bookinfo/two-ports has ports 8080, 9090: give one (NAME:PORT)"},
		{"a pod without declared ports", Request{Source: clientPod, Destination: Target{Kind: TargetPod, Namespace: "bookinfo", Name: "client"}},
			"destination: pod bookinfo/client declares no TCP port: give one (NAME:PORT)"},
		{"a headless service", Request{Source: clientPod, Destination: Target{Kind: TargetService, Namespace: "bookinfo", Name: "headless"}},
			"destination: service bookinfo/headless has no selector or no cluster IP: not routed by the mesh"},
		{"a relative path", Request{Source: clientPod, Destination: reviews, Path: "admin"},
			`path "admin": want an absolute path, e.g. /api?x=1`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Explain(context.Background(), c, tc.req, Options{})
			if err == nil || err.Error() != tc.want {
				t.Fatalf("error %v\nwant  %s", err, tc.want)
			}
		})
	}
}

func TestVerdict(t *testing.T) {
	denied := outcome{why: "MeshPolicy a/b (L4) at x"}
	failed := outcome{failed: true, why: "no route"}
	allowed := outcome{allowed: true}
	cases := []struct {
		outcomes []outcome
		allowed  bool
		want     string
	}{
		{[]outcome{allowed, allowed}, true, "ALLOWED"},
		{[]outcome{denied, denied}, false, "DENIED: MeshPolicy a/b (L4) at x"},
		{[]outcome{failed}, false, "FAILED: no route"},
		{[]outcome{allowed, denied, allowed}, false, "PARTLY DENIED: 1 of 3 ways: MeshPolicy a/b (L4) at x"},
		{[]outcome{failed, allowed}, false, "PARTLY FAILED: 1 of 2 ways: no route"},
	}
	for _, tc := range cases {
		allowed, got := verdict(tc.outcomes)
		if allowed != tc.allowed || got != tc.want {
			t.Errorf("verdict = %v %q, want %v %q", allowed, got, tc.allowed, tc.want)
		}
	}
}

// loadCluster decodes multi-document YAML into a Cluster, as ambientctl reads it from the
// apiserver: every pod gets a UID, waypoint Gateways are merged into the Waypoints.
func loadCluster(t testing.TB, docs ...string) *Cluster {
	t.Helper()
	objs, err := meshscheme.DecodeObjects(strings.NewReader(strings.Join(docs, "\n---\n")))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if _, isPod := o.(*corev1.Pod); isPod {
			o.SetUID(types.UID(o.GetNamespace() + "/" + o.GetName()))
		}
	}
	st, err := cpwaypoint.StateOf(objs)
	if err != nil {
		t.Fatal(err)
	}
	return &Cluster{Mesh: translate.Mesh{TrustDomain: "cluster.local", RootNamespace: "ambient-system", ClusterDomain: "cluster.local"}, State: st}
}

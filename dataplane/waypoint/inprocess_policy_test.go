package waypoint_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ambientmesh/ambient-operator/internal/testwait"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"

	"github.com/ambientmesh/ambient-operator/dataplane/hbone"
	wt "github.com/ambientmesh/ambient-operator/dataplane/waypoint/waypointtest"
	"github.com/ambientmesh/ambient-operator/internal/spiffe"
)

// httpRBAC is an HTTP RBAC filter with one policy, named like Istio's.
func httpRBAC(action rbacv3.RBAC_Action, policy string, p *rbacv3.Policy) *hcmv3.HttpFilter {
	return wt.HTTPFilter("envoy.filters.http.rbac", &rbachttpv3.RBAC{Rules: &rbacv3.RBAC{Action: action, Policies: map[string]*rbacv3.Policy{policy: p}}})
}

var anyone = []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Any{Any: true}}}

var anything = []*rbacv3.Permission{{Rule: &rbacv3.Permission_Any{Any: true}}}

func principalIs(id spiffe.ID) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: exact(id.String())}}}
}

func TestRBACDenyThenAllow(t *testing.T) {
	m := wt.Start(t, wt.Options{})
	b := m.Backend("reviews-v1", echo("v1"))
	intruder := m.Identity("other", "intruder")
	denyPostAdmin := httpRBAC(rbacv3.RBAC_DENY, "ns[shop]-policy[no-admin-writes]-rule[0]", &rbacv3.Policy{
		Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{
			{Rule: &rbacv3.Permission_Header{Header: headerIs(":method", http.MethodPost)}},
			{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: &matcherv3.StringMatcher{
				MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "/admin"}}}}}},
		}}}}},
		Principals: anyone,
	})
	allowClient := httpRBAC(rbacv3.RBAC_ALLOW, "ns[shop]-policy[clients]-rule[0]", &rbacv3.Policy{
		Permissions: anything,
		Principals:  []*rbacv3.Principal{principalIs(wt.ClientID)},
	})
	pushReviews(t, m, []*hcmv3.HttpFilter{denyPostAdmin, allowClient}, []*routev3.Route{route("default", prefix("/"), toCluster("v1"))},
		wt.Cluster("v1"), wt.Endpoints("v1", b))
	client, other := m.Client(wt.ClientID, netip.Addr{}, false), m.Client(intruder, netip.Addr{}, false)

	for _, tc := range []struct {
		name   string
		client *http.Client
		method string
		path   string
		want   int
	}{
		{"the client reads /", client, http.MethodGet, "/", http.StatusOK},
		{"the client reads /admin", client, http.MethodGet, "/admin/users", http.StatusOK},
		{"the client writes /admin", client, http.MethodPost, "/admin/users", http.StatusForbidden},
		{"another identity reads /", other, http.MethodGet, "/", http.StatusForbidden},
	} {
		a := send(tc.client, tc.method, tc.path, nil, "{}")
		if a.err != nil || a.status != tc.want {
			t.Errorf("%s: got %d %q (%v), want %d", tc.name, a.status, a.body, a.err, tc.want)
		}
		if tc.want == http.StatusForbidden && a.body != "RBAC: access denied" {
			t.Errorf("%s: body %q, want RBAC: access denied", tc.name, a.body)
		}
	}
	if got := b.Requests.Load(); got != 2 {
		t.Errorf("the backend served %d requests, want only the 2 allowed", got)
	}
	if got := metric(t, m, "ambientmesh_waypoint_rbac_denied_total", nil); got != 2 {
		t.Errorf("ambientmesh_waypoint_rbac_denied_total = %v, want 2", got)
	}
	if got := metric(t, m, "istio_requests_total", map[string]string{"response_code": "403", "response_flags": "RBAC"}); got != 2 {
		t.Errorf("istio_requests_total{response_code=403,response_flags=RBAC} = %v, want 2", got)
	}
}

// issuer signs JWTs with an ES256 key and publishes its JWKS.
type issuer struct {
	t      *testing.T
	name   string
	signer jose.Signer
	jwks   string
}

func newIssuer(t *testing.T, name string) *issuer {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "key-1"))
	if err != nil {
		t.Fatal(err)
	}
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: "key-1", Algorithm: string(jose.ES256), Use: "sig"}}})
	if err != nil {
		t.Fatal(err)
	}
	return &issuer{t: t, name: name, signer: signer, jwks: string(jwks)}
}

// token is a JWT for subject valid until expiry, with the given groups claim.
func (i *issuer) token(subject string, expiry time.Time, groups ...string) string {
	claims := josejwt.Claims{Issuer: i.name, Subject: subject, Audience: josejwt.Audience{"reviews"},
		IssuedAt: josejwt.NewNumericDate(expiry.Add(-time.Hour)), Expiry: josejwt.NewNumericDate(expiry)}
	tok, err := josejwt.Signed(i.signer).Claims(claims).Claims(map[string]any{"groups": groups}).Serialize()
	if err != nil {
		i.t.Fatal(err)
	}
	return tok
}

// filter is a jwt_authn filter with i as its provider (inline JWKS, claims in the
// metadata key "payload"), required on /secure.
func (i *issuer) filter() *hcmv3.HttpFilter {
	return wt.HTTPFilter("envoy.filters.http.jwt_authn", &jwtv3.JwtAuthentication{
		Providers: map[string]*jwtv3.JwtProvider{"origins-0": {
			Issuer:              i.name,
			Audiences:           []string{"reviews"},
			JwksSourceSpecifier: &jwtv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: i.jwks}}},
			PayloadInMetadata:   "payload",
		}},
		Rules: []*jwtv3.RequirementRule{{
			Match:           prefix("/secure"),
			RequirementType: &jwtv3.RequirementRule_Requires{Requires: &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: "origins-0"}}},
		}},
	})
}

func bearer(token string) http.Header { return http.Header{"Authorization": {"Bearer " + token}} }

func TestJWTAuthentication(t *testing.T) {
	m := wt.Start(t, wt.Options{})
	b := m.Backend("reviews-v1", echo("v1"))
	iss := newIssuer(t, "https://auth.example.com")
	pushReviews(t, m, []*hcmv3.HttpFilter{iss.filter()}, []*routev3.Route{route("default", prefix("/"), toCluster("v1"))},
		wt.Cluster("v1"), wt.Endpoints("v1", b))
	client := m.Client(wt.ClientID, netip.Addr{}, false)

	a := get(t, client, "/secure/orders", nil)
	if a.status != http.StatusUnauthorized || a.body != "Jwt is missing" || !strings.HasPrefix(a.header.Get("WWW-Authenticate"), "Bearer realm=") {
		t.Errorf("no token: got %d %q WWW-Authenticate %q, want 401 Jwt is missing with a Bearer challenge", a.status, a.body, a.header.Get("WWW-Authenticate"))
	}
	a = get(t, client, "/secure/orders", bearer(iss.token("alice", time.Now().Add(time.Hour))))
	if a.status != http.StatusOK {
		t.Fatalf("valid token: got %d %q, want 200", a.status, a.body)
	}
	if got := echoOf(t, a).Header.Get("Authorization"); got != "" {
		t.Errorf("the backend saw Authorization %q, want the verified token removed (forward is false)", got)
	}
	a = get(t, client, "/secure/orders", bearer(iss.token("alice", time.Now().Add(-time.Hour))))
	if a.status != http.StatusUnauthorized || a.body != "Jwt is expired" || !strings.Contains(a.header.Get("WWW-Authenticate"), `error="invalid_token"`) {
		t.Errorf("expired token: got %d %q WWW-Authenticate %q, want 401 Jwt is expired, invalid_token", a.status, a.body, a.header.Get("WWW-Authenticate"))
	}
	other := newIssuer(t, "https://auth.example.com") // same issuer name, another key
	if a = get(t, client, "/secure/orders", bearer(other.token("mallory", time.Now().Add(time.Hour)))); a.status != http.StatusUnauthorized {
		t.Errorf("token signed with another key: got %d %q, want 401", a.status, a.body)
	}
	if a = get(t, client, "/public", nil); a.status != http.StatusOK {
		t.Errorf("no token outside /secure: got %d %q, want 200", a.status, a.body)
	}
	if got := metric(t, m, "ambientmesh_waypoint_jwt_failures_total", nil); got != 3 {
		t.Errorf("ambientmesh_waypoint_jwt_failures_total = %v, want 3", got)
	}
}

func TestRBACOnJWTClaims(t *testing.T) {
	m := wt.Start(t, wt.Options{})
	b := m.Backend("reviews-v1", echo("v1"))
	iss := newIssuer(t, "https://auth.example.com")
	groupsHasAdmins := &rbacv3.Principal{Identifier: &rbacv3.Principal_Metadata{Metadata: &matcherv3.MetadataMatcher{
		Filter: "envoy.filters.http.jwt_authn",
		Path: []*matcherv3.MetadataMatcher_PathSegment{
			{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: "payload"}},
			{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: "groups"}},
		},
		Value: &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_ListMatch{ListMatch: &matcherv3.ListMatcher{
			MatchPattern: &matcherv3.ListMatcher_OneOf{OneOf: &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: exact("admins")}}},
		}}},
	}}}
	allowAdmins := httpRBAC(rbacv3.RBAC_ALLOW, "ns[shop]-policy[admins]-rule[0]", &rbacv3.Policy{Permissions: anything, Principals: []*rbacv3.Principal{groupsHasAdmins}})
	pushReviews(t, m, []*hcmv3.HttpFilter{iss.filter(), allowAdmins}, []*routev3.Route{route("default", prefix("/"), toCluster("v1"))},
		wt.Cluster("v1"), wt.Endpoints("v1", b))
	client := m.Client(wt.ClientID, netip.Addr{}, false)

	valid := time.Now().Add(time.Hour)
	if a := get(t, client, "/secure/admin", bearer(iss.token("alice", valid, "dev", "admins"))); a.status != http.StatusOK {
		t.Errorf("token with groups [dev admins]: got %d %q, want 200", a.status, a.body)
	}
	if a := get(t, client, "/secure/admin", bearer(iss.token("bob", valid, "dev"))); a.status != http.StatusForbidden || a.body != "RBAC: access denied" {
		t.Errorf("token with groups [dev]: got %d %q, want 403 RBAC: access denied", a.status, a.body)
	}
	if got := b.Requests.Load(); got != 1 {
		t.Errorf("the backend served %d requests, want 1", got)
	}
}

// tcpEcho copies what it reads back to the writer until the client half-closes.
func tcpEcho(c net.Conn) {
	defer c.Close()
	_, _ = io.Copy(c, c) // the test checks what came back
}

func TestTCPListenerRelaysAndDeniesByPrincipal(t *testing.T) {
	m := wt.Start(t, wt.Options{})
	b := m.TCPBackend("mysql", tcpEcho)
	intruder := m.Identity("other", "intruder")
	mysqlVIP := netip.MustParseAddrPort("127.0.100.2:3306")
	denyIntruder := &listenerv3.Filter{Name: "envoy.filters.network.rbac", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: wt.Any(&rbacnetv3.RBAC{
		StatPrefix: "tcp.",
		Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{
			"ns[shop]-policy[no-intruders]-rule[0]": {Permissions: anything, Principals: []*rbacv3.Principal{principalIs(intruder)}},
		}},
	})}}
	if nacks := m.Push(wt.Cluster("mysql"), wt.Endpoints("mysql", b),
		wt.TCPListener("mysql.shop.svc.cluster.local", mysqlVIP, "mysql", denyIntruder)); len(nacks) > 0 {
		t.Fatalf("NACKed: %v", nacks)
	}
	m.WaitReady()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	c, err := m.Dialer(wt.ClientID, netip.Addr{})(ctx, mysqlVIP)
	if err != nil {
		t.Fatalf("the client's CONNECT: %v", err)
	}
	const msg = "SELECT 1;\n"
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	back, err := io.ReadAll(c)
	c.Close()
	if err != nil || string(back) != msg {
		t.Errorf("echoed %q (%v), want %q back", back, err, msg)
	}

	_, err = m.Dialer(intruder, netip.Addr{})(ctx, mysqlVIP)
	var refused *hbone.StatusError
	if !errors.As(err, &refused) || refused.Code != http.StatusForbidden {
		t.Errorf("the intruder's CONNECT: %v, want 403 refused", err)
	}
	if got := b.Requests.Load(); got != 1 {
		t.Errorf("the backend accepted %d connections, want 1", got)
	}
	testwait.For(t, "the TCP connection's metrics", 5*time.Second, func() bool {
		return metric(t, m, "istio_tcp_connections_closed_total", map[string]string{"source_principal": wt.ClientID.String(), "destination_principal": b.ID.String()}) == 1 &&
			metric(t, m, "istio_tcp_received_bytes_total", nil) == float64(len(msg))
	})
	if got := metric(t, m, "ambientmesh_waypoint_rbac_denied_total", nil); got != 1 {
		t.Errorf("ambientmesh_waypoint_rbac_denied_total = %v, want 1", got)
	}
}

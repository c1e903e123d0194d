package jwt

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	"github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
)

// t0 is the time of the injected clock; the test tokens are issued for it.
var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *fakeClock { return &fakeClock{now: t0} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// testKey is a signing key generated for the tests.
type testKey struct {
	kid     string
	alg     jose.SignatureAlgorithm
	private crypto.Signer
}

func newRSAKey(t testing.TB, kid string) testKey {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return testKey{kid: kid, alg: jose.RS256, private: key}
}

func newECKey(t testing.TB, kid string) testKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return testKey{kid: kid, alg: jose.ES256, private: key}
}

// withKeyID is the same key material published or signed under another kid.
func (k testKey) withKeyID(kid string) testKey {
	k.kid = kid
	return k
}

func (k testKey) publicJWK() jose.JSONWebKey {
	return jose.JSONWebKey{Key: k.private.Public(), KeyID: k.kid, Algorithm: string(k.alg), Use: "sig"}
}

// sign issues a token with these claims, with the key's kid in its header.
func (k testKey) sign(t testing.TB, claims map[string]any) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: k.alg, Key: jose.JSONWebKey{Key: k.private, KeyID: k.kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	token, err := josejwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return token
}

func jwksJSON(t testing.TB, keys ...testKey) string {
	t.Helper()
	set := jose.JSONWebKeySet{}
	for _, k := range keys {
		set.Keys = append(set.Keys, k.publicJWK())
	}
	out, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// claims are valid claims of issuer for audience "api" at t0, changed by the overrides (a nil
// value deletes a claim).
func claims(issuer string, overrides map[string]any) map[string]any {
	c := map[string]any{
		"iss":    issuer,
		"sub":    "alice",
		"aud":    "api",
		"iat":    t0.Unix(),
		"exp":    t0.Add(time.Hour).Unix(),
		"groups": []any{"dev", "ops"},
		"org":    map[string]any{"team": map[string]any{"name": "payments"}},
	}
	for k, v := range overrides {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

func localProvider(issuer, jwks string) *jwtv3.JwtProvider {
	return &jwtv3.JwtProvider{
		Issuer:              issuer,
		JwksSourceSpecifier: &jwtv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: jwks}}},
	}
}

func remoteProvider(issuer, uri string, cacheDuration time.Duration) *jwtv3.JwtProvider {
	return &jwtv3.JwtProvider{
		Issuer: issuer,
		JwksSourceSpecifier: &jwtv3.JwtProvider_RemoteJwks{RemoteJwks: &jwtv3.RemoteJwks{
			HttpUri: &corev3.HttpUri{
				Uri:              uri,
				HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: "outbound|443||issuer.example"}, // ignored
				Timeout:          durationpb.New(2 * time.Second),
			},
			CacheDuration: durationpb.New(cacheDuration),
			AsyncFetch:    &jwtv3.JwksAsyncFetch{FailedRefetchDuration: durationpb.New(20 * time.Millisecond)},
		}},
	}
}

func prefixRule(prefix string, requires *jwtv3.JwtRequirement) *jwtv3.RequirementRule {
	r := &jwtv3.RequirementRule{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}}}
	if requires != nil {
		r.RequirementType = &jwtv3.RequirementRule_Requires{Requires: requires}
	}
	return r
}

func requireProvider(name string) *jwtv3.JwtRequirement {
	return &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: name}}
}

func requireAny(reqs ...*jwtv3.JwtRequirement) *jwtv3.JwtRequirement {
	return &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_RequiresAny{RequiresAny: &jwtv3.JwtRequirementOrList{Requirements: reqs}}}
}

func requireAll(reqs ...*jwtv3.JwtRequirement) *jwtv3.JwtRequirement {
	return &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_RequiresAll{RequiresAll: &jwtv3.JwtRequirementAndList{Requirements: reqs}}}
}

func allowMissing() *jwtv3.JwtRequirement {
	return &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_AllowMissing{AllowMissing: &emptypb.Empty{}}}
}

func allowMissingOrFailed() *jwtv3.JwtRequirement {
	return &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_AllowMissingOrFailed{AllowMissingOrFailed: &emptypb.Empty{}}}
}

func mustRouteMatch(js string) *routev3.RouteMatch {
	m := &routev3.RouteMatch{}
	if err := protojson.Unmarshal([]byte(js), m); err != nil {
		panic(err)
	}
	return m
}

// compile builds an Authenticator from a configuration that must pass Envoy's own validation.
func compile(t testing.TB, cfg *jwtv3.JwtAuthentication, clock *fakeClock) *Authenticator {
	t.Helper()
	if err := cfg.ValidateAll(); err != nil {
		t.Fatalf("test configuration is not valid Envoy configuration: %v", err)
	}
	a, err := Compile(cfg, Options{Now: clock.Now})
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	t.Cleanup(a.Close)
	return a
}

// request is a GET of target ("/path?query") on host shop.example, with headers given as
// "Name: value" lines.
func request(target string, headers ...string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "http://shop.example"+target, nil)
	for _, h := range headers {
		name, value, _ := strings.Cut(h, ": ")
		r.Header.Add(name, value)
	}
	return r
}

// jwksServer serves a JWKS that the test can change, or make fail, and counts fetches.
type jwksServer struct {
	*httptest.Server
	body    atomic.Value // string
	failing atomic.Bool
	fetches atomic.Int32
}

func newJWKSServer(t testing.TB, jwks string) *jwksServer {
	s := &jwksServer{}
	s.body.Store(jwks)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fetches.Add(1)
		if s.failing.Load() {
			http.Error(w, "down for maintenance", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(s.body.Load().(string)))
	}))
	t.Cleanup(s.Close)
	return s
}

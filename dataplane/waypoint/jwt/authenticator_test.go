package jwt

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	"github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
)

const (
	rsaIssuer = "https://rsa.example"
	ecIssuer  = "https://ec.example"
)

type fixture struct {
	rsaKey, otherRSAKey, ecKey testKey
	cfg                        *jwtv3.JwtAuthentication
}

// newFixture configures two providers: "rsa" (audience "api", the default token locations,
// forward false) and "ec" (any audience, from "x-ec-token: Token <jwt>", forward true), with a
// rule per requirement type.
func newFixture(t testing.TB) fixture {
	f := fixture{rsaKey: newRSAKey(t, "rsa-1"), otherRSAKey: newRSAKey(t, "rsa-1"), ecKey: newECKey(t, "ec-1")}
	rsaProvider := localProvider(rsaIssuer, jwksJSON(t, f.rsaKey))
	rsaProvider.Audiences = []string{"api"}
	ecProvider := localProvider(ecIssuer, jwksJSON(t, f.ecKey))
	ecProvider.FromHeaders = []*jwtv3.JwtHeader{{Name: "x-ec-token", ValuePrefix: "Token "}}
	ecProvider.Forward = true
	f.cfg = &jwtv3.JwtAuthentication{
		Providers: map[string]*jwtv3.JwtProvider{"rsa": rsaProvider, "ec": ecProvider},
		Rules: []*jwtv3.RequirementRule{
			prefixRule("/public", nil),
			prefixRule("/ec", requireProvider("ec")),
			prefixRule("/either", requireAny(requireProvider("rsa"), requireProvider("ec"))),
			prefixRule("/both", requireAll(requireProvider("rsa"), requireProvider("ec"))),
			prefixRule("/optional", requireAny(requireProvider("rsa"), allowMissing())),
			prefixRule("/tolerant", allowMissingOrFailed()),
			prefixRule("/other-audience", &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_ProviderAndAudiences{
				ProviderAndAudiences: &jwtv3.ProviderWithAudiences{ProviderName: "rsa", Audiences: []string{"other-api"}}}}),
			prefixRule("/", requireProvider("rsa")),
		},
	}
	return f
}

func TestAuthenticate(t *testing.T) {
	f := newFixture(t)
	a := compile(t, f.cfg, newClock())

	rsaToken := f.rsaKey.sign(t, claims(rsaIssuer, nil))
	ecToken := f.ecKey.sign(t, claims(ecIssuer, nil))
	bearer := func(token string) string { return "Authorization: Bearer " + token }
	publicPEM := func() []byte {
		der, err := x509.MarshalPKIXPublicKey(f.rsaKey.private.Public())
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	}
	publicDER := func() []byte { block, _ := pem.Decode(publicPEM()); return block.Bytes }
	hmacWith := func(secret []byte) string {
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: secret}, (&jose.SignerOptions{}).WithHeader("kid", "rsa-1"))
		if err != nil {
			t.Fatal(err)
		}
		token, err := josejwt.Signed(signer).Claims(claims(rsaIssuer, nil)).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return token
	}
	segment := func(v any) string { b, _ := json.Marshal(v); return base64.RawURLEncoding.EncodeToString(b) }
	algNone := segment(map[string]any{"alg": "none", "typ": "JWT", "kid": "rsa-1"}) + "." + segment(claims(rsaIssuer, nil)) + "."
	rsaParts := strings.Split(rsaToken, ".")
	tampered := rsaParts[0] + "." + segment(claims(rsaIssuer, map[string]any{"sub": "mallory"})) + "." + rsaParts[2]

	const invalidChallenge = `Bearer realm="http://shop.example/orders", error="invalid_token"`
	tests := []struct {
		name          string
		req           *http.Request
		wantStatus    int    // 0: authenticated
		wantReason    string // with wantStatus
		wantChallenge string // when set, the exact WWW-Authenticate
		check         func(t *testing.T, r *http.Request, md map[string]any)
	}{
		{
			name: "valid RS256 token: claims in metadata under the issuer, nested claims nested, token removed",
			req:  request("/orders", bearer(rsaToken)),
			check: func(t *testing.T, r *http.Request, md map[string]any) {
				payload := md[rsaIssuer].(map[string]any)
				if payload["sub"] != "alice" || payload["iss"] != rsaIssuer {
					t.Errorf("payload = %v", payload)
				}
				if got := payload["org"].(map[string]any)["team"].(map[string]any)["name"]; got != "payments" {
					t.Errorf("org.team.name = %v, want payments", got)
				}
				if !reflect.DeepEqual(payload["groups"], []any{"dev", "ops"}) {
					t.Errorf("groups = %#v", payload["groups"])
				}
				if r.Header.Get("Authorization") != "" {
					t.Error("Authorization header kept although the provider does not forward it")
				}
			},
		},
		{
			name: "valid ES256 token from a custom header and prefix; forward keeps it",
			req:  request("/ec", "X-Ec-Token: Token "+ecToken),
			check: func(t *testing.T, r *http.Request, md map[string]any) {
				if md[ecIssuer].(map[string]any)["sub"] != "alice" {
					t.Errorf("metadata = %v", md)
				}
				if r.Header.Get("X-Ec-Token") != "Token "+ecToken {
					t.Error("token header removed although the provider forwards it")
				}
			},
		},
		{name: "value prefix matched case-insensitively", req: request("/ec", "X-Ec-Token: token "+ecToken)},
		{name: "custom header without its prefix is no token", req: request("/ec", "X-Ec-Token: "+ecToken), wantStatus: 401, wantReason: "Jwt is missing"},
		{
			name: "token in the access_token parameter is removed from the query",
			req:  request("/orders?access_token=" + rsaToken + "&page=2"),
			check: func(t *testing.T, r *http.Request, md map[string]any) {
				if r.URL.RawQuery != "page=2" {
					t.Errorf("query = %q, want page=2", r.URL.RawQuery)
				}
			},
		},
		{
			name: "expired", req: request("/orders", bearer(f.rsaKey.sign(t, claims(rsaIssuer, map[string]any{"exp": t0.Add(-2 * time.Minute).Unix()})))),
			wantStatus: 401, wantReason: "Jwt is expired", wantChallenge: invalidChallenge,
		},
		{name: "expired within the default 60s clock skew", req: request("/orders", bearer(f.rsaKey.sign(t, claims(rsaIssuer, map[string]any{"exp": t0.Add(-30 * time.Second).Unix()}))))},
		{
			name: "not yet valid (nbf)", req: request("/orders", bearer(f.rsaKey.sign(t, claims(rsaIssuer, map[string]any{"nbf": t0.Add(2 * time.Minute).Unix()})))),
			wantStatus: 401, wantReason: "Jwt not yet valid", wantChallenge: invalidChallenge,
		},
		{
			name: "wrong audience is 403", req: request("/orders", bearer(f.rsaKey.sign(t, claims(rsaIssuer, map[string]any{"aud": []string{"web", "mobile"}})))),
			wantStatus: 403, wantReason: "Audiences in Jwt are not allowed", wantChallenge: invalidChallenge,
		},
		{name: "one of several audiences suffices", req: request("/orders", bearer(f.rsaKey.sign(t, claims(rsaIssuer, map[string]any{"aud": []string{"web", "api"}}))))},
		{name: "no aud claim when audiences are required", req: request("/orders", bearer(f.rsaKey.sign(t, claims(rsaIssuer, map[string]any{"aud": nil})))), wantStatus: 403, wantReason: "Audiences in Jwt are not allowed"},
		{
			name: "wrong issuer", req: request("/orders", bearer(f.rsaKey.sign(t, claims("https://evil.example", nil)))),
			wantStatus: 401, wantReason: "Jwt issuer is not configured", wantChallenge: invalidChallenge,
		},
		{
			name: "bad signature: another key under the same kid", req: request("/orders", bearer(f.otherRSAKey.sign(t, claims(rsaIssuer, nil)))),
			wantStatus: 401, wantReason: "Jwt verification fails", wantChallenge: invalidChallenge,
		},
		{name: "bad signature: payload changed", req: request("/orders", bearer(tampered)), wantStatus: 401, wantReason: "Jwt verification fails"},
		{
			name: "unknown kid", req: request("/orders", bearer(f.rsaKey.withKeyID("rsa-2").sign(t, claims(rsaIssuer, nil)))),
			wantStatus: 401, wantReason: "Jwks doesn't have key to match kid or alg from Jwt",
		},
		{
			name: "alg none", req: request("/orders", bearer(algNone)),
			wantStatus: 401, wantReason: "Jwt algorithm is not allowed (only RS*, PS*, ES* and EdDSA are accepted)",
		},
		{
			name: "HS256 with the public key PEM as secret", req: request("/orders", bearer(hmacWith(publicPEM()))),
			wantStatus: 401, wantReason: "Jwt algorithm is not allowed (only RS*, PS*, ES* and EdDSA are accepted)",
		},
		{
			name: "HS256 with the public key DER as secret", req: request("/orders", bearer(hmacWith(publicDER()))),
			wantStatus: 401, wantReason: "Jwt algorithm is not allowed (only RS*, PS*, ES* and EdDSA are accepted)",
		},
		{name: "ES256 token for the RSA provider's issuer", req: request("/orders", bearer(f.ecKey.withKeyID("rsa-1").sign(t, claims(rsaIssuer, nil)))), wantStatus: 401, wantReason: "Jwks doesn't have key to match kid or alg from Jwt"},
		{name: "not a JWT", req: request("/orders", bearer("hello")), wantStatus: 401, wantReason: "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"},
		{name: "garbage in three parts", req: request("/orders", bearer("a.b.c")), wantStatus: 401, wantReason: "Jwt is malformed"},
		{
			name: "missing token: challenge without error", req: request("/orders"),
			wantStatus: 401, wantReason: "Jwt is missing", wantChallenge: `Bearer realm="http://shop.example/orders"`,
		},
		{name: "other authorization scheme is no token", req: request("/orders", "Authorization: Basic YWxpY2U6c2VjcmV0"), wantStatus: 401, wantReason: "Jwt is missing"},
		{
			name: "every token must be valid", req: request("/orders", bearer(rsaToken), bearer(f.rsaKey.sign(t, claims(rsaIssuer, map[string]any{"exp": t0.Add(-time.Hour).Unix()})))),
			wantStatus: 401, wantReason: "Jwt is expired",
		},
		{name: "rule without requirement", req: request("/public/index.html"), check: wantNoMetadata},
		{name: "allow_missing: no token", req: request("/optional"), check: wantNoMetadata},
		{name: "allow_missing: valid token", req: request("/optional", bearer(rsaToken)), check: wantMetadataFor(rsaIssuer)},
		{name: "allow_missing: invalid token", req: request("/optional", bearer(tampered)), wantStatus: 401, wantReason: "Jwt verification fails"},
		{name: "allow_missing_or_failed: invalid token passes without metadata", req: request("/tolerant", bearer(tampered)), check: wantNoMetadata},
		{name: "allow_missing_or_failed: valid token of any provider", req: request("/tolerant", "X-Ec-Token: Token "+ecToken), check: wantMetadataFor(ecIssuer)},
		{name: "requires_any: first provider", req: request("/either", bearer(rsaToken)), check: wantMetadataFor(rsaIssuer)},
		{name: "requires_any: second provider", req: request("/either", "X-Ec-Token: Token "+ecToken), check: wantMetadataFor(ecIssuer)},
		{name: "requires_any: neither", req: request("/either"), wantStatus: 401, wantReason: "Jwt is missing"},
		{name: "requires_any: an invalid token says why, not missing", req: request("/either", bearer(tampered)), wantStatus: 401, wantReason: "Jwt verification fails"},
		{name: "requires_all: both", req: request("/both", bearer(rsaToken), "X-Ec-Token: Token "+ecToken), check: wantMetadataFor(rsaIssuer, ecIssuer)},
		{name: "requires_all: one missing", req: request("/both", bearer(rsaToken)), wantStatus: 401, wantReason: "Jwt is missing"},
		{name: "provider_and_audiences overrides the provider's audiences", req: request("/other-audience", bearer(f.rsaKey.sign(t, claims(rsaIssuer, map[string]any{"aud": "other-api"}))))},
		{name: "provider_and_audiences refuses the provider's own audience", req: request("/other-audience", bearer(rsaToken)), wantStatus: 403, wantReason: "Audiences in Jwt are not allowed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			md, err := a.Authenticate(context.Background(), tc.req)
			if tc.wantStatus == 0 {
				if err != nil {
					t.Fatalf("Authenticate: %v", err)
				}
				if tc.check != nil {
					tc.check(t, tc.req, md)
				}
				return
			}
			var authErr *Error
			if !errors.As(err, &authErr) {
				t.Fatalf("Authenticate error = %v, want an *Error", err)
			}
			if authErr.Status != tc.wantStatus || authErr.Reason != tc.wantReason {
				t.Errorf("got %d %q, want %d %q", authErr.Status, authErr.Reason, tc.wantStatus, tc.wantReason)
			}
			if tc.wantChallenge != "" && authErr.WWWAuthenticate != tc.wantChallenge {
				t.Errorf("WWW-Authenticate = %q, want %q", authErr.WWWAuthenticate, tc.wantChallenge)
			}
			if md != nil {
				t.Errorf("metadata %v returned with an error", md)
			}
		})
	}
}

func wantNoMetadata(t *testing.T, _ *http.Request, md map[string]any) {
	if md != nil {
		t.Errorf("metadata = %v, want none", md)
	}
}

func wantMetadataFor(issuers ...string) func(*testing.T, *http.Request, map[string]any) {
	return func(t *testing.T, _ *http.Request, md map[string]any) {
		if len(md) != len(issuers) {
			t.Errorf("metadata has %d entries, want %d: %v", len(md), len(issuers), md)
		}
		for _, iss := range issuers {
			if payload, ok := md[iss].(map[string]any); !ok || payload["iss"] != iss {
				t.Errorf("metadata[%q] = %v", iss, md[iss])
			}
		}
	}
}

func TestClockSkewSeconds(t *testing.T) {
	key := newECKey(t, "k")
	p := localProvider(rsaIssuer, jwksJSON(t, key))
	p.ClockSkewSeconds = 300
	a := compile(t, &jwtv3.JwtAuthentication{Providers: map[string]*jwtv3.JwtProvider{"p": p}, Rules: []*jwtv3.RequirementRule{prefixRule("/", requireProvider("p"))}}, newClock())
	for _, tc := range []struct {
		expiredFor time.Duration
		wantOK     bool
	}{{4 * time.Minute, true}, {6 * time.Minute, false}} {
		token := key.sign(t, claims(rsaIssuer, map[string]any{"exp": t0.Add(-tc.expiredFor).Unix()}))
		_, err := a.Authenticate(context.Background(), request("/", "Authorization: Bearer "+token))
		if (err == nil) != tc.wantOK {
			t.Errorf("expired for %v: err = %v, want ok=%v", tc.expiredFor, err, tc.wantOK)
		}
	}
}

func TestClaimToHeadersAndPayloadMetadataKey(t *testing.T) {
	key := newRSAKey(t, "k")
	p := localProvider(rsaIssuer, jwksJSON(t, key))
	p.PayloadInMetadata = "user"
	p.ClaimToHeaders = []*jwtv3.JwtClaimToHeader{
		{HeaderName: "x-user", ClaimName: "sub"},
		{HeaderName: "x-team", ClaimName: "org.team.name"},
		{HeaderName: "x-groups", ClaimName: "groups"},
		{HeaderName: "x-expiry", ClaimName: "exp"},
		{HeaderName: "x-dotted", ClaimPath: []*jwtv3.JwtClaimToHeader_PathSegment{{Key: "https://example.com/role"}}},
	}
	p.NormalizePayloadInMetadata = &jwtv3.JwtProvider_NormalizePayload{SpaceDelimitedClaims: []string{"scope"}}
	a := compile(t, &jwtv3.JwtAuthentication{
		Providers: map[string]*jwtv3.JwtProvider{"p": p},
		Rules:     []*jwtv3.RequirementRule{prefixRule("/public", nil), prefixRule("/", requireProvider("p"))},
	}, newClock())

	spoofed := request("/public", "X-User: admin", "X-Team: root")
	if _, err := a.Authenticate(context.Background(), spoofed); err != nil {
		t.Fatal(err)
	}
	if spoofed.Header.Get("X-User") != "" || spoofed.Header.Get("X-Team") != "" {
		t.Errorf("claim headers from the client survived: %v", spoofed.Header)
	}

	token := key.sign(t, claims(rsaIssuer, map[string]any{"scope": "read write", "https://example.com/role": "admin"}))
	r := request("/orders", "Authorization: Bearer "+token, "X-User: admin")
	md, err := a.Authenticate(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"X-User":   "alice",
		"X-Team":   "payments",
		"X-Groups": base64.StdEncoding.EncodeToString([]byte(`["dev","ops"]`)),
		"X-Expiry": strconv.FormatInt(t0.Add(time.Hour).Unix(), 10),
		"X-Dotted": "admin",
	}
	for h, v := range want {
		if got := r.Header.Values(h); len(got) != 1 || got[0] != v {
			t.Errorf("%s = %q, want %q", h, got, v)
		}
	}
	payload, ok := md["user"].(map[string]any)
	if !ok {
		t.Fatalf("metadata = %v, want the payload under \"user\"", md)
	}
	if !reflect.DeepEqual(payload["scope"], []any{"read", "write"}) {
		t.Errorf("scope = %#v, want it split", payload["scope"])
	}
}

func TestRuleMatching(t *testing.T) {
	key := newECKey(t, "k")
	cfg := &jwtv3.JwtAuthentication{
		Providers: map[string]*jwtv3.JwtProvider{"p": localProvider(rsaIssuer, jwksJSON(t, key))},
		Rules: []*jwtv3.RequirementRule{
			{Match: mustRouteMatch(`{"path": "/healthz"}`)},
			{Match: mustRouteMatch(`{"safe_regex": {"regex": "/static/[a-z]+\\.css"}}`)},
			{Match: mustRouteMatch(`{"prefix": "/API", "case_sensitive": false, "headers": [{"name": "x-internal", "string_match": {"exact": "yes"}}]}`)},
			{Match: mustRouteMatch(`{"path_separated_prefix": "/docs", "headers": [{"name": ":method", "string_match": {"exact": "GET"}}, {"name": "x-debug", "present_match": true, "invert_match": true}]}`)},
			prefixRule("/", requireProvider("p")),
		},
	}
	a := compile(t, cfg, newClock())
	for _, tc := range []struct {
		req    *http.Request
		public bool
	}{
		{request("/healthz"), true},
		{request("/healthz/more"), false},
		{request("/static/site.css"), true},
		{request("/static/site.css.map"), false},
		{request("/api/v1", "X-Internal: yes"), true},
		{request("/api/v1", "X-Internal: no"), false},
		{request("/api/v1"), false},
		{request("/orders"), false},
		{request("/docs"), true},
		{request("/docs/intro"), true},
		{request("/docs/intro", "X-Debug: 1"), false},
		{request("/docsearch"), false},
	} {
		_, err := a.Authenticate(context.Background(), tc.req)
		if (err == nil) != tc.public {
			t.Errorf("%s %v: err = %v, want public=%v", tc.req.URL, tc.req.Header, err, tc.public)
		}
	}
}

func TestCORSPreflightAndStrippedFailure(t *testing.T) {
	key := newECKey(t, "k")
	a := compile(t, &jwtv3.JwtAuthentication{
		Providers:            map[string]*jwtv3.JwtProvider{"p": localProvider(rsaIssuer, jwksJSON(t, key))},
		Rules:                []*jwtv3.RequirementRule{prefixRule("/", requireProvider("p"))},
		BypassCorsPreflight:  true,
		StripFailureResponse: true,
	}, newClock())
	preflight := request("/orders", "Origin: https://app.example", "Access-Control-Request-Method: POST")
	preflight.Method = http.MethodOptions
	if _, err := a.Authenticate(context.Background(), preflight); err != nil {
		t.Errorf("CORS preflight: %v", err)
	}
	_, err := a.Authenticate(context.Background(), request("/orders"))
	var authErr *Error
	if !errors.As(err, &authErr) || *authErr != (Error{Status: 401}) {
		t.Errorf("stripped failure = %#v, want status 401 alone", err)
	}
}

func TestCompileRejects(t *testing.T) {
	key := newRSAKey(t, "k")
	jwks := jwksJSON(t, key)
	valid := func(change func(cfg *jwtv3.JwtAuthentication)) *jwtv3.JwtAuthentication {
		cfg := &jwtv3.JwtAuthentication{
			Providers: map[string]*jwtv3.JwtProvider{"p": localProvider(rsaIssuer, jwks)},
			Rules:     []*jwtv3.RequirementRule{prefixRule("/", requireProvider("p"))},
		}
		change(cfg)
		return cfg
	}
	tests := []struct {
		name    string
		cfg     *jwtv3.JwtAuthentication
		wantErr string
	}{
		{"nil", nil, "no configuration"},
		{"invalid proto: rule without match", valid(func(c *jwtv3.JwtAuthentication) { c.Rules[0].Match = nil }), "Match"},
		{"unknown provider", valid(func(c *jwtv3.JwtAuthentication) { c.Rules[0] = prefixRule("/", requireProvider("q")) }), `provider "q", which is not configured`},
		{"unknown provider in requires_any", valid(func(c *jwtv3.JwtAuthentication) {
			c.Rules[0] = prefixRule("/", requireAny(requireProvider("p"), requireProvider("q")))
		}), `provider "q"`},
		{"unknown requirement name", valid(func(c *jwtv3.JwtAuthentication) {
			c.Rules[0].RequirementType = &jwtv3.RequirementRule_RequirementName{RequirementName: "r"}
		}), `requirement_name "r"`},
		{"JWKS that is not JSON", valid(func(c *jwtv3.JwtAuthentication) { c.Providers["p"] = localProvider(rsaIssuer, "{") }), "not valid JSON"},
		{"JWKS with only an HMAC key", valid(func(c *jwtv3.JwtAuthentication) {
			c.Providers["p"] = localProvider(rsaIssuer, `{"keys":[{"kty":"oct","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0","alg":"HS256"}]}`)
		}), "symmetric (HMAC) keys are not supported"},
		{"header_in_metadata", valid(func(c *jwtv3.JwtAuthentication) { c.Providers["p"].HeaderInMetadata = "h" }), "header_in_metadata is not supported"},
		{"extract_only_without_validation", valid(func(c *jwtv3.JwtAuthentication) {
			c.Rules[0] = prefixRule("/", &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_ExtractOnlyWithoutValidation{ExtractOnlyWithoutValidation: &jwtv3.ExtractOnlyWithoutValidation{}}})
		}), "extract_only_without_validation is not supported"},
		{"filter_state_rules", valid(func(c *jwtv3.JwtAuthentication) {
			c.FilterStateRules = &jwtv3.FilterStateRule{Name: "s"}
		}), "filter_state_rules is not supported"},
		{"query parameter match", valid(func(c *jwtv3.JwtAuthentication) {
			c.Rules[0].Match = mustRouteMatch(`{"prefix": "/", "query_parameters": [{"name": "debug", "present_match": true}]}`)
		}), "query_parameters is not supported"},
		{"bad regex", valid(func(c *jwtv3.JwtAuthentication) {
			c.Rules[0].Match = mustRouteMatch(`{"safe_regex": {"regex": "("}}`)
		}), "safe_regex"},
		{"remote JWKS URI without scheme", valid(func(c *jwtv3.JwtAuthentication) {
			c.Providers["p"] = remoteProvider(rsaIssuer, "issuer.example/jwks", time.Minute)
		}), "absolute http or https URL"},
		{"invalid from_headers name", valid(func(c *jwtv3.JwtAuthentication) {
			c.Providers["p"].FromHeaders = []*jwtv3.JwtHeader{{Name: "bad header"}}
		}), "not a valid header name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, err := Compile(tc.cfg, Options{})
			if err == nil {
				a.Close()
				t.Fatal("Compile succeeded")
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %q does not mention %q", err, tc.wantErr)
			}
		})
	}
}

func TestStatusLocal(t *testing.T) {
	key := newECKey(t, "k")
	a := compile(t, &jwtv3.JwtAuthentication{Providers: map[string]*jwtv3.JwtProvider{"p": localProvider(rsaIssuer, jwksJSON(t, key))}}, newClock())
	want := []ProviderStatus{{Provider: "p", Issuer: rsaIssuer, JWKSSource: "inline", KeysLoaded: 1}}
	if got := a.Status(); !reflect.DeepEqual(got, want) {
		t.Errorf("Status = %+v, want %+v", got, want)
	}
}

func TestLocalJWKSSourcesAndCookies(t *testing.T) {
	key := newECKey(t, "k")
	file := t.TempDir() + "/jwks.json"
	if err := os.WriteFile(file, []byte(jwksJSON(t, key)), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TEST_JWKS", jwksJSON(t, key))
	withSource := func(ds *corev3.DataSource) *jwtv3.JwtProvider {
		p := localProvider(rsaIssuer, "")
		p.JwksSourceSpecifier = &jwtv3.JwtProvider_LocalJwks{LocalJwks: ds}
		p.FromCookies = []string{"session"}
		return p
	}
	a := compile(t, &jwtv3.JwtAuthentication{
		Providers: map[string]*jwtv3.JwtProvider{
			"bytes": withSource(&corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: []byte(jwksJSON(t, key))}}),
			"env":   withSource(&corev3.DataSource{Specifier: &corev3.DataSource_EnvironmentVariable{EnvironmentVariable: "TEST_JWKS"}}),
			"file":  withSource(&corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: file}}),
		},
		Rules: []*jwtv3.RequirementRule{
			prefixRule("/bytes", requireProvider("bytes")),
			prefixRule("/env", requireProvider("env")),
			prefixRule("/file", requireProvider("file")),
		},
	}, newClock())

	var sources []string
	for _, s := range a.Status() {
		sources = append(sources, s.JWKSSource)
	}
	if want := []string{"inline", "env:TEST_JWKS", "file:" + file}; !reflect.DeepEqual(sources, want) {
		t.Errorf("JWKS sources = %q, want %q", sources, want)
	}
	token := key.sign(t, claims(rsaIssuer, nil))
	for _, path := range []string{"/bytes", "/env", "/file"} {
		r := request(path)
		r.AddCookie(&http.Cookie{Name: "session", Value: token})
		if _, err := a.Authenticate(context.Background(), r); err != nil {
			t.Errorf("%s: %v", path, err)
		}
	}
}

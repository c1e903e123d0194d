package jwt

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ambientmesh/ambient-operator/internal/testwait"

	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
)

func remoteConfig(uri string, cacheDuration time.Duration) *jwtv3.JwtAuthentication {
	return &jwtv3.JwtAuthentication{
		Providers: map[string]*jwtv3.JwtProvider{"remote": remoteProvider(rsaIssuer, uri, cacheDuration)},
		Rules:     []*jwtv3.RequirementRule{prefixRule("/", requireProvider("remote"))},
	}
}

func authenticateWith(t *testing.T, a *Authenticator, token string) error {
	t.Helper()
	_, err := a.Authenticate(context.Background(), request("/orders", "Authorization: Bearer "+token))
	return err
}

func reasonOf(err error) string {
	var authErr *Error
	if errors.As(err, &authErr) {
		return authErr.Reason
	}
	return ""
}

func TestRemoteJWKSUnknownKeyIDRefetch(t *testing.T) {
	key1, key2, key3 := newECKey(t, "k1"), newECKey(t, "k2"), newECKey(t, "k3")
	server := newJWKSServer(t, jwksJSON(t, key1))
	clock := newClock()
	a := compile(t, remoteConfig(server.URL+"/jwks.json", time.Hour), clock)

	if err := authenticateWith(t, a, key1.sign(t, claims(rsaIssuer, nil))); err != nil {
		t.Fatalf("token of the fetched key: %v", err)
	}
	if n := server.fetches.Load(); n != 1 {
		t.Fatalf("fetches after the first request = %d, want 1", n)
	}

	// The issuer rotates: a token with the new kid makes the waypoint fetch again.
	server.body.Store(jwksJSON(t, key1, key2))
	if err := authenticateWith(t, a, key2.sign(t, claims(rsaIssuer, nil))); err != nil {
		t.Fatalf("token of the rotated key: %v", err)
	}
	if n := server.fetches.Load(); n != 2 {
		t.Errorf("fetches after the rotation = %d, want 2", n)
	}

	// Another unknown kid within the rate limit does not fetch; later it does.
	if err := authenticateWith(t, a, key3.sign(t, claims(rsaIssuer, nil))); reasonOf(err) != "Jwks doesn't have key to match kid or alg from Jwt" {
		t.Errorf("unknown kid: %v", err)
	}
	if n := server.fetches.Load(); n != 2 {
		t.Errorf("fetches after a rate-limited unknown kid = %d, want 2", n)
	}
	clock.Advance(unknownKeyIDRefetchInterval + time.Second)
	if err := authenticateWith(t, a, key3.sign(t, claims(rsaIssuer, nil))); err == nil {
		t.Error("token of a key the server does not publish was accepted")
	}
	if n := server.fetches.Load(); n != 3 {
		t.Errorf("fetches after the rate limit passed = %d, want 3", n)
	}
}

func TestRemoteJWKSRefreshAndStaleWhileError(t *testing.T) {
	key1, key2 := newRSAKey(t, "k1"), newECKey(t, "k2")
	server := newJWKSServer(t, jwksJSON(t, key1))
	a := compile(t, remoteConfig(server.URL, 50*time.Millisecond), newClock())
	token := key1.sign(t, claims(rsaIssuer, nil))
	if err := authenticateWith(t, a, token); err != nil {
		t.Fatal(err)
	}
	status := func() ProviderStatus { return a.Status()[0] }
	if s := status(); s.JWKSSource != server.URL || s.KeysLoaded != 1 || s.LastFetch.IsZero() || s.LastError != "" {
		t.Errorf("status after the first fetch = %+v", s)
	}

	// After cache_duration the keys are fetched again without any request asking.
	server.body.Store(jwksJSON(t, key1, key2))
	testwait.For(t, "the refreshed JWKS is loaded", 5*time.Second, func() bool { return status().KeysLoaded == 2 })

	// The server fails: the keys held stay in use and the error is recorded.
	server.failing.Store(true)
	testwait.For(t, "the failed refresh is recorded", 5*time.Second, func() bool { return status().LastError != "" })
	if s := status(); s.KeysLoaded != 2 || !strings.Contains(s.LastError, "500") {
		t.Errorf("status while the server fails = %+v", s)
	}
	if err := authenticateWith(t, a, token); err != nil {
		t.Errorf("token refused while the JWKS server fails: %v", err)
	}

	// It recovers: the error is cleared.
	server.failing.Store(false)
	testwait.For(t, "the recovered refresh is recorded", 5*time.Second, func() bool { return status().LastError == "" })

	// Close stops the refresher.
	a.Close()
	stopped := server.fetches.Load()
	time.Sleep(200 * time.Millisecond)
	if n := server.fetches.Load(); n != stopped {
		t.Errorf("%d fetches after Close", n-stopped)
	}
}

func TestRemoteJWKSNeverFetched(t *testing.T) {
	key := newECKey(t, "k1")
	server := newJWKSServer(t, jwksJSON(t, key))
	server.failing.Store(true)
	a := compile(t, remoteConfig(server.URL, time.Hour), newClock())
	err := authenticateWith(t, a, key.sign(t, claims(rsaIssuer, nil)))
	var authErr *Error
	if !errors.As(err, &authErr) || authErr.Status != 401 || authErr.Reason != "Jwks remote fetch is failed" {
		t.Errorf("Authenticate = %v, want 401 Jwks remote fetch is failed", err)
	}
	if s := a.Status()[0]; s.KeysLoaded != 0 || !strings.Contains(s.LastError, "500") {
		t.Errorf("status = %+v", s)
	}
}

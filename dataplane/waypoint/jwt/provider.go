package jwt

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	"github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	"golang.org/x/net/http/httpguts"
)

const (
	defaultClockSkew     = 60 * time.Second
	defaultCacheDuration = 5 * time.Minute
	// defaultRetryInterval is Envoy's default async_fetch.failed_refetch_duration.
	defaultRetryInterval = time.Second
)

// provider is a compiled JwtProvider.
type provider struct {
	name                 string
	issuer               string // empty: any issuer
	audiences            []string
	subject              func(string) bool // nil: any subject
	requireExpiration    bool
	maxLifetime          time.Duration // 0: no limit
	clockSkew            time.Duration
	locations            []tokenLocation
	forward              bool
	forwardPayloadHeader string
	padForwardPayload    bool
	metadataKey          string
	spaceDelimitedClaims []string
	claimToHeaders       []claimToHeader

	jwksSource string      // for Status: "inline", "file:<path>", "env:<name>" or the URI
	localKeys  *keySet     // set for local_jwks
	remote     *remoteJWKS // set for remote_jwks
}

// tokenLocation is one place a token may be carried: a header (with an optional value prefix),
// a query parameter or a cookie. Exactly one of the names is set.
type tokenLocation struct {
	header, prefix string
	param          string
	cookie         string
}

type claimToHeader struct {
	header string
	path   []string // keys from the payload's top level down
}

func compileProvider(name string, pc *jwtv3.JwtProvider, opts Options) (*provider, error) {
	if pc == nil {
		return nil, errors.New("provider is empty")
	}
	switch {
	case pc.GetHeaderInMetadata() != "":
		return nil, errors.New("header_in_metadata is not supported")
	case pc.GetFailedStatusInMetadata() != "":
		return nil, errors.New("failed_status_in_metadata is not supported")
	case pc.GetClearRouteCache():
		return nil, errors.New("clear_route_cache is not supported")
	}
	p := &provider{
		name:                 name,
		issuer:               pc.GetIssuer(),
		audiences:            pc.GetAudiences(),
		requireExpiration:    pc.GetRequireExpiration(),
		clockSkew:            defaultClockSkew,
		forward:              pc.GetForward(),
		forwardPayloadHeader: pc.GetForwardPayloadHeader(),
		padForwardPayload:    pc.GetPadForwardPayloadHeader(),
		metadataKey:          pc.GetPayloadInMetadata(),
		spaceDelimitedClaims: pc.GetNormalizePayloadInMetadata().GetSpaceDelimitedClaims(),
	}
	if pc.GetClockSkewSeconds() > 0 {
		p.clockSkew = time.Duration(pc.GetClockSkewSeconds()) * time.Second
	}
	if pc.GetMaxLifetime() != nil {
		p.maxLifetime = pc.GetMaxLifetime().AsDuration()
	}
	if p.metadataKey == "" {
		p.metadataKey = p.issuer
	}
	if p.metadataKey == "" {
		p.metadataKey = name
	}
	if pc.GetSubjects() != nil {
		match, err := compileStringMatch(pc.GetSubjects())
		if err != nil {
			return nil, fmt.Errorf("subjects: %w", err)
		}
		p.subject = match
	}
	if h := p.forwardPayloadHeader; h != "" && !httpguts.ValidHeaderFieldName(h) {
		return nil, fmt.Errorf("forward_payload_header %q is not a valid header name", h)
	}

	for _, h := range pc.GetFromHeaders() {
		if !httpguts.ValidHeaderFieldName(h.GetName()) {
			return nil, fmt.Errorf("from_headers: %q is not a valid header name", h.GetName())
		}
		p.locations = append(p.locations, tokenLocation{header: http.CanonicalHeaderKey(h.GetName()), prefix: h.GetValuePrefix()})
	}
	for _, param := range pc.GetFromParams() {
		p.locations = append(p.locations, tokenLocation{param: param})
	}
	for _, cookie := range pc.GetFromCookies() {
		p.locations = append(p.locations, tokenLocation{cookie: cookie})
	}
	if len(p.locations) == 0 {
		p.locations = []tokenLocation{{header: "Authorization", prefix: "Bearer "}, {param: "access_token"}}
	}

	for i, c := range pc.GetClaimToHeaders() {
		cth := claimToHeader{header: http.CanonicalHeaderKey(c.GetHeaderName())}
		switch {
		case c.GetClaimName() != "" && len(c.GetClaimPath()) == 0:
			cth.path = strings.Split(c.GetClaimName(), ".")
		case c.GetClaimName() == "" && len(c.GetClaimPath()) > 0:
			for _, seg := range c.GetClaimPath() {
				cth.path = append(cth.path, seg.GetKey())
			}
		default:
			return nil, fmt.Errorf("claim_to_headers[%d]: exactly one of claim_name and claim_path must be set", i)
		}
		p.claimToHeaders = append(p.claimToHeaders, cth)
	}

	switch src := pc.GetJwksSourceSpecifier().(type) {
	case *jwtv3.JwtProvider_LocalJwks:
		data, desc, err := readDataSource(src.LocalJwks)
		if err != nil {
			return nil, fmt.Errorf("local_jwks: %w", err)
		}
		keys, err := parseJWKS(data)
		if err != nil {
			return nil, fmt.Errorf("local_jwks: %w", err)
		}
		p.localKeys, p.jwksSource = keys, desc
	case *jwtv3.JwtProvider_RemoteJwks:
		remote, err := compileRemoteJWKS(src.RemoteJwks, opts)
		if err != nil {
			return nil, fmt.Errorf("remote_jwks: %w", err)
		}
		p.remote, p.jwksSource = remote, remote.uri
	default:
		return nil, errors.New("one of local_jwks and remote_jwks is required")
	}
	return p, nil
}

func readDataSource(ds *corev3.DataSource) (data []byte, description string, err error) {
	if ds.GetWatchedDirectory() != nil {
		return nil, "", errors.New("watched_directory is not supported (the file is read once, at configuration)")
	}
	switch spec := ds.GetSpecifier().(type) {
	case *corev3.DataSource_InlineString:
		return []byte(spec.InlineString), "inline", nil
	case *corev3.DataSource_InlineBytes:
		return spec.InlineBytes, "inline", nil
	case *corev3.DataSource_Filename:
		data, err := os.ReadFile(spec.Filename)
		return data, "file:" + spec.Filename, err
	case *corev3.DataSource_EnvironmentVariable:
		value, ok := os.LookupEnv(spec.EnvironmentVariable)
		if !ok {
			return nil, "", fmt.Errorf("environment variable %q is not set", spec.EnvironmentVariable)
		}
		return []byte(value), "env:" + spec.EnvironmentVariable, nil
	default:
		return nil, "", errors.New("inline_string, inline_bytes, filename or environment_variable is required")
	}
}

func compileRemoteJWKS(rc *jwtv3.RemoteJwks, opts Options) (*remoteJWKS, error) {
	uri := rc.GetHttpUri().GetUri()
	u, err := url.Parse(uri)
	if err != nil {
		return nil, fmt.Errorf("http_uri.uri: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("http_uri.uri %q: an absolute http or https URL is required", uri)
	}
	cacheDuration := defaultCacheDuration
	if rc.GetCacheDuration() != nil {
		cacheDuration = rc.GetCacheDuration().AsDuration()
	}
	retryInterval := defaultRetryInterval
	if d := rc.GetAsyncFetch().GetFailedRefetchDuration(); d != nil && d.AsDuration() > 0 {
		retryInterval = d.AsDuration()
	}
	return newRemoteJWKS(uri, rc.GetHttpUri().GetTimeout().AsDuration(), cacheDuration, retryInterval, opts), nil
}

// keysFor returns the keys that may have signed a token with this kid and alg. For a remote JWKS
// a kid that none of the keys has triggers one (rate-limited) refetch first.
func (p *provider) keysFor(ctx context.Context, kid string, alg jose.SignatureAlgorithm) ([]jose.JSONWebKey, *failure) {
	if p.remote == nil {
		return p.localKeys.candidates(kid, alg), nil
	}
	keys, err := p.remote.current(ctx)
	if keys == nil {
		p.remote.log.V(1).Info("no JWKS to verify a token with", "provider", p.name, "error", fmt.Sprint(err))
		return nil, &failure{kind: invalidToken, reason: "Jwks remote fetch is failed"}
	}
	if kid != "" && !keys.hasKeyID(kid) {
		keys = p.remote.refetchForKeyID(ctx, kid)
	}
	return keys.candidates(kid, alg), nil
}

// parsedToken is a token whose structure and "alg" were accepted, with its claims decoded but
// not yet trusted.
type parsedToken struct {
	token  *josejwt.JSONWebToken
	kid    string
	alg    jose.SignatureAlgorithm
	claims josejwt.Claims
}

func parseToken(raw string) (*parsedToken, *failure) {
	if strings.Count(raw, ".") != 2 {
		return nil, &failure{kind: invalidToken, reason: "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"}
	}
	token, err := josejwt.ParseSigned(raw, allowedAlgorithms)
	if err != nil {
		if _, badAlg := errors.AsType[*jose.ErrUnexpectedSignatureAlgorithm](err); badAlg {
			return nil, &failure{kind: invalidToken, reason: "Jwt algorithm is not allowed (only RS*, PS*, ES* and EdDSA are accepted)"}
		}
		return nil, &failure{kind: invalidToken, reason: "Jwt is malformed"}
	}
	parsed := &parsedToken{token: token, kid: token.Headers[0].KeyID, alg: jose.SignatureAlgorithm(token.Headers[0].Algorithm)}
	if err := token.UnsafeClaimsWithoutVerification(&parsed.claims); err != nil {
		return nil, &failure{kind: invalidToken, reason: "Jwt payload is malformed"}
	}
	return parsed, nil
}

// checkClaims checks the registered claims against the provider (with audiences in place of the
// provider's own when a requirement names them). Like Envoy it runs before the signature check,
// so a token that would be refused anyway never causes a JWKS refetch.
func (p *provider) checkClaims(t *parsedToken, audiences []string, now time.Time) *failure {
	err := t.claims.ValidateWithLeeway(josejwt.Expected{Time: now}, p.clockSkew)
	switch {
	case errors.Is(err, josejwt.ErrExpired):
		return &failure{kind: invalidToken, reason: "Jwt is expired"}
	case errors.Is(err, josejwt.ErrNotValidYet), errors.Is(err, josejwt.ErrIssuedInTheFuture):
		return &failure{kind: invalidToken, reason: "Jwt not yet valid"}
	case err != nil:
		return &failure{kind: invalidToken, reason: "Jwt verification fails"}
	}
	if (p.requireExpiration || p.maxLifetime > 0) && t.claims.Expiry == nil {
		return &failure{kind: invalidToken, reason: "Jwt has no expiration"}
	}
	if p.maxLifetime > 0 && t.claims.Expiry.Time().Sub(now) > p.maxLifetime {
		return &failure{kind: invalidToken, reason: "Jwt lifetime exceeds the maximum"}
	}
	if len(audiences) > 0 && !slices.ContainsFunc(audiences, t.claims.Audience.Contains) {
		return &failure{kind: forbidden, reason: "Audiences in Jwt are not allowed"}
	}
	if p.subject != nil && !p.subject(t.claims.Subject) {
		return &failure{kind: invalidToken, reason: "Jwt subject is not allowed"}
	}
	return nil
}

// verifySignature finds the key that signed the token and returns the verified payload, raw and
// decoded.
func (p *provider) verifySignature(ctx context.Context, t *parsedToken) ([]byte, map[string]any, *failure) {
	keys, f := p.keysFor(ctx, t.kid, t.alg)
	if f != nil {
		return nil, nil, f
	}
	if len(keys) == 0 {
		return nil, nil, &failure{kind: invalidToken, reason: "Jwks doesn't have key to match kid or alg from Jwt"}
	}
	for _, key := range keys {
		var raw json.RawMessage
		// The bare public key, never the set: go-jose must not pick a key (or trust one embedded
		// in the token's header) on its own.
		if err := t.token.Claims(key.Key, &raw); err != nil {
			continue
		}
		var payload map[string]any
		if err := json.Unmarshal(raw, &payload); err != nil {
			return nil, nil, &failure{kind: invalidToken, reason: "Jwt payload is malformed"}
		}
		return raw, payload, nil
	}
	return nil, nil, &failure{kind: invalidToken, reason: "Jwt verification fails"}
}

// metadata is the payload as written to dynamic metadata: the claims as decoded, nested objects
// kept nested, with space-delimited claims split into lists when the provider asks for it.
func (p *provider) metadata(payload map[string]any) map[string]any {
	if len(p.spaceDelimitedClaims) == 0 {
		return payload
	}
	normalized := maps.Clone(payload)
	for _, name := range p.spaceDelimitedClaims {
		if s, ok := normalized[name].(string); ok {
			list := []any{}
			for _, item := range strings.Fields(s) {
				list = append(list, item)
			}
			normalized[name] = list
		}
	}
	return normalized
}

// claimHeaders are the claim_to_headers values of a verified payload, and the forwarded payload.
func (p *provider) claimHeaders(payload map[string]any, rawPayload []byte) map[string]string {
	out := map[string]string{}
	for _, c := range p.claimToHeaders {
		if value, ok := headerValueOf(lookupClaim(payload, c.path)); ok {
			out[c.header] = value
		}
	}
	if p.forwardPayloadHeader != "" {
		enc := base64.RawURLEncoding
		if p.padForwardPayload {
			enc = base64.URLEncoding
		}
		out[p.forwardPayloadHeader] = enc.EncodeToString(rawPayload)
	}
	return out
}

func lookupClaim(payload map[string]any, path []string) any {
	var current any = payload
	for _, key := range path {
		object, ok := current.(map[string]any)
		if !ok {
			return nil
		}
		current = object[key]
	}
	return current
}

// headerValueOf renders a claim for a header like Envoy: strings, numbers and booleans verbatim,
// lists and objects as base64-encoded JSON. A value that cannot be a header value is dropped.
func headerValueOf(claim any) (string, bool) {
	var value string
	switch c := claim.(type) {
	case string:
		value = c
	case float64:
		if c == math.Trunc(c) && c >= 0 && c < 1<<63 {
			value = strconv.FormatUint(uint64(c), 10)
		} else {
			value = strconv.FormatFloat(c, 'f', -1, 64)
		}
	case bool:
		value = strconv.FormatBool(c)
	case []any, map[string]any:
		encoded, err := json.Marshal(c)
		if err != nil {
			return "", false
		}
		value = base64.StdEncoding.EncodeToString(encoded)
	default:
		return "", false
	}
	return value, value != "" && httpguts.ValidHeaderFieldValue(value)
}

// Package jwt is the waypoint's JWT authentication: Envoy's jwt_authn HTTP filter, configured by
// the same envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication, so that an Envoy
// waypoint and ours read one configuration. All JOSE work (parsing, signature verification, JWK
// decoding) is github.com/go-jose/go-jose/v4.
//
// Supported, with Envoy's semantics unless noted:
//   - providers: issuer, audiences (one of them must be in "aud"; none configured accepts any),
//     subjects, require_expiration, max_lifetime, clock_skew_seconds (default 60), forward,
//     forward_payload_header (+ padding), payload_in_metadata, normalize_payload_in_metadata,
//     claim_to_headers (claim_name or claim_path; these headers are removed from every request
//     first, so a client cannot forge them);
//   - token locations: from_headers (name + value_prefix; the prefix is matched case-insensitively
//     because authentication schemes are), from_params, from_cookies; by default
//     "Authorization: Bearer <token>" and the access_token query parameter;
//   - keys: local_jwks (inline_string, inline_bytes, filename read once, environment_variable) and
//     remote_jwks. http_uri.uri is fetched by the waypoint itself over HTTP(S) with http_uri.timeout
//     (on Options.HTTPClient); http_uri.cluster is ignored, the fetch does not go through the mesh.
//     The keys are fetched at Compile and again every cache_duration (default 5 minutes, where
//     Envoy's is 10), in the background. A failed refresh keeps the keys already held
//     (stale-while-error), records the error for Status, and is retried after
//     async_fetch.failed_refetch_duration (default 1s), doubling up to cache_duration. A token
//     whose kid is not in the keys triggers one refetch, at most once a minute per provider.
//     Requests that arrive before the first fetch has finished wait for it.
//   - requirements: provider_name, provider_and_audiences, requires_any, requires_all,
//     allow_missing, allow_missing_or_failed, the empty requirement, requirement_name through
//     requirement_map; rules select by RouteMatch prefix, path, path_separated_prefix or
//     safe_regex (against the path as sent, query removed), case_sensitive, and headers
//     (string_match, the deprecated exact/prefix/suffix/contains/safe_regex_match, present_match,
//     invert_match, treat_missing_header_as_empty; :method, :authority, :path and :scheme too).
//   - bypass_cors_preflight, strip_failure_response.
//
// Responses: a request that fails its requirement gets an *Error to reply with: 401 with the
// reason as plain text ("Jwt is missing", "Jwt is expired", "Jwt not yet valid", "Jwt issuer is
// not configured", "Jwt verification fails", "Jwks doesn't have key to match kid or alg from
// Jwt", ...) and WWW-Authenticate `Bearer realm="<request URI>"`, plus `, error="invalid_token"`
// when a token was presented. A valid token with none of the required audiences gets 403, as in
// Envoy. Every token found for a required provider must be valid, so that a backend can never
// pick an unverified one of several. Once the requirement is met, the verified tokens are removed
// (a header entirely; a query parameter from r.URL.RawQuery, which is then re-encoded) unless
// their provider says forward, and the claim headers are set.
//
// Algorithms: only the asymmetric family of the key verifies — RS256/384/512 and PS256/384/512
// with RSA keys, ES256/384/512 with the EC key of the matching curve, EdDSA with Ed25519. "none"
// and HS* are rejected before any key is looked at, and symmetric ("oct") keys in a JWKS are
// skipped: HMAC keys are not supported. Besides shared secrets not belonging in a JWKS, this
// defeats the attack that signs an HS256 token with the issuer's public key as the secret.
//
// Deviations from Envoy, and why:
//   - payload_in_metadata defaults to the issuer (then the provider name) where Envoy writes no
//     metadata: RBAC rules on claims need the payload, and Istio always names it after the issuer.
//   - requires_all checks every child before changing the request, so one provider removing the
//     Authorization header cannot hide a token from the next.
//   - allow_missing with several tokens needs all of them valid (Envoy looks at the last only).
//   - iat in the future (beyond the clock skew) is "Jwt not yet valid", as go-jose validates it.
//   - audiences are compared exactly; Envoy also ignores an http(s):// prefix and a trailing slash.
//
// Not supported (Compile fails naming the field): header_in_metadata, failed_status_in_metadata,
// clear_route_cache, extract_only_without_validation, filter_state_rules, local_jwks
// watched_directory, and RouteMatch features other than those above. Accepted and ignored:
// jwt_cache_config (every token is verified, there is no cache to size), remote_jwks.retry_policy
// and async_fetch.fast_listener (fetches always run in the background and retry on their own),
// stat_prefix. PerRouteConfig is not read here.
package jwt

package jwt

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	"github.com/go-logr/logr"
)

// Options are the runtime dependencies of an Authenticator.
type Options struct {
	HTTPClient *http.Client     // for remote JWKS (default: a client with a 5s timeout)
	Now        func() time.Time // injected clock (default time.Now)
	Log        logr.Logger
}

// Authenticator authenticates requests as one jwt_authn filter configuration says.
type Authenticator struct {
	providers            []*provider // by name
	rules                []rule
	sanitizeHeaders      []string // headers only this filter may set: claim_to_headers, forward_payload_header
	bypassCORSPreflight  bool
	stripFailureResponse bool
	now                  func() time.Time
	log                  logr.Logger
}

type rule struct {
	match    *routeMatch
	requires requirement
}

// Error is a request that does not meet its JWT requirement: the local reply to send.
type Error struct {
	Status          int    // 401, or 403 for a valid token with none of the required audiences
	Reason          string // plain-text body; empty with strip_failure_response
	WWWAuthenticate string // value of the WWW-Authenticate header; empty with strip_failure_response
}

func (e *Error) Error() string {
	if e.Reason == "" {
		return fmt.Sprintf("jwt authentication failed (%d)", e.Status)
	}
	return fmt.Sprintf("jwt authentication failed (%d): %s", e.Status, e.Reason)
}

// ProviderStatus describes one provider and its keys, for the admin endpoint.
type ProviderStatus struct {
	Provider   string    `json:"provider"`
	Issuer     string    `json:"issuer,omitempty"`
	JWKSSource string    `json:"jwksSource"` // "inline", "file:<path>", "env:<name>" or the remote URI
	KeysLoaded int       `json:"keysLoaded"`
	LastFetch  time.Time `json:"lastFetch,omitzero"` // remote only
	LastError  string    `json:"lastError,omitempty"`
}

// Compile checks a JwtAuthentication and builds its Authenticator. Remote JWKS are fetched in the
// background from here on; Close stops that. An error names what is wrong or not supported (the
// caller NACKs the configuration and keeps its last good one).
func Compile(cfg *jwtv3.JwtAuthentication, opts Options) (*Authenticator, error) {
	if cfg == nil {
		return nil, errors.New("jwt_authn: no configuration")
	}
	if err := cfg.ValidateAll(); err != nil {
		return nil, fmt.Errorf("jwt_authn: %w", err)
	}
	if cfg.GetFilterStateRules() != nil {
		return nil, errors.New("jwt_authn: filter_state_rules is not supported")
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: 5 * time.Second}
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}

	a := &Authenticator{
		bypassCORSPreflight:  cfg.GetBypassCorsPreflight(),
		stripFailureResponse: cfg.GetStripFailureResponse(),
		now:                  opts.Now,
		log:                  opts.Log,
	}
	compiler := &requirementCompiler{providers: map[string]*provider{}}
	names := make([]string, 0, len(cfg.GetProviders()))
	for name := range cfg.GetProviders() {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		p, err := compileProvider(name, cfg.GetProviders()[name], opts)
		if err != nil {
			return nil, fmt.Errorf("jwt_authn: provider %q: %w", name, err)
		}
		a.providers = append(a.providers, p)
		compiler.providers[name] = p
		for _, c := range p.claimToHeaders {
			a.sanitizeHeaders = append(a.sanitizeHeaders, c.header)
		}
		if p.forwardPayloadHeader != "" {
			a.sanitizeHeaders = append(a.sanitizeHeaders, p.forwardPayloadHeader)
		}
	}
	compiler.allProviders = sourcesOf(a.providers...)

	named := map[string]requirement{}
	for name, req := range cfg.GetRequirementMap() {
		compiled, err := compiler.compile(req)
		if err != nil {
			return nil, fmt.Errorf("jwt_authn: requirement_map[%q]: %w", name, err)
		}
		named[name] = compiled
	}
	for i, r := range cfg.GetRules() {
		match, err := compileRouteMatch(r.GetMatch())
		if err != nil {
			return nil, fmt.Errorf("jwt_authn: rules[%d]: %w", i, err)
		}
		var requires requirement = allowAll{}
		switch spec := r.GetRequirementType().(type) {
		case *jwtv3.RequirementRule_Requires:
			if requires, err = compiler.compile(spec.Requires); err != nil {
				return nil, fmt.Errorf("jwt_authn: rules[%d].requires: %w", i, err)
			}
		case *jwtv3.RequirementRule_RequirementName:
			var ok bool
			if requires, ok = named[spec.RequirementName]; !ok {
				return nil, fmt.Errorf("jwt_authn: rules[%d]: requirement_name %q is not in requirement_map", i, spec.RequirementName)
			}
		}
		a.rules = append(a.rules, rule{match: match, requires: requires})
	}

	for _, p := range a.providers {
		if p.remote != nil {
			p.remote.start()
		}
	}
	return a, nil
}

// Authenticate applies the first rule whose match selects r. It returns the dynamic metadata of
// the verified tokens (payload_in_metadata key -> the token's claims, JSON-decoded, nested objects
// kept nested), or an *Error when the rule's requirement is not met. When it is met, verified
// tokens are removed from r (unless their provider forwards them) and claim headers are set.
// A request no rule selects passes with no metadata.
func (a *Authenticator) Authenticate(ctx context.Context, r *http.Request) (map[string]any, error) {
	// Headers this filter writes must never come from the client, even where nothing is verified.
	for _, h := range a.sanitizeHeaders {
		r.Header.Del(h)
	}
	if a.bypassCORSPreflight && isCORSPreflight(r) {
		return nil, nil
	}
	var requires requirement
	for _, rule := range a.rules {
		if rule.match.matches(r) {
			requires = rule.requires
			break
		}
	}
	if requires == nil {
		return nil, nil
	}

	v := &verification{ctx: ctx, r: r, now: a.now()}
	if f := requires.check(v); f != nil {
		a.log.V(1).Info("JWT authentication failed", "path", r.URL.Path, "reason", f.reason)
		return nil, a.errorFor(r, f)
	}
	v.apply()
	return v.metadata, nil
}

// errorFor builds the local reply as Envoy does: the reason as body and a WWW-Authenticate
// challenge whose realm is the request URI, with error="invalid_token" when a token was present.
func (a *Authenticator) errorFor(r *http.Request, f *failure) *Error {
	status := http.StatusUnauthorized
	if f.kind == forbidden {
		status = http.StatusForbidden
	}
	if a.stripFailureResponse {
		return &Error{Status: status}
	}
	challenge := `Bearer realm="` + quoteEscape(realm(r)) + `"`
	if f.kind != missingToken {
		challenge += `, error="invalid_token"`
	}
	return &Error{Status: status, Reason: f.reason, WWWAuthenticate: challenge}
}

// maxRealmPathLength bounds the path in a realm, as Envoy does.
const maxRealmPathLength = 256

func realm(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	path := requestPath(r)
	if len(path) > maxRealmPathLength {
		path = path[:maxRealmPathLength]
	}
	return scheme + "://" + r.Host + path
}

// quoteEscape makes s safe inside a quoted-string (RFC 9110 §5.6.4).
func quoteEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s)
}

func isCORSPreflight(r *http.Request) bool {
	return r.Method == http.MethodOptions && r.Header.Get("Origin") != "" &&
		r.Header.Get("Access-Control-Request-Method") != ""
}

// Close stops the background JWKS refreshers. Authenticate keeps working with the keys it has.
func (a *Authenticator) Close() {
	for _, p := range a.providers {
		if p.remote != nil {
			p.remote.stop()
		}
	}
}

// Status describes every provider and its keys, by provider name.
func (a *Authenticator) Status() []ProviderStatus {
	out := make([]ProviderStatus, 0, len(a.providers))
	for _, p := range a.providers {
		s := ProviderStatus{Provider: p.name, Issuer: p.issuer, JWKSSource: p.jwksSource, KeysLoaded: p.localKeys.size()}
		if p.remote != nil {
			s.KeysLoaded, s.LastFetch, s.LastError = p.remote.status()
		}
		out = append(out, s)
	}
	return out
}

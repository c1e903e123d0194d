package jwt

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
)

// failureKind orders why a requirement was not met; requires_any reports its most telling
// child: a rejected token over a token of an unknown issuer over no token at all (as Envoy).
type failureKind int

const (
	missingToken failureKind = iota
	unknownIssuer
	invalidToken
	forbidden // a valid token for the wrong audience: 403, like Envoy
)

type failure struct {
	kind   failureKind
	reason string
}

var errMissing = &failure{kind: missingToken, reason: "Jwt is missing"}

// requirement is a compiled JwtRequirement.
type requirement interface {
	check(v *verification) *failure
}

// allowAll is the empty requirement: nothing is verified.
type allowAll struct{}

func (allowAll) check(*verification) *failure { return nil }

// providerRequirement needs a token of one provider; every token found in that provider's
// locations must be valid, so that a backend cannot pick an unverified one of several.
type providerRequirement struct {
	sources   tokenSources
	audiences []string // overrides the provider's audiences when set
}

func (pr providerRequirement) check(v *verification) *failure {
	tokens := pr.sources.extract(v.r)
	if len(tokens) == 0 {
		return errMissing
	}
	for _, t := range tokens {
		if f := v.verify(t, pr.audiences); f != nil {
			return f
		}
	}
	return nil
}

// anyOf is requires_any: met when one child is met. allow_missing and allow_missing_or_failed
// among the children are flags on the outcome, not children.
type anyOf struct {
	children                  []requirement
	allowMissing, allowFailed bool
}

func (a anyOf) check(v *verification) *failure {
	var worst *failure
	for _, child := range a.children {
		f := child.check(v)
		if f == nil {
			return nil
		}
		if worst == nil || f.kind > worst.kind {
			worst = f
		}
	}
	if a.allowFailed || (a.allowMissing && worst.kind == missingToken) {
		return nil
	}
	return worst
}

// allOf is requires_all: every child must be met.
type allOf struct {
	children []requirement
}

func (a allOf) check(v *verification) *failure {
	for _, child := range a.children {
		if f := child.check(v); f != nil {
			return f
		}
	}
	return nil
}

// tolerant is allow_missing (allowFailed false) or allow_missing_or_failed over all providers: no
// token is fine; tokens present are verified against the provider of their issuer, and verified
// ones reach the metadata. With allow_missing, every token present must be valid.
type tolerant struct {
	sources     tokenSources
	allowFailed bool
}

func (t tolerant) check(v *verification) *failure {
	for _, token := range t.sources.extract(v.r) {
		if f := v.verify(token, nil); f != nil && !t.allowFailed {
			return f
		}
	}
	return nil
}

// tokenSources are the token locations of a set of providers, each with the providers that read
// it (several providers often share "Authorization: Bearer").
type tokenSources []tokenSource

type tokenSource struct {
	location  tokenLocation
	providers []*provider
}

func sourcesOf(providers ...*provider) tokenSources {
	var sources tokenSources
	index := map[tokenLocation]int{}
	for _, p := range providers {
		for _, loc := range p.locations {
			if i, seen := index[loc]; seen {
				sources[i].providers = append(sources[i].providers, p)
				continue
			}
			index[loc] = len(sources)
			sources = append(sources, tokenSource{location: loc, providers: []*provider{p}})
		}
	}
	return sources
}

// foundToken is a token taken from a request, and the providers that may have issued it.
type foundToken struct {
	value  string
	source *tokenSource
}

func (s tokenSources) extract(r *http.Request) []foundToken {
	var tokens []foundToken
	for i := range s {
		for _, value := range s[i].location.values(r) {
			tokens = append(tokens, foundToken{value: value, source: &s[i]})
		}
	}
	return tokens
}

// values are the tokens a request carries at this location.
func (l tokenLocation) values(r *http.Request) []string {
	switch {
	case l.header != "":
		var out []string
		for _, value := range r.Header[l.header] {
			// Authentication schemes are case-insensitive (RFC 9110), so is the prefix.
			if !hasPrefixFold(value, l.prefix) {
				continue
			}
			out = append(out, strings.TrimSpace(value[len(l.prefix):]))
		}
		return out
	case l.param != "":
		if values, ok := r.URL.Query()[l.param]; ok && len(values) > 0 {
			return values[:1]
		}
	case l.cookie != "":
		if c, err := r.Cookie(l.cookie); err == nil {
			return []string{c.Value}
		}
	}
	return nil
}

// providerFor picks the provider to verify a token of this issuer with: the one naming the
// issuer, else one that accepts any issuer.
func (t foundToken) providerFor(issuer string) *provider {
	for _, p := range t.source.providers {
		if p.issuer != "" && p.issuer == issuer {
			return p
		}
	}
	for _, p := range t.source.providers {
		if p.issuer == "" {
			return p
		}
	}
	return nil
}

// verification is the state of authenticating one request. The request is changed (token
// removed, claim headers set) only once its requirement is met, so one requirement's changes
// cannot hide a token from another.
type verification struct {
	ctx           context.Context
	r             *http.Request
	now           time.Time
	metadata      map[string]any
	removeHeaders []string
	removeParams  []string
	setHeaders    map[string]string
}

func (v *verification) verify(t foundToken, audiences []string) *failure {
	parsed, f := parseToken(t.value)
	if f != nil {
		return f
	}
	p := t.providerFor(parsed.claims.Issuer)
	if p == nil {
		return &failure{kind: unknownIssuer, reason: "Jwt issuer is not configured"}
	}
	if len(audiences) == 0 {
		audiences = p.audiences
	}
	if f := p.checkClaims(parsed, audiences, v.now); f != nil {
		return f
	}
	raw, payload, f := p.verifySignature(v.ctx, parsed)
	if f != nil {
		return f
	}

	if v.metadata == nil {
		v.metadata = map[string]any{}
	}
	v.metadata[p.metadataKey] = p.metadata(payload)
	if !p.forward {
		switch loc := t.source.location; {
		case loc.header != "":
			v.removeHeaders = append(v.removeHeaders, loc.header)
		case loc.param != "":
			v.removeParams = append(v.removeParams, loc.param)
		}
	}
	for header, value := range p.claimHeaders(payload, raw) {
		if v.setHeaders == nil {
			v.setHeaders = map[string]string{}
		}
		v.setHeaders[header] = value
	}
	return nil
}

// apply makes the changes of the verified tokens to the request.
func (v *verification) apply() {
	for _, h := range v.removeHeaders {
		v.r.Header.Del(h)
	}
	if len(v.removeParams) > 0 {
		query := v.r.URL.Query()
		for _, p := range v.removeParams {
			query.Del(p)
		}
		v.r.URL.RawQuery = query.Encode()
	}
	for h, value := range v.setHeaders {
		v.r.Header.Set(h, value)
	}
}

// requirementCompiler turns JwtRequirements into requirements over the compiled providers.
type requirementCompiler struct {
	providers    map[string]*provider
	allProviders tokenSources
}

func (c *requirementCompiler) compile(req *jwtv3.JwtRequirement) (requirement, error) {
	switch spec := req.GetRequiresType().(type) {
	case nil:
		return allowAll{}, nil
	case *jwtv3.JwtRequirement_ProviderName:
		p, err := c.provider(spec.ProviderName)
		if err != nil {
			return nil, err
		}
		return providerRequirement{sources: sourcesOf(p)}, nil
	case *jwtv3.JwtRequirement_ProviderAndAudiences:
		p, err := c.provider(spec.ProviderAndAudiences.GetProviderName())
		if err != nil {
			return nil, err
		}
		return providerRequirement{sources: sourcesOf(p), audiences: spec.ProviderAndAudiences.GetAudiences()}, nil
	case *jwtv3.JwtRequirement_RequiresAny:
		var either anyOf
		for _, child := range spec.RequiresAny.GetRequirements() {
			switch child.GetRequiresType().(type) {
			case *jwtv3.JwtRequirement_AllowMissing:
				either.allowMissing = true
			case *jwtv3.JwtRequirement_AllowMissingOrFailed:
				either.allowFailed = true
			default:
				compiled, err := c.compile(child)
				if err != nil {
					return nil, err
				}
				either.children = append(either.children, compiled)
			}
		}
		if len(either.children) == 0 {
			// Only allow_missing(_or_failed) children: tokens of any provider are still verified.
			either.children = []requirement{tolerant{sources: c.allProviders, allowFailed: either.allowFailed}}
		}
		return either, nil
	case *jwtv3.JwtRequirement_RequiresAll:
		var all allOf
		for _, child := range spec.RequiresAll.GetRequirements() {
			compiled, err := c.compile(child)
			if err != nil {
				return nil, err
			}
			all.children = append(all.children, compiled)
		}
		return all, nil
	case *jwtv3.JwtRequirement_AllowMissing:
		return tolerant{sources: c.allProviders}, nil
	case *jwtv3.JwtRequirement_AllowMissingOrFailed:
		return tolerant{sources: c.allProviders, allowFailed: true}, nil
	case *jwtv3.JwtRequirement_ExtractOnlyWithoutValidation:
		return nil, errors.New("extract_only_without_validation is not supported: the waypoint never trusts unverified claims")
	default:
		return nil, fmt.Errorf("requirement type %T is not supported", spec)
	}
}

func (c *requirementCompiler) provider(name string) (*provider, error) {
	p, ok := c.providers[name]
	if !ok {
		return nil, fmt.Errorf("requirement names provider %q, which is not configured", name)
	}
	return p, nil
}

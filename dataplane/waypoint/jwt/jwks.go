package jwt

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-logr/logr"
)

// allowedAlgorithms are the only "alg" values a token may carry: the asymmetric signature
// algorithms. "none" and the HMAC family (HS*) are refused while parsing, before any key is looked
// at, so a token cannot pick a symmetric verification with a public key as the secret.
var allowedAlgorithms = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512,
	jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512,
	jose.EdDSA,
}

// algorithmsForKey are the algorithms a public key can verify: RSA keys the RS and PS families,
// an EC key the one ES algorithm of its curve, an Ed25519 key EdDSA.
func algorithmsForKey(key any) []jose.SignatureAlgorithm {
	switch k := key.(type) {
	case *rsa.PublicKey:
		return []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512}
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return []jose.SignatureAlgorithm{jose.ES256}
		case elliptic.P384():
			return []jose.SignatureAlgorithm{jose.ES384}
		case elliptic.P521():
			return []jose.SignatureAlgorithm{jose.ES512}
		}
	case ed25519.PublicKey:
		return []jose.SignatureAlgorithm{jose.EdDSA}
	}
	return nil
}

// keySet is a parsed JWKS: only the asymmetric public signing keys of it.
type keySet struct {
	keys []jose.JSONWebKey
}

// maxJWKSBytes bounds a fetched JWKS document; real ones are a few kilobytes.
const maxJWKSBytes = 1 << 20

// parseJWKS reads a JWKS document. Keys that are not usable for verification (symmetric "oct"
// keys, encryption keys, unknown key types) are skipped, as Envoy does; a document with no usable
// key at all is an error.
func parseJWKS(data []byte) (*keySet, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("JWKS is not valid JSON: %w", err)
	}
	if doc.Keys == nil {
		return nil, errors.New(`JWKS has no "keys" array`)
	}
	set := &keySet{}
	var skipped []string
	for i, raw := range doc.Keys {
		var key jose.JSONWebKey
		if err := key.UnmarshalJSON(raw); err != nil {
			skipped = append(skipped, fmt.Sprintf("key %d: %v", i, err))
			continue
		}
		if _, symmetric := key.Key.([]byte); symmetric {
			skipped = append(skipped, fmt.Sprintf("key %d: symmetric (HMAC) keys are not supported", i))
			continue
		}
		if key.Use != "" && key.Use != "sig" {
			skipped = append(skipped, fmt.Sprintf("key %d: use %q is not \"sig\"", i, key.Use))
			continue
		}
		// A JWKS that carries private keys by mistake still only lends us their public halves.
		key = key.Public()
		if !key.Valid() || len(algorithmsForKey(key.Key)) == 0 {
			skipped = append(skipped, fmt.Sprintf("key %d: unsupported key type", i))
			continue
		}
		set.keys = append(set.keys, key)
	}
	if len(set.keys) == 0 {
		if len(skipped) > 0 {
			return nil, fmt.Errorf("JWKS has no usable public key (%v)", skipped)
		}
		return nil, errors.New("JWKS has no keys")
	}
	return set, nil
}

func (s *keySet) size() int {
	if s == nil {
		return 0
	}
	return len(s.keys)
}

func (s *keySet) hasKeyID(kid string) bool {
	return s != nil && slices.ContainsFunc(s.keys, func(k jose.JSONWebKey) bool { return k.KeyID == kid })
}

// candidates are the keys that may have signed a token with this kid and alg, following Envoy:
// a key with a different kid is skipped (a key without kid is tried), a key whose own "alg"
// differs is skipped, and the key type must be able to produce alg at all.
func (s *keySet) candidates(kid string, alg jose.SignatureAlgorithm) []jose.JSONWebKey {
	if s == nil {
		return nil
	}
	var out []jose.JSONWebKey
	for _, k := range s.keys {
		if kid != "" && k.KeyID != "" && k.KeyID != kid {
			continue
		}
		if k.Algorithm != "" && k.Algorithm != string(alg) {
			continue
		}
		if !slices.Contains(algorithmsForKey(k.Key), alg) {
			continue
		}
		out = append(out, k)
	}
	return out
}

// unknownKeyIDRefetchInterval limits refetches caused by tokens whose kid is not in the JWKS, so
// that a stream of tokens with made-up kids cannot turn the waypoint against the JWKS server.
const unknownKeyIDRefetchInterval = time.Minute

// remoteJWKS keeps the keys of one remote JWKS fresh: it fetches at start, again every cache
// duration, and on a token with an unknown kid (at most once per unknownKeyIDRefetchInterval).
// A failed fetch keeps the keys it had (stale-while-error) and records the error; failed fetches
// are retried with a doubling delay up to the cache duration.
type remoteJWKS struct {
	uri           string
	timeout       time.Duration // per fetch; 0 leaves it to the HTTP client
	cacheDuration time.Duration
	retryInterval time.Duration // first retry after a failed fetch
	client        *http.Client
	now           func() time.Time
	log           logr.Logger

	fetchMu sync.Mutex // one fetch at a time, so concurrent triggers share its result

	mu                sync.Mutex
	keys              *keySet
	lastFetch         time.Time
	lastErr           error
	lastKeyIDRefetch  time.Time
	firstFetchDone    chan struct{}
	stopRefresh       context.CancelFunc
	refresherFinished chan struct{}
}

func newRemoteJWKS(uri string, timeout, cacheDuration, retryInterval time.Duration, opts Options) *remoteJWKS {
	return &remoteJWKS{
		uri:               uri,
		timeout:           timeout,
		cacheDuration:     cacheDuration,
		retryInterval:     min(retryInterval, cacheDuration),
		client:            opts.HTTPClient,
		now:               opts.Now,
		log:               opts.Log.WithValues("jwks", uri),
		firstFetchDone:    make(chan struct{}),
		refresherFinished: make(chan struct{}),
	}
}

// start runs the background refresher until stop.
func (j *remoteJWKS) start() {
	ctx, cancel := context.WithCancel(context.Background())
	j.stopRefresh = cancel
	go j.refreshLoop(ctx)
}

func (j *remoteJWKS) stop() {
	j.stopRefresh()
	<-j.refresherFinished
}

func (j *remoteJWKS) refreshLoop(ctx context.Context) {
	defer close(j.refresherFinished)
	retry := j.retryInterval
	for first := true; ; first = false {
		err := j.refresh(ctx)
		if first {
			close(j.firstFetchDone)
		}
		wait := j.cacheDuration
		if err != nil {
			wait = retry
			retry = min(2*retry, j.cacheDuration)
		} else {
			retry = j.retryInterval
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
	}
}

// current returns the keys, waiting for the first fetch when it has not finished yet (Envoy also
// holds requests until the JWKS arrives).
func (j *remoteJWKS) current(ctx context.Context) (*keySet, error) {
	select {
	case <-j.firstFetchDone:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.keys == nil {
		return nil, j.lastErr
	}
	return j.keys, nil
}

// refetchForKeyID fetches the JWKS again because a token names a kid the keys do not have (the
// issuer may have rotated its keys), unless that was done within unknownKeyIDRefetchInterval.
func (j *remoteJWKS) refetchForKeyID(ctx context.Context, kid string) *keySet {
	j.fetchMu.Lock()
	defer j.fetchMu.Unlock()
	j.mu.Lock()
	// Another request may have fetched the key while this one waited for fetchMu.
	recentlyRefetched := !j.lastKeyIDRefetch.IsZero() && j.now().Sub(j.lastKeyIDRefetch) < unknownKeyIDRefetchInterval
	if j.keys.hasKeyID(kid) || recentlyRefetched {
		keys := j.keys
		j.mu.Unlock()
		return keys
	}
	j.lastKeyIDRefetch = j.now()
	j.mu.Unlock()

	j.log.V(1).Info("refetching JWKS for an unknown key id", "kid", kid)
	// The fetch serves every later request too: one impatient client must not cancel it.
	_ = j.fetchLocked(context.WithoutCancel(ctx))
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.keys
}

func (j *remoteJWKS) refresh(ctx context.Context) error {
	j.fetchMu.Lock()
	defer j.fetchMu.Unlock()
	return j.fetchLocked(ctx)
}

// fetchLocked downloads the JWKS and, on success, replaces the keys. Caller holds fetchMu.
func (j *remoteJWKS) fetchLocked(ctx context.Context) error {
	keys, err := j.download(ctx)
	j.mu.Lock()
	hadKeys := j.keys != nil
	j.lastFetch = j.now()
	j.lastErr = err
	if err == nil {
		j.keys = keys
	}
	j.mu.Unlock()
	switch {
	case err == nil:
		j.log.V(1).Info("fetched JWKS", "keys", keys.size())
	case hadKeys:
		j.log.Error(err, "JWKS refresh failed; keeping the keys fetched before")
	default:
		j.log.Error(err, "JWKS fetch failed; tokens of this provider cannot be verified yet")
	}
	return err
}

func (j *remoteJWKS) download(ctx context.Context) (*keySet, error) {
	if j.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, j.timeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.uri, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := j.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("JWKS server answered %s", resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading JWKS: %w", err)
	}
	if len(body) > maxJWKSBytes {
		return nil, fmt.Errorf("JWKS is larger than %d bytes", maxJWKSBytes)
	}
	return parseJWKS(body)
}

// status reports the keys loaded and the last fetch for the admin endpoint.
func (j *remoteJWKS) status() (keys int, lastFetch time.Time, lastErr string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.lastErr != nil {
		lastErr = j.lastErr.Error()
	}
	return j.keys.size(), j.lastFetch, lastErr
}

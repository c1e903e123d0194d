package localmesh

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// TokenIssuer stands in for an identity provider: an ES256 key whose
// public half a MeshPolicy's jwt.jwks carries inline.
type TokenIssuer struct {
	Issuer string
	key    *ecdsa.PrivateKey
}

// NewTokenIssuer makes an issuer with a fresh key.
func NewTokenIssuer(issuer string) (*TokenIssuer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	return &TokenIssuer{Issuer: issuer, key: key}, nil
}

// JWKS is the issuer's public key set as JSON ({"keys": [...]}).
func (t *TokenIssuer) JWKS() (string, error) {
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &t.key.PublicKey, KeyID: "demo", Algorithm: string(jose.ES256), Use: "sig"}}}
	data, err := json.Marshal(set)
	return string(data), err
}

// Token signs a token for subject with extra claims, valid for an hour.
func (t *TokenIssuer) Token(subject string, claims map[string]any) (string, error) {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: t.key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "demo"))
	if err != nil {
		return "", err
	}
	now := time.Now()
	std := jwt.Claims{Issuer: t.Issuer, Subject: subject, IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(time.Hour))}
	return jwt.Signed(signer).Claims(std).Claims(claims).Serialize()
}

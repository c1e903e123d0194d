package jwt

import (
	"context"
	"errors"
	"net/url"
	"testing"
)

// FuzzAuthenticate feeds arbitrary token strings, in the header and in the query, to providers
// with RSA and EC keys: Authenticate must never panic, and must answer either success or an
// *Error with a reason.
func FuzzAuthenticate(f *testing.F) {
	fx := newFixture(f)
	a := compile(f, fx.cfg, newClock())
	valid := fx.rsaKey.sign(f, claims(rsaIssuer, nil))
	for _, seed := range []string{
		valid, valid + "x", fx.ecKey.sign(f, claims(ecIssuer, nil)), "", ".", "..", "a.b.c",
		"eyJhbGciOiJub25lIn0.e30.", "eyJhbGciOiJIUzI1NiJ9.e30.c2ln", "eyJhbGciOiJSUzI1NiIsImNyaXQiOlsieCJdfQ.e30.AA",
	} {
		f.Add(seed, "/orders")
		f.Add(seed, "/either")
	}
	f.Fuzz(func(t *testing.T, token, path string) {
		for _, r := range []struct{ target, header string }{
			{"/orders", "Authorization: Bearer " + token},
			{"/" + url.PathEscape(path) + "?access_token=" + url.QueryEscape(token), ""},
			{"/tolerant", "X-Ec-Token: Token " + token},
		} {
			req := request(r.target)
			if r.header != "" {
				req = request(r.target, r.header)
			}
			md, err := a.Authenticate(context.Background(), req)
			if err == nil {
				continue
			}
			var authErr *Error
			if !errors.As(err, &authErr) || (authErr.Status != 401 && authErr.Status != 403) || authErr.Reason == "" {
				t.Fatalf("Authenticate(%q) = %v, want an *Error with 401/403 and a reason", token, err)
			}
			if md != nil {
				t.Fatalf("metadata %v with an error", md)
			}
		}
	})
}

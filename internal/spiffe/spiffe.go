// Package spiffe parses and formats the SPIFFE workload identities used by the
// mesh: spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>.
//
// Parsing is strict (it reads peer certificates, which are wire input): the
// trust domain follows the SPIFFE spec's character set, the namespace is a
// Kubernetes DNS-1123 label and the service account a DNS-1123 subdomain, and
// nothing else (port, user info, query, fragment, percent-encoding, extra path
// segments) is accepted.
package spiffe

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Scheme is the URI scheme of every SPIFFE ID.
const Scheme = "spiffe"

// maxIDLength is the SPIFFE spec's limit on the length of an ID in bytes.
const maxIDLength = 2048

// ID is a workload identity. It is comparable, so it can be a map key; the
// zero ID means "no identity".
type ID struct {
	TrustDomain    string
	Namespace      string
	ServiceAccount string
}

// New builds an ID from its parts, validating each.
func New(trustDomain, namespace, serviceAccount string) (ID, error) {
	id := ID{TrustDomain: trustDomain, Namespace: namespace, ServiceAccount: serviceAccount}
	if err := id.Validate(); err != nil {
		return ID{}, err
	}
	return id, nil
}

// MustNew is New for constants in tests and examples; it panics on a bad ID.
func MustNew(trustDomain, namespace, serviceAccount string) ID {
	id, err := New(trustDomain, namespace, serviceAccount)
	if err != nil {
		panic(err)
	}
	return id
}

// Parse parses "spiffe://<td>/ns/<ns>/sa/<sa>".
func Parse(s string) (ID, error) {
	if len(s) > maxIDLength {
		return ID{}, fmt.Errorf("spiffe: invalid ID: longer than %d bytes", maxIDLength)
	}
	rest, ok := strings.CutPrefix(s, Scheme+"://")
	if !ok {
		return ID{}, fmt.Errorf("spiffe: invalid ID %q: scheme must be %q", s, Scheme+"://")
	}
	td, path, ok := strings.Cut(rest, "/")
	if !ok {
		return ID{}, fmt.Errorf("spiffe: invalid ID %q: path: missing /ns/<namespace>/sa/<service-account>", s)
	}
	segs := strings.Split(path, "/")
	if len(segs) != 4 || segs[0] != "ns" || segs[2] != "sa" {
		return ID{}, fmt.Errorf("spiffe: invalid ID %q: path: want /ns/<namespace>/sa/<service-account>", s)
	}
	id := ID{TrustDomain: td, Namespace: segs[1], ServiceAccount: segs[3]}
	if err := id.Validate(); err != nil {
		return ID{}, fmt.Errorf("spiffe: invalid ID %q: %w", s, err)
	}
	return id, nil
}

// FromURI converts a certificate URI SAN into an ID.
func FromURI(u *url.URL) (ID, error) {
	if u == nil {
		return ID{}, errors.New("spiffe: invalid ID: nil URI")
	}
	if u.Opaque != "" || u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.RawPath != "" {
		return ID{}, fmt.Errorf("spiffe: invalid ID %q: only scheme, trust domain and path are allowed", u.String())
	}
	return Parse(u.String())
}

// String formats the ID as a URI; the zero ID formats as "".
func (id ID) String() string {
	if id.IsZero() {
		return ""
	}
	return Scheme + "://" + id.TrustDomain + "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount
}

// URI returns the ID as a URL, as put in a certificate's URI SANs.
func (id ID) URI() *url.URL {
	return &url.URL{Scheme: Scheme, Host: id.TrustDomain, Path: "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount}
}

// IsZero reports whether id is the zero ID.
func (id ID) IsZero() bool { return id == ID{} }

// Validate checks every part and names the first bad field.
func (id ID) Validate() error {
	if err := ValidateTrustDomain(id.TrustDomain); err != nil {
		return err
	}
	if err := validateLabel(id.Namespace); err != nil {
		return fmt.Errorf("namespace: %w", err)
	}
	if err := validateSubdomain(id.ServiceAccount); err != nil {
		return fmt.Errorf("service account: %w", err)
	}
	return nil
}

// ValidateTrustDomain checks a trust domain name: lowercase letters, digits,
// '.', '-' and '_' (the SPIFFE spec's set), at most 255 bytes.
func ValidateTrustDomain(td string) error {
	if td == "" {
		return errors.New("trust domain: must not be empty")
	}
	if len(td) > 255 {
		return errors.New("trust domain: longer than 255 bytes")
	}
	for i := 0; i < len(td); i++ {
		c := td[i]
		if !isLowerAlnum(c) && c != '.' && c != '-' && c != '_' {
			return fmt.Errorf("trust domain: invalid character %q at %d (allowed: a-z 0-9 . - _)", c, i)
		}
	}
	return nil
}

// validateLabel checks a Kubernetes namespace name (RFC 1123 label).
func validateLabel(s string) error {
	if s == "" {
		return errors.New("must not be empty")
	}
	if len(s) > 63 {
		return errors.New("longer than 63 characters")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isLowerAlnum(c) && c != '-' {
			return fmt.Errorf("invalid character %q at %d (allowed: a-z 0-9 -)", c, i)
		}
	}
	if s[0] == '-' || s[len(s)-1] == '-' {
		return errors.New("must start and end with a letter or digit")
	}
	return nil
}

// validateSubdomain checks a Kubernetes service account name (RFC 1123 subdomain).
func validateSubdomain(s string) error {
	if s == "" {
		return errors.New("must not be empty")
	}
	if len(s) > 253 {
		return errors.New("longer than 253 characters")
	}
	for _, label := range strings.Split(s, ".") {
		if err := validateLabel(label); err != nil {
			return fmt.Errorf("label %q: %w", label, err)
		}
	}
	return nil
}

func isLowerAlnum(c byte) bool { return ('a' <= c && c <= 'z') || ('0' <= c && c <= '9') }

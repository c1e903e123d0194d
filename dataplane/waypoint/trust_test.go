package waypoint

import (
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/ambientmesh/ambient-operator/dataplane/waypoint/jwt"
	"github.com/ambientmesh/ambient-operator/dataplane/waypoint/upstream"
	"github.com/ambientmesh/ambient-operator/internal/testca"
)

func trustedCA(name string, source *corev3.DataSource) *tlsv3.Secret {
	return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{TrustedCa: source}}}
}

func inlineBytes(b string) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: []byte(b)}}
}

func TestRootCASecret(t *testing.T) {
	a, b := testca.New(t), testca.New(t)
	withSANMatcher := trustedCA(RootCASecret, inlineBytes(a.PEM))
	withSANMatcher.GetValidationContext().MatchTypedSubjectAltNames = []*tlsv3.SubjectAltNameMatcher{{
		SanType: tlsv3.SubjectAltNameMatcher_URI,
		Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "spiffe://cluster.local/ns/shop/sa/web"}},
	}}
	for _, tc := range []struct {
		name   string
		secret *tlsv3.Secret
		nack   string // "" accepts
		trusts []*testca.CA
	}{
		{"roots inline, PEM bytes", trustedCA(RootCASecret, inlineBytes(b.PEM+a.PEM)), "", []*testca.CA{a, b}},
		{"roots inline, a string with text around the PEM", trustedCA(RootCASecret,
			&corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "# root A\n" + a.PEM + "trailing text\n"}}), "", []*testca.CA{a}},
		{"a Secret of another name is not the bundle", trustedCA("spiffe://cluster.local", inlineBytes(b.PEM)), "", []*testca.CA{a}},
		{"a certificate, not a validation context", &tlsv3.Secret{Name: RootCASecret, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{}}},
			"want a validation_context", nil},
		{"roots in a file the waypoint would have to read", trustedCA(RootCASecret,
			&corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: "/etc/ssl/root.pem"}}), "want the roots inline", nil},
		{"no roots at all", trustedCA(RootCASecret, nil), "want the roots inline", nil},
		{"a data source without a value", trustedCA(RootCASecret, &corev3.DataSource{}), "Specifier", nil},
		{"no PEM certificate", trustedCA(RootCASecret, inlineBytes("not a certificate")), "no PEM certificate", nil},
		{"a PEM block that is not a certificate", trustedCA(RootCASecret,
			inlineBytes("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")), "certificate 1", nil},
		{"a check the waypoint would not enforce", withSANMatcher, "only trusted_ca is supported", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(upstream.NewSet(upstream.Options{}), jwt.Options{}, logr.Discard())
			if err := s.Apply(resourcev3.SecretType, map[string]*anypb.Any{RootCASecret: mustAny(t, trustedCA(RootCASecret, inlineBytes(a.PEM)))}, nil); err != nil {
				t.Fatalf("ROOTCA with root A: %v", err)
			}
			before := s.snapshot()
			err := s.Apply(resourcev3.SecretType, map[string]*anypb.Any{tc.secret.GetName(): mustAny(t, tc.secret)}, nil)
			if tc.nack != "" {
				if err == nil || !strings.Contains(err.Error(), tc.nack) {
					t.Fatalf("Apply = %v, want a NACK mentioning %q", err, tc.nack)
				}
				if s.snapshot() != before {
					t.Fatal("a NACKed Secret changed the trust bundle")
				}
				return
			}
			if err != nil {
				t.Fatalf("NACKed: %v", err)
			}
			want := tc.trusts[0].Pool()
			for _, ca := range tc.trusts[1:] {
				want.AddCert(ca.Cert)
			}
			if !s.snapshot().trustRoots.Equal(want) {
				t.Fatalf("the waypoint does not trust exactly the %d roots of the bundle", len(tc.trusts))
			}
		})
	}
}

func TestRemovedROOTCALeavesTheCertificateRoots(t *testing.T) {
	s := newStore(upstream.NewSet(upstream.Options{}), jwt.Options{}, logr.Discard())
	if err := s.Apply(resourcev3.SecretType, map[string]*anypb.Any{RootCASecret: mustAny(t, trustedCA(RootCASecret, inlineBytes(testca.New(t).PEM)))}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(resourcev3.SecretType, nil, []string{RootCASecret}); err != nil {
		t.Fatal(err)
	}
	if s.snapshot().trustRoots != nil {
		t.Fatal("the removed ROOTCA's roots are still trusted")
	}
}

// FuzzApplyRootCA feeds arbitrary Secrets (wire bytes) and arbitrary trusted_ca bytes to
// the store: it must never panic, and a NACKed Secret must leave the trust bundle as it was.
func FuzzApplyRootCA(f *testing.F) {
	ca := testca.New(f)
	seed, err := proto.Marshal(trustedCA(RootCASecret, inlineBytes(ca.PEM)))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed, []byte(ca.PEM))
	f.Add([]byte{}, []byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, wire, bundle []byte) {
		s := newStore(upstream.NewSet(upstream.Options{}), jwt.Options{}, logr.Discard())
		if err := s.Apply(resourcev3.SecretType, map[string]*anypb.Any{RootCASecret: mustAny(t, trustedCA(RootCASecret, inlineBytes(ca.PEM)))}, nil); err != nil {
			t.Fatalf("the seed ROOTCA is rejected: %v", err)
		}
		secret := &tlsv3.Secret{}
		if proto.Unmarshal(wire, secret) != nil {
			secret = trustedCA(RootCASecret, inlineBytes(string(bundle)))
		}
		before := s.snapshot()
		if err := s.Apply(resourcev3.SecretType, map[string]*anypb.Any{RootCASecret: mustAny(t, secret)}, nil); err != nil {
			if s.snapshot() != before {
				t.Fatal("a NACKed Secret changed the trust bundle")
			}
			return
		}
		if s.snapshot().trustRoots == nil {
			t.Fatal("an accepted ROOTCA left the waypoint without roots")
		}
	})
}

package identity

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/internal/meshscheme"
)

const ztunnelSA = "system:serviceaccount:ambient-system:ztunnel"

// tokens are what the fake API server's TokenReview knows: token → the user it names.
type tokens map[string]authnv1.UserInfo

// testCA is a CA on a fake API server holding pods; its TokenReviews answer from tokens
// and are counted.
func testCA(t *testing.T, known tokens, limits CAOptions, pods ...*corev1.Pod) (*CA, *int) {
	t.Helper()
	reviews := 0
	b := fake.NewClientBuilder().WithScheme(meshscheme.New())
	for _, p := range pods {
		b = b.WithObjects(p)
	}
	c := b.WithInterceptorFuncs(interceptor.Funcs{
		Create: func(ctx context.Context, cl client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			review, ok := obj.(*authnv1.TokenReview)
			if !ok {
				return cl.Create(ctx, obj, opts...)
			}
			reviews++
			if user, ok := known[review.Spec.Token]; ok {
				review.Status = authnv1.TokenReviewStatus{Authenticated: true, User: user, Audiences: review.Spec.Audiences}
			}
			return nil
		},
	}).Build()
	limits.TrustDomain, limits.Audience, limits.NodeAgents = "cluster.local", pb.CATokenAudience, []string{"ambient-system/ztunnel"}
	return NewCA(limits, c, c, "", nil, nil, logr.Discard()), &reviews
}

func pod(name, uid, node string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ambient-system", Name: name, UID: types.UID("uid-" + uid)},
		Spec: corev1.PodSpec{NodeName: node, ServiceAccountName: "ztunnel"}}
}

// boundTo is the user of a token bound to a pod on a node.
func boundTo(username, podName, podUID, node string) authnv1.UserInfo {
	return authnv1.UserInfo{Username: username, Extra: map[string]authnv1.ExtraValue{
		extraPodName: {podName}, extraPodUID: {podUID}, extraNodeName: {node}}}
}

// leaf is a client certificate with the given URI SANs: what the interceptor reads of
// it, and distinct bytes for each.
func leaf(t *testing.T, uris ...string) *x509.Certificate {
	c := &x509.Certificate{Raw: []byte(rand.Text()), NotAfter: time.Now().Add(time.Hour)}
	for _, u := range uris {
		parsed, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		c.URIs = append(c.URIs, parsed)
	}
	return c
}

// incoming is a stream's context: from addr, with a verified client certificate when
// cert is set and a bearer token when token is.
func incoming(addr string, cert *x509.Certificate, token string) context.Context {
	p := &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP(addr), Port: 40000}}
	if cert != nil {
		p.AuthInfo = credentials.TLSInfo{State: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{cert}}}}
	}
	ctx := peer.NewContext(context.Background(), p)
	if token != "" {
		ctx = metadata.NewIncomingContext(ctx, metadata.Pairs(pb.AuthorizationMetadataKey, pb.BearerPrefix+token))
	}
	return ctx
}

type fakeStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s fakeStream) Context() context.Context { return s.ctx }

// openXDS runs the interceptor on a stream with ctx and returns who the handler saw.
func openXDS(ca *CA, ctx context.Context) (Caller, error) {
	var who Caller
	err := ca.XDSStreamInterceptor()(nil, fakeStream{ctx: ctx}, &grpc.StreamServerInfo{}, func(_ any, ss grpc.ServerStream) error {
		var ok bool
		if who, ok = XDSCaller(ss.Context()); !ok {
			return status.Error(codes.Internal, "the handler got no caller")
		}
		return nil
	})
	return who, err
}

func TestXDSStreamAuthentication(t *testing.T) {
	ztunnelID := "spiffe://cluster.local/ns/ambient-system/sa/ztunnel"
	issued := leaf(t, ztunnelID)
	for _, tc := range []struct {
		name        string
		cert        *x509.Certificate
		token       string
		want        Caller
		wantCode    codes.Code
		wantReason  string
		wantReviews int
	}{
		{name: "certificate the CA issued to a ztunnel pod: its node, no TokenReview", cert: issued,
			want: Caller{Namespace: "ambient-system", ServiceAccount: "ztunnel", Node: "node-a"}},
		{name: "ztunnel certificate issued elsewhere, with a token bound to its pod", cert: leaf(t, ztunnelID), token: "ztunnel-b",
			want: Caller{Namespace: "ambient-system", ServiceAccount: "ztunnel", Node: "node-b"}, wantReviews: 1},
		{name: "ztunnel certificate issued elsewhere, no token: bound to no node", cert: leaf(t, ztunnelID),
			want: Caller{Namespace: "ambient-system", ServiceAccount: "ztunnel"}},
		{name: "certificate and token of different service accounts", cert: leaf(t, ztunnelID), token: "web",
			wantCode: codes.Unauthenticated, wantReason: "names ambient-system/ztunnel but the token shop/web", wantReviews: 1},
		{name: "waypoint certificate", cert: leaf(t, "spiffe://cluster.local/ns/shop/sa/wp"),
			want: Caller{Namespace: "shop", ServiceAccount: "wp"}},
		{name: "certificate of another trust domain", cert: leaf(t, "spiffe://other.example/ns/shop/sa/wp"),
			wantCode: codes.Unauthenticated, wantReason: "trust domain"},
		{name: "certificate without a SPIFFE id", cert: leaf(t), wantCode: codes.Unauthenticated, wantReason: "exactly one URI SAN"},
		{name: "token bound to a ztunnel pod", token: "ztunnel-b",
			want: Caller{Namespace: "ambient-system", ServiceAccount: "ztunnel", Node: "node-b"}, wantReviews: 1},
		{name: "unknown token", token: "forged", wantCode: codes.Unauthenticated, wantReason: "token rejected", wantReviews: 1},
		{name: "nothing", wantCode: codes.Unauthenticated, wantReason: "Bearer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ca, reviews := testCA(t, tokens{
				"ztunnel-b": boundTo(ztunnelSA, "ztunnel-b", "uid-b", "node-b"),
				"web":       {Username: "system:serviceaccount:shop:web"},
			}, CAOptions{}, pod("ztunnel-a", "a", "node-a"), pod("ztunnel-b", "b", "node-b"))
			ca.nodeAgentCerts.remember(issued, caller{namespace: "ambient-system", name: "ztunnel", podName: "ztunnel-a", podUID: "uid-a"})
			who, err := openXDS(ca, incoming("10.0.0.1", tc.cert, tc.token))
			if tc.wantCode != codes.OK {
				if status.Code(err) != tc.wantCode || !strings.Contains(err.Error(), tc.wantReason) {
					t.Fatalf("got %v, want %v mentioning %q", err, tc.wantCode, tc.wantReason)
				}
			} else if err != nil || who != tc.want {
				t.Fatalf("got %+v, %v; want %+v", who, err, tc.want)
			}
			if *reviews != tc.wantReviews {
				t.Fatalf("%d TokenReviews, want %d", *reviews, tc.wantReviews)
			}
		})
	}
}

func TestNodeAgentCertificateDiesWithItsPod(t *testing.T) {
	issued := leaf(t, "spiffe://cluster.local/ns/ambient-system/sa/ztunnel")
	replaced := pod("ztunnel-a", "a2", "node-a") // same name, new pod
	ca, _ := testCA(t, nil, CAOptions{}, replaced)
	ca.nodeAgentCerts.remember(issued, caller{namespace: "ambient-system", name: "ztunnel", podName: "ztunnel-a", podUID: "uid-a"})
	_, err := openXDS(ca, incoming("10.0.0.1", issued, ""))
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "replaced") {
		t.Fatalf("got %v, want Unauthenticated: the pod the certificate was issued to was replaced", err)
	}
}

func TestXDSStreamsRateLimitedPerCaller(t *testing.T) {
	ca, reviews := testCA(t, tokens{"ztunnel-b": boundTo(ztunnelSA, "ztunnel-b", "uid-b", "node-b")},
		CAOptions{XDSStreams: RateLimit{PerSecond: 0.001, Burst: 2}}, pod("ztunnel-b", "b", "node-b"))
	for i := range 2 {
		if _, err := openXDS(ca, incoming("10.0.0.1", nil, "ztunnel-b")); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
	}
	_, err := openXDS(ca, incoming("10.0.0.1", nil, "ztunnel-b"))
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "too many xDS streams from 10.0.0.1") {
		t.Fatalf("third stream: got %v, want ResourceExhausted naming the caller", err)
	}
	if *reviews != 2 {
		t.Fatalf("%d TokenReviews, want 2: a refused stream costs none", *reviews)
	}
	if _, err := openXDS(ca, incoming("10.0.0.2", nil, "ztunnel-b")); err != nil {
		t.Fatalf("another caller is limited separately: %v", err)
	}
	// A certificate names the caller: a waypoint next to an exhausted address is its own.
	if _, err := openXDS(ca, incoming("10.0.0.1", leaf(t, "spiffe://cluster.local/ns/shop/sa/wp"), "")); err != nil {
		t.Fatalf("a caller with a certificate is limited by its identity: %v", err)
	}
}

func TestCertificateRequestsRateLimitedPerAddress(t *testing.T) {
	ca, reviews := testCA(t, nil, CAOptions{CertificateRequests: RateLimit{PerSecond: 0.001, Burst: 1}})
	ask := func(addr string) error {
		_, err := ca.CreateCertificate(incoming(addr, nil, "forged"), &pb.CreateCertificateRequest{})
		return err
	}
	if err := ask("10.0.0.1"); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("first request: got %v, want it to reach the TokenReview", err)
	}
	err := ask("10.0.0.1")
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "too many certificate requests from 10.0.0.1") {
		t.Fatalf("second request: got %v, want ResourceExhausted", err)
	}
	if *reviews != 1 {
		t.Fatalf("%d TokenReviews, want 1: a refused request costs none", *reviews)
	}
	var m dto.Metric
	if err := ca.Requests().WithLabelValues("rate_limited").Write(&m); err != nil || m.GetCounter().GetValue() != 1 {
		t.Fatalf("rate_limited requests counted %v (%v), want 1", m.GetCounter().GetValue(), err)
	}
	if err := ask("10.0.0.2"); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("another address: got %v, want its own allowance", err)
	}
}

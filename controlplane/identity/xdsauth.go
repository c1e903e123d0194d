package identity

import (
	"context"
	"crypto/x509"
	"errors"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/internal/spiffe"
)

// Caller is who an xDS stream authenticated as (see XDSStreamInterceptor).
type Caller struct {
	Namespace, ServiceAccount string
	// Node is the Kubernetes node the caller's credentials are bound to: the node of the
	// pod its token is bound to, or of the pod the CA issued its certificate to; "" when
	// neither is known.
	Node string
}

// XDSStreamInterceptor admits an xDS stream that authenticates, and at most
// CAOptions.XDSStreams per caller (refused with ResourceExhausted). A caller
// authenticates with:
//   - a client certificate that TLS verified against the mesh roots, whose SPIFFE id (in
//     the mesh's trust domain) names its service account. When this CA issued it to a
//     node agent's pod, the stream is bound to that pod's node, as long as the pod
//     exists; a node agent's certificate this process did not issue is bound by the
//     token sent along (which must name the same service account), else to no node.
//   - otherwise a projected service-account token the API server accepts for the CA
//     audience (how a proxy without a certificate of its own authenticates, as Istio's
//     do with istiod), bound to the node of the pod it is bound to.
//
// XDSCaller tells the server who the stream's caller is.
func (ca *CA) XDSStreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx := ss.Context()
		// Before authentication: a token costs a TokenReview.
		if key := xdsCallerKey(ctx); !ca.streamRate.allow(key) {
			return status.Errorf(codes.ResourceExhausted, "too many xDS streams from %s: at most %d at once, then %g per second",
				key, ca.streamRate.limit.Burst, ca.streamRate.limit.PerSecond)
		}
		who, err := ca.authenticateXDS(ctx)
		if err != nil {
			ca.Log.Info("xDS stream refused", "peer", peerHost(ctx), "code", status.Code(err).String(), "reason", status.Convert(err).Message())
			return err
		}
		return handler(srv, &authenticatedStream{ServerStream: ss, ctx: context.WithValue(ctx, callerKey{}, who)})
	}
}

// xdsCallerKey names a caller for rate limiting: the SPIFFE id of its verified client
// certificate with its address (a bucket per proxy, not one for every ztunnel of the
// service account), else its address alone.
func xdsCallerKey(ctx context.Context) string {
	host := peerHost(ctx)
	if leaf, ok := verifiedLeaf(ctx); ok {
		if id, err := leafIdentity(leaf); err == nil {
			return id.String() + " at " + host
		}
	}
	return host
}

func (ca *CA) authenticateXDS(ctx context.Context) (caller, error) {
	leaf, ok := verifiedLeaf(ctx)
	if !ok {
		return ca.authenticate(ctx)
	}
	id, err := leafIdentity(leaf)
	if err != nil {
		return caller{}, status.Errorf(codes.Unauthenticated, "client certificate: %v", err)
	}
	if id.TrustDomain != ca.opts.TrustDomain {
		return caller{}, status.Errorf(codes.Unauthenticated, "client certificate of trust domain %q, not the mesh's %q", id.TrustDomain, ca.opts.TrustDomain)
	}
	who := caller{namespace: id.Namespace, name: id.ServiceAccount}
	if !ca.isNodeAgent(who) {
		return who, nil // only node agents are bound to a node
	}
	if to, ok := ca.nodeAgentCerts.lookup(leaf); ok {
		// Like a bound token, the certificate counts only while its pod lives.
		node, err := ca.nodeOfPod(ctx, to.namespace, to.pod, to.uid)
		if err != nil {
			return caller{}, err
		}
		who.podName, who.podUID, who.node = to.pod, to.uid, node
		return who, nil
	}
	if !hasBearerToken(ctx) {
		return who, nil
	}
	byToken, err := ca.authenticate(ctx)
	if err != nil {
		return caller{}, err
	}
	if byToken.namespace != who.namespace || byToken.name != who.name {
		return caller{}, status.Errorf(codes.Unauthenticated, "the client certificate names %s but the token %s", who, byToken)
	}
	return byToken, nil
}

type callerKey struct{}

// authenticatedStream carries the caller in its context.
type authenticatedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *authenticatedStream) Context() context.Context { return s.ctx }

// XDSCaller is who an xDS stream admitted by XDSStreamInterceptor authenticated as; ok is
// false for a stream it did not admit.
func XDSCaller(ctx context.Context) (Caller, bool) {
	who, ok := ctx.Value(callerKey{}).(caller)
	if !ok {
		return Caller{}, false
	}
	return Caller{Namespace: who.namespace, ServiceAccount: who.name, Node: who.node}, true
}

func hasBearerToken(ctx context.Context) bool {
	md, _ := metadata.FromIncomingContext(ctx)
	return len(md.Get(pb.AuthorizationMetadataKey)) > 0
}

// verifiedLeaf is the client certificate TLS verified against the mesh roots.
func verifiedLeaf(ctx context.Context) (*x509.Certificate, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, false
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return nil, false
	}
	return info.State.VerifiedChains[0][0], true
}

// leafIdentity is the SPIFFE id of a workload certificate: its one URI SAN.
func leafIdentity(leaf *x509.Certificate) (spiffe.ID, error) {
	if len(leaf.URIs) != 1 {
		return spiffe.ID{}, errors.New("want exactly one URI SAN, the SPIFFE id")
	}
	return spiffe.FromURI(leaf.URIs[0])
}

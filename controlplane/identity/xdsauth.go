package identity

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/ambientmesh/ambient-operator/internal/spiffe"
)

// XDSStreamInterceptor admits an xDS stream when its peer presented a client certificate
// that TLS verified against the mesh roots, or else a projected service-account token the
// API server accepts for the CA audience (how a ztunnel that has no certificate of its own
// yet authenticates, as Istio's ztunnel does with istiod). The token's service account is
// kept in the stream's context for XDSPeer.
func (ca *CA) XDSStreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if hasVerifiedClientCert(ss.Context()) {
			return handler(srv, ss)
		}
		who, err := ca.authenticate(ss.Context())
		if err != nil {
			return err
		}
		return handler(srv, &authenticatedStream{ServerStream: ss, ctx: context.WithValue(ss.Context(), callerKey{}, who)})
	}
}

type callerKey struct{}

// authenticatedStream carries the token's caller in its context.
type authenticatedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *authenticatedStream) Context() context.Context { return s.ctx }

// XDSPeer is who an xDS stream (admitted by XDSStreamInterceptor) authenticated as: the
// namespace and service account of its client certificate's SPIFFE id when that id is in
// trustDomain, or else of its token. ok is false for a stream authenticated neither way.
func XDSPeer(ctx context.Context, trustDomain string) (namespace, serviceAccount string, ok bool) {
	if id, ok := verifiedCertIdentity(ctx); ok {
		if id.TrustDomain != trustDomain {
			return "", "", false
		}
		return id.Namespace, id.ServiceAccount, true
	}
	if who, ok := ctx.Value(callerKey{}).(caller); ok {
		return who.namespace, who.name, true
	}
	return "", "", false
}

func hasVerifiedClientCert(ctx context.Context) bool {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return false
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	return ok && len(info.State.VerifiedChains) > 0
}

// verifiedCertIdentity is the SPIFFE id of the client certificate TLS verified against the
// mesh roots; ok is false without one, or when its SAN is not a mesh identity.
func verifiedCertIdentity(ctx context.Context) (spiffe.ID, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return spiffe.ID{}, false
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return spiffe.ID{}, false
	}
	leaf := info.State.VerifiedChains[0][0]
	if len(leaf.URIs) != 1 {
		return spiffe.ID{}, false
	}
	id, err := spiffe.FromURI(leaf.URIs[0])
	if err != nil {
		return spiffe.ID{}, false
	}
	return id, true
}

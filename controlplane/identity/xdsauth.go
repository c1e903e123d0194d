package identity

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// XDSStreamInterceptor admits an xDS stream when its peer presented a client certificate
// that TLS verified against the mesh roots, or else a projected service-account token the
// API server accepts for the CA audience (how a ztunnel that has no certificate of its own
// yet authenticates, as Istio's ztunnel does with istiod).
func (ca *CA) XDSStreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if hasVerifiedClientCert(ss) {
			return handler(srv, ss)
		}
		if _, err := ca.authenticate(ss.Context()); err != nil {
			return err
		}
		return handler(srv, ss)
	}
}

func hasVerifiedClientCert(ss grpc.ServerStream) bool {
	p, ok := peer.FromContext(ss.Context())
	if !ok {
		return false
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	return ok && len(info.State.VerifiedChains) > 0
}

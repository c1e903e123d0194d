// Package identity is the mesh's CA front end: the CertificateService that ztunnels and
// waypoints call, authenticated by their projected service-account tokens (TokenReview)
// and authorized node by node, signing through a cert-manager issuer. It also keeps the
// mesh's trust bundle across root CA rotations (TrustRoots).
package identity

import (
	"context"
	"crypto/x509"
	"slices"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/internal/spiffe"
)

// Keys of a bound service-account token's extra info in a TokenReview.
const (
	extraPodName  = "authentication.kubernetes.io/pod-name"
	extraPodUID   = "authentication.kubernetes.io/pod-uid"
	extraNodeName = "authentication.kubernetes.io/node-name"
)

// CAOptions configure the CertificateService.
type CAOptions struct {
	TrustDomain string
	// Audience the caller's token must carry (pb.CATokenAudience).
	Audience string
	// NodeAgents are the service accounts ("<namespace>/<name>", the ztunnel's) that may
	// ask for the identity of any service account with a pod on the node their token is
	// bound to. Every other caller may only ask for its own identity.
	NodeAgents []string
	// DefaultTTL, MinTTL, MaxTTL bound certificate lifetimes.
	DefaultTTL, MinTTL, MaxTTL time.Duration
	// Trust, when set, records each certificate under its roots before it is handed out
	// (see TrustRoots.Issued), and its bundle is added to the roots of every answer, so
	// that a waypoint, which trusts the roots of its answers, trusts a retiring root too.
	Trust *TrustRoots
	// CertificateRequests bounds the certificate requests of one caller, by its address:
	// each costs a TokenReview and, once authorized, a CertificateRequest. Zero values
	// take DefaultCertificateRateLimit.
	CertificateRequests RateLimit
	// XDSStreams bounds the xDS streams one caller opens (see XDSStreamInterceptor). Zero
	// values take DefaultXDSStreamRateLimit.
	XDSStreams RateLimit
}

// CA implements pb.CertificateServiceServer.
type CA struct {
	pb.UnimplementedCertificateServiceServer
	opts CAOptions
	// Client creates TokenReviews (a live client).
	Client client.Client
	// Pods reads pods from the cache, indexed by PodNodeIndex.
	Pods         client.Reader
	PodNodeIndex string
	Signer       *Signer
	Log          logr.Logger
	requests     *prometheus.CounterVec
	requestRate  *limiter
	streamRate   *limiter
	// nodeAgentCerts: which pod each certificate a node agent holds for its own identity
	// was issued to (see XDSStreamInterceptor).
	nodeAgentCerts *issuedCerts
}

// NewCA builds the service; reg (may be nil) receives its metrics.
func NewCA(opts CAOptions, c client.Client, pods client.Reader, podNodeIndex string, signer *Signer, reg prometheus.Registerer, log logr.Logger) *CA {
	ca := &CA{opts: opts, Client: c, Pods: pods, PodNodeIndex: podNodeIndex, Signer: signer, Log: log,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ambientmesh_ca_requests_total",
			Help: "Certificate requests by result: issued, or the reason they were refused (unauthenticated, forbidden, invalid, rate_limited, failed).",
		}, []string{"result"}),
		requestRate:    newLimiter(opts.CertificateRequests.orDefault(DefaultCertificateRateLimit), time.Now),
		streamRate:     newLimiter(opts.XDSStreams.orDefault(DefaultXDSStreamRateLimit), time.Now),
		nodeAgentCerts: newIssuedCerts(),
	}
	for _, r := range []string{"issued", "unauthenticated", "forbidden", "invalid", "rate_limited", "failed"} {
		ca.requests.WithLabelValues(r) // export zeros so refusals show up before the first one
	}
	if reg != nil {
		reg.MustRegister(ca.requests)
	}
	return ca
}

// Requests returns the metric, for tests.
func (ca *CA) Requests() *prometheus.CounterVec { return ca.requests }

// caller is an authenticated service account, and the pod and node its credentials are
// bound to when they are.
type caller struct {
	namespace, name string
	podName, podUID string
	node            string
}

func (c caller) String() string { return c.namespace + "/" + c.name }

// CreateCertificate authenticates the caller, checks it may hold the requested identity,
// validates the CSR and has the issuer sign it.
func (ca *CA) CreateCertificate(ctx context.Context, req *pb.CreateCertificateRequest) (*pb.CreateCertificateResponse, error) {
	resp, err := ca.create(ctx, req)
	result := "issued"
	if err != nil {
		result = resultOf(status.Code(err))
		ca.Log.Info("certificate request refused", "identity", req.GetImpersonatedIdentity(), "code", status.Code(err).String(), "reason", status.Convert(err).Message())
	}
	ca.requests.WithLabelValues(result).Inc()
	return resp, err
}

func resultOf(code codes.Code) string {
	switch code {
	case codes.Unauthenticated:
		return "unauthenticated"
	case codes.PermissionDenied:
		return "forbidden"
	case codes.InvalidArgument:
		return "invalid"
	case codes.ResourceExhausted:
		return "rate_limited"
	default:
		return "failed"
	}
}

func (ca *CA) create(ctx context.Context, req *pb.CreateCertificateRequest) (*pb.CreateCertificateResponse, error) {
	// Before the TokenReview: that is the first cost a caller imposes.
	if host := peerHost(ctx); !ca.requestRate.allow(host) {
		return nil, status.Errorf(codes.ResourceExhausted, "too many certificate requests from %s: at most %d at once, then %g per second",
			host, ca.requestRate.limit.Burst, ca.requestRate.limit.PerSecond)
	}
	who, err := ca.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	id, err := spiffe.Parse(req.GetImpersonatedIdentity())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "impersonated_identity: %v", err)
	}
	if id.TrustDomain != ca.opts.TrustDomain {
		return nil, status.Errorf(codes.PermissionDenied, "impersonated_identity: trust domain %q is not the mesh's %q", id.TrustDomain, ca.opts.TrustDomain)
	}
	if err := ca.authorize(ctx, who, id); err != nil {
		return nil, err
	}
	if _, err := ValidateCSR([]byte(req.GetCsr()), id); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	ttl := ClampTTL(time.Duration(req.GetValiditySeconds())*time.Second, ca.opts.DefaultTTL, ca.opts.MinTTL, ca.opts.MaxTTL)
	signed, err := ca.Signer.Sign(ctx, []byte(req.GetCsr()), ttl, id.String())
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "signing %s: %v", id, err)
	}
	resp, leaf, err := ca.response(ctx, signed)
	if err == nil && ca.isNodeAgent(who) && id.Namespace == who.namespace && id.ServiceAccount == who.name && who.podName != "" {
		// A ztunnel's own certificate: its xDS stream will present it.
		ca.nodeAgentCerts.remember(leaf, who)
	}
	return resp, err
}

func (ca *CA) isNodeAgent(who caller) bool {
	return slices.Contains(ca.opts.NodeAgents, who.String())
}

// authenticate validates the bearer token with a TokenReview for the CA's audience.
func (ca *CA) authenticate(ctx context.Context) (caller, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	values := md.Get(pb.AuthorizationMetadataKey)
	if len(values) != 1 || !strings.HasPrefix(values[0], pb.BearerPrefix) {
		return caller{}, status.Error(codes.Unauthenticated, `missing "authorization: Bearer <projected service-account token>" metadata`)
	}
	review := &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{
		Token:     strings.TrimPrefix(values[0], pb.BearerPrefix),
		Audiences: []string{ca.opts.Audience},
	}}
	if err := ca.Client.Create(ctx, review); err != nil {
		return caller{}, status.Errorf(codes.Unavailable, "TokenReview: %v", err)
	}
	st := review.Status
	if !st.Authenticated {
		msg := st.Error
		if msg == "" {
			msg = "token not authenticated"
		}
		return caller{}, status.Errorf(codes.Unauthenticated, "token rejected by the API server (audience %q): %s", ca.opts.Audience, msg)
	}
	if !slices.Contains(st.Audiences, ca.opts.Audience) {
		return caller{}, status.Errorf(codes.Unauthenticated, "token audiences %v do not include %q", st.Audiences, ca.opts.Audience)
	}
	ns, name, ok := serviceAccountOf(st.User.Username)
	if !ok {
		return caller{}, status.Errorf(codes.Unauthenticated, "%q is not a service account", st.User.Username)
	}
	who := caller{namespace: ns, name: name}
	who.podName, _ = one(st.User.Extra[extraPodName])
	who.podUID = first(st.User.Extra[extraPodUID])
	who.node, _ = one(st.User.Extra[extraNodeName])
	if who.node == "" && who.podName != "" {
		// Older API servers do not put the node in the token: read it from the bound pod.
		node, err := ca.nodeOfPod(ctx, ns, who.podName, who.podUID)
		if err != nil {
			return caller{}, err
		}
		who.node = node
	}
	return who, nil
}

func (ca *CA) nodeOfPod(ctx context.Context, namespace, name, uid string) (string, error) {
	var pod corev1.Pod
	if err := ca.Pods.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &pod); err != nil {
		return "", status.Errorf(codes.Unauthenticated, "the pod %s/%s the token is bound to: %v", namespace, name, err)
	}
	if uid != "" && string(pod.UID) != uid {
		return "", status.Errorf(codes.Unauthenticated, "the pod %s/%s the token is bound to was replaced", namespace, name)
	}
	return pod.Spec.NodeName, nil
}

func serviceAccountOf(username string) (namespace, name string, ok bool) {
	rest, ok := strings.CutPrefix(username, "system:serviceaccount:")
	if !ok {
		return "", "", false
	}
	namespace, name, ok = strings.Cut(rest, ":")
	if !ok || namespace == "" || name == "" {
		return "", "", false
	}
	return namespace, name, true
}

func one(v authnv1.ExtraValue) (string, bool) {
	if len(v) != 1 || v[0] == "" {
		return "", false
	}
	return v[0], true
}

func first(v authnv1.ExtraValue) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// authorize: a workload may hold its own identity; a node agent (ztunnel) may hold the
// identity of any service account with a pod on the node its token is bound to.
func (ca *CA) authorize(ctx context.Context, who caller, id spiffe.ID) error {
	if id.Namespace == who.namespace && id.ServiceAccount == who.name {
		return nil
	}
	if !ca.isNodeAgent(who) {
		return status.Errorf(codes.PermissionDenied, "service account %s may only request its own identity, not %s", who, id)
	}
	if who.node == "" {
		return status.Errorf(codes.PermissionDenied, "the token of %s is not bound to a pod on a node: request it with a projected token (boundObjectRef to the ztunnel pod)", who)
	}
	onNode, err := ca.hasPodOnNode(ctx, who.node, id.Namespace, id.ServiceAccount)
	if err != nil {
		return status.Errorf(codes.Unavailable, "list pods on node %s: %v", who.node, err)
	}
	if !onNode {
		return status.Errorf(codes.PermissionDenied, "no pod of service account %s/%s runs on node %s, the node of %s", id.Namespace, id.ServiceAccount, who.node, who)
	}
	return nil
}

func (ca *CA) hasPodOnNode(ctx context.Context, node, namespace, serviceAccount string) (bool, error) {
	var pods corev1.PodList
	if err := ca.Pods.List(ctx, &pods, client.InNamespace(namespace), client.MatchingFields{ca.PodNodeIndex: node}, client.UnsafeDisableDeepCopy); err != nil {
		return false, err
	}
	for _, p := range pods.Items {
		sa := p.Spec.ServiceAccountName
		if sa == "" {
			sa = "default"
		}
		if sa == serviceAccount && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			return true, nil
		}
	}
	return false, nil
}

// response splits the issuer's PEM into the chain (leaf first, no self-signed root) and
// the roots (the issuer's roots, then the trust bundle), recording the certificate under
// the issuer's roots first (an issuer that reports no CA is not recorded: its roots are
// those of the control plane's own certificate). It returns the leaf too.
func (ca *CA) response(ctx context.Context, signed *Signed) (*pb.CreateCertificateResponse, *x509.Certificate, error) {
	certs, pems, err := SplitPEMCertificates(signed.CertificatePEM)
	if err != nil || len(certs) == 0 {
		return nil, nil, status.Errorf(codes.Internal, "issuer returned an unreadable certificate: %v", err)
	}
	out := &pb.CreateCertificateResponse{}
	for i, c := range certs {
		if i > 0 && isSelfSigned(c) {
			continue
		}
		out.CertChain = append(out.CertChain, pems[i])
	}
	out.Roots = RootsFrom(signed)
	if ca.opts.Trust != nil {
		if len(out.Roots) > 0 {
			if err := ca.opts.Trust.Issued(ctx, out.Roots, certs[0].NotAfter); err != nil {
				return nil, nil, status.Errorf(codes.Unavailable, "%v", err)
			}
		}
		for _, r := range ca.opts.Trust.Roots() {
			if !slices.Contains(out.Roots, r) {
				out.Roots = append(out.Roots, r)
			}
		}
	}
	if len(out.Roots) == 0 {
		return nil, nil, status.Error(codes.Internal, "the issuer reported no CA and the trust bundle is empty")
	}
	return out, certs[0], nil
}

// RootsFrom returns the self-signed certificates among the issuer's CA and chain.
func RootsFrom(signed *Signed) []string {
	var roots []string
	for _, data := range [][]byte{signed.CAPEM, signed.CertificatePEM} {
		certs, pems, err := SplitPEMCertificates(data)
		if err != nil {
			continue
		}
		for i, c := range certs {
			if isSelfSigned(c) && !slices.Contains(roots, pems[i]) {
				roots = append(roots, pems[i])
			}
		}
	}
	if len(roots) == 0 && len(signed.CAPEM) > 0 {
		// An intermediate CA issuer whose root is not included: trust what it reports.
		if _, pems, err := SplitPEMCertificates(signed.CAPEM); err == nil {
			roots = pems
		}
	}
	return roots
}

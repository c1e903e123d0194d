// Package meshenv brings up what the control plane needs on real parts: the envtest
// kube-apiserver and etcd with every CRD, the real cert-manager controller, and the mesh's
// identity chain (SelfSigned Issuer → root CA Certificate → CA Issuer), the way the
// operator installs it. The control-plane suite and its benchmark share it.
package meshenv

import (
	"context"
	"fmt"
	"io"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/ambientmesh/ambient-operator/internal/meshscheme"
	"github.com/ambientmesh/ambient-operator/internal/testwait"
	"github.com/ambientmesh/ambient-operator/test/testenv"
)

// Names of the identity chain and the mesh namespace.
const (
	Namespace     = "ambient-system"
	CAIssuer      = "ambientmesh-ca"
	rootCA        = "ambientmesh-root-ca"
	selfSigned    = "ambientmesh-selfsigned"
	issueDeadline = 90 * time.Second
)

// Env is a running envtest with cert-manager and the mesh CA.
type Env struct {
	Config *rest.Config
	Client client.Client
	env    *envtest.Environment
	stopCM func()
}

// Start brings everything up; logs receives cert-manager's output.
func Start(ctx context.Context, logs io.Writer) (*Env, error) {
	env, err := testenv.New()
	if err != nil {
		return nil, err
	}
	// Enough headroom for benchmarks that create thousands of objects quickly.
	env.ControlPlane.GetAPIServer().Configure().Set("max-requests-inflight", "2000").Set("max-mutating-requests-inflight", "1000")
	cfg, err := env.Start()
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = 2000, 4000
	e := &Env{Config: cfg, env: env}
	if e.Client, err = client.New(cfg, client.Options{Scheme: meshscheme.New()}); err != nil {
		_ = env.Stop()
		return nil, err
	}
	if e.stopCM, err = testenv.StartCertManager(ctx, cfg, testenv.WithCertManagerLogs(logs)); err != nil {
		_ = env.Stop()
		return nil, err
	}
	if err := e.installCA(ctx); err != nil {
		e.Stop()
		return nil, err
	}
	return e, nil
}

// Stop stops cert-manager, then the API server and etcd.
func (e *Env) Stop() {
	if e.stopCM != nil {
		e.stopCM()
	}
	_ = e.env.Stop()
}

// installCA creates the mesh namespace and the issuer chain and waits for the CA Issuer.
func (e *Env) installCA(ctx context.Context) error {
	objs := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}},
		&cmapi.Issuer{ObjectMeta: metav1.ObjectMeta{Name: selfSigned, Namespace: Namespace},
			Spec: cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{SelfSigned: &cmapi.SelfSignedIssuer{}}}},
		&cmapi.Certificate{ObjectMeta: metav1.ObjectMeta{Name: rootCA, Namespace: Namespace},
			Spec: cmapi.CertificateSpec{
				IsCA: true, CommonName: "ambientmesh test root", SecretName: rootCA,
				PrivateKey: &cmapi.CertificatePrivateKey{Algorithm: cmapi.ECDSAKeyAlgorithm, Size: 256},
				IssuerRef:  cmmeta.IssuerReference{Name: selfSigned, Kind: "Issuer"},
			}},
		&cmapi.Issuer{ObjectMeta: metav1.ObjectMeta{Name: CAIssuer, Namespace: Namespace},
			Spec: cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{CA: &cmapi.CAIssuer{SecretName: rootCA}}}},
	}
	for _, o := range objs {
		if err := e.Client.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create %T %s: %w", o, o.GetName(), err)
		}
	}
	return testwait.UntilContext(ctx, issueDeadline, func() error { return e.caIssuerReady(ctx) })
}

// caIssuerReady says why the CA Issuer cannot issue yet, if it cannot.
func (e *Env) caIssuerReady(ctx context.Context) error {
	var issuer cmapi.Issuer
	if err := e.Client.Get(ctx, client.ObjectKey{Namespace: Namespace, Name: CAIssuer}, &issuer); err != nil {
		return err
	}
	for _, c := range issuer.Status.Conditions {
		if c.Type == cmapi.IssuerConditionReady && c.Status == cmmeta.ConditionTrue {
			return nil
		}
	}
	return fmt.Errorf("CA Issuer %s/%s not Ready", Namespace, CAIssuer)
}

// RootCAPEM returns the mesh root certificate (ca.crt of the root CA secret).
func (e *Env) RootCAPEM(ctx context.Context) ([]byte, error) {
	var s corev1.Secret
	if err := e.Client.Get(ctx, client.ObjectKey{Namespace: Namespace, Name: rootCA}, &s); err != nil {
		return nil, err
	}
	return s.Data["tls.crt"], nil
}

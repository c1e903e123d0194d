package identity

import (
	"context"
	"errors"
	"fmt"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// LabelIdentityRequest marks the CertificateRequests the control plane creates.
const LabelIdentityRequest = "ambientmesh.dev/identity-request"

// Signer gets certificates signed by the mesh's cert-manager issuer: it creates a
// CertificateRequest, waits for it with a watch (bounded), and deletes it afterwards.
type Signer struct {
	Client client.WithWatch
	// Namespace the CertificateRequests are created in (the control plane's own); an
	// Issuer (not ClusterIssuer) must live there too.
	Namespace string
	IssuerRef cmmeta.IssuerReference
	// Approve makes the signer approve its own requests. Off by default: cert-manager's
	// built-in approver approves requests for its own issuer types. Turn it on when that
	// approver is disabled (e.g. approver-policy is installed) and the control plane has
	// been granted "approve" on the issuer's signer name.
	Approve bool
	// Timeout bounds the wait for the issuer (default 30s).
	Timeout time.Duration
	Log     logr.Logger
}

// Signed is the issuer's answer.
type Signed struct {
	// CertificatePEM is the leaf followed by any intermediates the issuer returned.
	CertificatePEM []byte
	// CAPEM is the issuing CA as the issuer reports it (status.ca).
	CAPEM []byte
}

// Sign submits csrPEM for duration and returns the issued certificate. identity only
// labels the request for whoever looks at the cluster meanwhile.
func (s *Signer) Sign(ctx context.Context, csrPEM []byte, duration time.Duration, identity string) (*Signed, error) {
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	cr := &cmapi.CertificateRequest{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "mesh-identity-",
			Namespace:    s.Namespace,
			Labels:       map[string]string{LabelIdentityRequest: "true"},
			Annotations:  map[string]string{"ambientmesh.dev/identity": identity},
		},
		Spec: cmapi.CertificateRequestSpec{
			Request:   csrPEM,
			Duration:  &metav1.Duration{Duration: duration},
			IssuerRef: s.IssuerRef,
			Usages:    []cmapi.KeyUsage{cmapi.UsageDigitalSignature, cmapi.UsageKeyEncipherment, cmapi.UsageServerAuth, cmapi.UsageClientAuth},
		},
	}
	if err := s.Client.Create(ctx, cr); err != nil {
		return nil, fmt.Errorf("create CertificateRequest: %w", err)
	}
	defer s.cleanup(cr)
	if s.Approve {
		if err := s.approve(ctx, cr); err != nil {
			return nil, err
		}
	}
	return s.wait(ctx, cr)
}

// cleanup deletes the request; signed certificates live in the caller's memory only.
func (s *Signer) cleanup(cr *cmapi.CertificateRequest) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Client.Delete(ctx, cr); client.IgnoreNotFound(err) != nil {
		s.Log.Error(err, "delete CertificateRequest", "name", cr.Name)
	}
}

func (s *Signer) approve(ctx context.Context, cr *cmapi.CertificateRequest) error {
	cr.Status.Conditions = append(cr.Status.Conditions, cmapi.CertificateRequestCondition{
		Type:               cmapi.CertificateRequestConditionApproved,
		Status:             cmmeta.ConditionTrue,
		Reason:             "AmbientMeshControlPlane",
		Message:            "identity checked by the mesh control plane",
		LastTransitionTime: &metav1.Time{Time: time.Now()},
	})
	if err := s.Client.SubResource("approval").Update(ctx, cr); err != nil {
		return fmt.Errorf("approve CertificateRequest %s: %w", cr.Name, err)
	}
	return nil
}

// wait watches the request until it is Ready, fails, or the context ends.
func (s *Signer) wait(ctx context.Context, cr *cmapi.CertificateRequest) (*Signed, error) {
	var list cmapi.CertificateRequestList
	w, err := s.Client.Watch(ctx, &list, client.InNamespace(cr.Namespace),
		client.MatchingFieldsSelector{Selector: fields.OneTermEqualSelector("metadata.name", cr.Name)})
	if err != nil {
		return nil, fmt.Errorf("watch CertificateRequest %s: %w", cr.Name, err)
	}
	defer w.Stop()
	// The request may have been signed between Create and Watch: look once first.
	if err := s.Client.Get(ctx, client.ObjectKeyFromObject(cr), cr); err == nil {
		if signed, done, err := outcome(cr); done {
			return signed, err
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("CertificateRequest %s/%s not signed in time (issuer %s %q): %w",
				cr.Namespace, cr.Name, s.IssuerRef.Kind, s.IssuerRef.Name, ctx.Err())
		case ev, ok := <-w.ResultChan():
			if !ok {
				return nil, fmt.Errorf("watch on CertificateRequest %s ended", cr.Name)
			}
			if ev.Type != watch.Added && ev.Type != watch.Modified {
				continue
			}
			got, ok := ev.Object.(*cmapi.CertificateRequest)
			if !ok {
				continue
			}
			if signed, done, err := outcome(got); done {
				return signed, err
			}
		}
	}
}

// outcome reads a request's conditions: done once it is Ready, Failed, Denied or Invalid.
func outcome(cr *cmapi.CertificateRequest) (*Signed, bool, error) {
	for _, c := range cr.Status.Conditions {
		switch {
		case c.Type == cmapi.CertificateRequestConditionReady && c.Status == cmmeta.ConditionTrue && len(cr.Status.Certificate) > 0:
			return &Signed{CertificatePEM: cr.Status.Certificate, CAPEM: cr.Status.CA}, true, nil
		case c.Type == cmapi.CertificateRequestConditionReady && c.Status == cmmeta.ConditionFalse && c.Reason == cmapi.CertificateRequestReasonFailed:
			return nil, true, fmt.Errorf("issuer failed the request: %s", c.Message)
		case c.Type == cmapi.CertificateRequestConditionDenied && c.Status == cmmeta.ConditionTrue:
			return nil, true, fmt.Errorf("request denied by %s: %s", c.Reason, c.Message)
		case c.Type == cmapi.CertificateRequestConditionInvalidRequest && c.Status == cmmeta.ConditionTrue:
			return nil, true, errors.New("issuer found the request invalid: " + c.Message)
		}
	}
	return nil, false, nil
}

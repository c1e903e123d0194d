package manifests

import (
	"net/url"

	cmv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
)

// identityObjects is the issuer chain (when the mesh owns it) and the
// control plane's serving certificate, signed by the mesh's issuer.
func identityObjects(mesh *meshv1alpha1.AmbientMesh) []client.Object {
	var objs []client.Object
	if mesh.Spec.Identity.IssuerRef == nil {
		objs = append(objs, selfSignedIssuer(mesh), rootCACertificate(mesh), caIssuer(mesh))
	}
	return append(objs, controlPlaneCertificate(mesh))
}

func issuerTypeMeta(kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: cmv1.SchemeGroupVersion.String(), Kind: kind}
}

// selfSignedIssuer only signs the root CA certificate.
func selfSignedIssuer(mesh *meshv1alpha1.AmbientMesh) *cmv1.Issuer {
	return &cmv1.Issuer{
		TypeMeta:   issuerTypeMeta(cmv1.IssuerKind),
		ObjectMeta: meta(mesh, SelfSignedIssuerName, ComponentIdentity),
		Spec:       cmv1.IssuerSpec{IssuerConfig: cmv1.IssuerConfig{SelfSigned: &cmv1.SelfSignedIssuer{}}},
	}
}

// rootCACertificate is the mesh's root of trust. Its URI SAN is the trust
// domain, so a verifier can tell which trust domain a chain belongs to.
func rootCACertificate(mesh *meshv1alpha1.AmbientMesh) *cmv1.Certificate {
	td := mesh.Spec.EffectiveTrustDomain()
	return &cmv1.Certificate{
		TypeMeta:   issuerTypeMeta(cmv1.CertificateKind),
		ObjectMeta: meta(mesh, RootCAName, ComponentIdentity),
		Spec: cmv1.CertificateSpec{
			IsCA:       true,
			CommonName: "ambientmesh root CA " + td,
			Subject:    &cmv1.X509Subject{Organizations: []string{td}},
			URIs:       []string{(&url.URL{Scheme: "spiffe", Host: td}).String()},
			Duration:   &metav1.Duration{Duration: mesh.Spec.Identity.EffectiveRootCATTL()},
			SecretName: RootCAName,
			SecretTemplate: &cmv1.CertificateSecretTemplate{
				Labels: objectLabels(mesh, RootCAName, ComponentIdentity),
			},
			PrivateKey: &cmv1.CertificatePrivateKey{Algorithm: cmv1.ECDSAKeyAlgorithm, Size: 256},
			IssuerRef:  cmmeta.IssuerReference{Name: SelfSignedIssuerName, Kind: cmv1.IssuerKind, Group: "cert-manager.io"},
		},
	}
}

// caIssuer signs workload certificates with the root CA.
func caIssuer(mesh *meshv1alpha1.AmbientMesh) *cmv1.Issuer {
	return &cmv1.Issuer{
		TypeMeta:   issuerTypeMeta(cmv1.IssuerKind),
		ObjectMeta: meta(mesh, CAIssuerName, ComponentIdentity),
		Spec:       cmv1.IssuerSpec{IssuerConfig: cmv1.IssuerConfig{CA: &cmv1.CAIssuer{SecretName: RootCAName}}},
	}
}

// controlPlaneCertificate is the control plane's serving certificate for
// xDS and the certificate service: its Service DNS names and its SPIFFE id.
func controlPlaneCertificate(mesh *meshv1alpha1.AmbientMesh) *cmv1.Certificate {
	ns := mesh.Spec.InstallNamespace()
	ref := issuerRef(mesh)
	ttl := mesh.Spec.Identity.EffectiveWorkloadCertTTL()
	return &cmv1.Certificate{
		TypeMeta:   issuerTypeMeta(cmv1.CertificateKind),
		ObjectMeta: meta(mesh, ControlPlaneTLSName, ComponentControlPlane),
		Spec: cmv1.CertificateSpec{
			DNSNames: []string{
				ControlPlaneName,
				ControlPlaneName + "." + ns,
				ControlPlaneName + "." + ns + ".svc",
				ControlPlaneName + "." + ns + ".svc.cluster.local",
			},
			URIs:        []string{meshv1alpha1.SPIFFEIdentity(mesh.Spec.EffectiveTrustDomain(), ns, ControlPlaneName)},
			Duration:    &metav1.Duration{Duration: ttl},
			RenewBefore: &metav1.Duration{Duration: ttl / 2},
			SecretName:  ControlPlaneTLSName,
			SecretTemplate: &cmv1.CertificateSecretTemplate{
				Labels: objectLabels(mesh, ControlPlaneTLSName, ComponentControlPlane),
			},
			PrivateKey: &cmv1.CertificatePrivateKey{
				Algorithm: cmv1.ECDSAKeyAlgorithm, Size: 256, RotationPolicy: cmv1.RotationPolicyAlways,
			},
			Usages:    []cmv1.KeyUsage{cmv1.UsageServerAuth, cmv1.UsageClientAuth, cmv1.UsageDigitalSignature},
			IssuerRef: cmmeta.IssuerReference{Name: ref.Name, Kind: ref.Kind, Group: ref.Group},
		},
	}
}

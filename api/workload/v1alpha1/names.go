// Package workloadv1alpha1 holds the workload API (served to ztunnels over delta ADS) and the
// certificate service, generated from workload.proto and ca.proto, plus the names both
// sides must agree on: type URLs, resource names, metadata keys.
package workloadv1alpha1

import "github.com/ambientmesh/ambient-operator/internal/spiffe"

// Type URLs of the workload API resources, as used in delta ADS requests and responses.
const (
	typeURLPrefix        = "type.googleapis.com/"
	WorkloadTypeURL      = typeURLPrefix + "ambientmesh.workload.v1alpha1.Workload"
	ServiceTypeURL       = typeURLPrefix + "ambientmesh.workload.v1alpha1.Service"
	AuthorizationTypeURL = typeURLPrefix + "ambientmesh.workload.v1alpha1.Authorization"
	TrustBundleTypeURL   = typeURLPrefix + "ambientmesh.workload.v1alpha1.TrustBundle"
)

// TypeURLs lists every workload API type a ztunnel subscribes to.
var TypeURLs = []string{WorkloadTypeURL, ServiceTypeURL, AuthorizationTypeURL, TrustBundleTypeURL}

// Certificate service authentication.
const (
	// AuthorizationMetadataKey is the gRPC metadata key carrying "Bearer <token>".
	AuthorizationMetadataKey = "authorization"
	// BearerPrefix precedes the projected service-account token in the metadata value.
	BearerPrefix = "Bearer "
	// CATokenAudience is the audience of the projected token a caller presents to the CA.
	CATokenAudience = "ambientmesh-ca"
)

// DefaultHBONEPort is the port ztunnels and waypoints accept HBONE on.
const DefaultHBONEPort = 15008

// WorkloadResourceName is the xDS name of a Workload: its uid.
func WorkloadResourceName(w *Workload) string { return w.GetUid() }

// ServiceResourceName is the xDS name of a Service: "<namespace>/<hostname>".
func ServiceResourceName(namespace, hostname string) string { return namespace + "/" + hostname }

// AuthorizationResourceName is the xDS name of an Authorization: "<namespace>/<name>".
func AuthorizationResourceName(namespace, name string) string { return namespace + "/" + name }

// SpiffeID builds "spiffe://<trustDomain>/ns/<namespace>/sa/<serviceAccount>" (no validation;
// see internal/spiffe for the strict parser).
func SpiffeID(trustDomain, namespace, serviceAccount string) string {
	return spiffe.ID{TrustDomain: trustDomain, Namespace: namespace, ServiceAccount: serviceAccount}.String()
}

// ParseSpiffeID splits a workload SPIFFE id into trust domain, namespace and service account,
// with internal/spiffe's strict rules. ok is false for anything else.
func ParseSpiffeID(id string) (trustDomain, namespace, serviceAccount string, ok bool) {
	parsed, err := spiffe.Parse(id)
	if err != nil {
		return "", "", "", false
	}
	return parsed.TrustDomain, parsed.Namespace, parsed.ServiceAccount, true
}

// Identity returns the workload's SPIFFE id, using defaultTrustDomain when the workload
// does not name one.
func (w *Workload) Identity(defaultTrustDomain string) string {
	td := w.GetTrustDomain()
	if td == "" {
		td = defaultTrustDomain
	}
	return SpiffeID(td, w.GetNamespace(), w.GetServiceAccount())
}

// IdentityID is Identity as a validated spiffe.ID.
func (w *Workload) IdentityID(defaultTrustDomain string) (spiffe.ID, error) {
	td := w.GetTrustDomain()
	if td == "" {
		td = defaultTrustDomain
	}
	return spiffe.New(td, w.GetNamespace(), w.GetServiceAccount())
}

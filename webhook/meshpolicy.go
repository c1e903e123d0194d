package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	jose "github.com/go-jose/go-jose/v4"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/internal/spiffe"
)

// MeshPolicyDefaulter fills in what the CRD schema cannot default.
type MeshPolicyDefaulter struct{}

// Default writes each targetRef's group, which depends on its kind
// (mesh.ambientmesh.dev for a Waypoint, "" otherwise), so that readers of
// the stored policy need not infer it.
func (d *MeshPolicyDefaulter) Default(_ context.Context, policy *meshv1alpha1.MeshPolicy) error {
	for i := range policy.Spec.TargetRefs {
		ref := &policy.Spec.TargetRefs[i]
		ref.Group = ref.EffectiveGroup()
	}
	return nil
}

// MeshPolicyValidator checks the selector and identities fully (the schema
// checks their shape only), targets that need the policy's namespace, and
// warns when L7 rules have no waypoint to enforce them.
type MeshPolicyValidator struct {
	// Reader reads the mesh (trust domain) and the policy's targets.
	Reader client.Reader
}

// ValidateCreate validates the policy.
func (v *MeshPolicyValidator) ValidateCreate(ctx context.Context, policy *meshv1alpha1.MeshPolicy) (admission.Warnings, error) {
	return v.validate(ctx, policy)
}

// ValidateUpdate validates the new policy; nothing in a policy is immutable.
// An update of a policy being deleted (its finalizer removal) passes.
func (v *MeshPolicyValidator) ValidateUpdate(ctx context.Context, _, policy *meshv1alpha1.MeshPolicy) (admission.Warnings, error) {
	if beingDeleted(policy) {
		return nil, nil
	}
	return v.validate(ctx, policy)
}

// ValidateDelete allows every deletion.
func (v *MeshPolicyValidator) ValidateDelete(context.Context, *meshv1alpha1.MeshPolicy) (admission.Warnings, error) {
	return nil, nil
}

func (v *MeshPolicyValidator) validate(ctx context.Context, policy *meshv1alpha1.MeshPolicy) (admission.Warnings, error) {
	spec := field.NewPath("spec")
	errs := validateLabelSelector(spec.Child("selector"), policy.Spec.Selector)
	errs = append(errs, validatePolicyTargets(spec.Child("targetRefs"), policy)...)
	errs = append(errs, validateRuleIdentities(spec.Child("rules"), policy.Spec.Rules)...)
	errs = append(errs, validateJWT(spec.Child("jwt"), policy.Spec.JWT)...)

	mesh, found, err := getMesh(ctx, v.Reader)
	if err != nil {
		return nil, err
	}
	var warnings admission.Warnings
	if !found {
		warnings = append(warnings, fmt.Sprintf("no AmbientMesh %q exists: nothing enforces this policy until one is created", meshv1alpha1.MeshName))
	} else {
		warnings = append(warnings, trustDomainWarnings(spec.Child("rules"), policy.Spec.Rules, mesh.Spec.EffectiveTrustDomain())...)
	}
	if len(errs) == 0 && policy.HasL7Rules() {
		l7, err := v.l7Warnings(ctx, policy)
		if err != nil {
			return nil, err
		}
		warnings = append(warnings, l7...)
	}
	return warnings, invalid(policy, errs)
}

// validatePolicyTargets: a Namespace target must be the policy's own
// namespace (the schema cannot see metadata.namespace), and no target may
// be listed twice.
func validatePolicyTargets(path *field.Path, policy *meshv1alpha1.MeshPolicy) field.ErrorList {
	var errs field.ErrorList
	seen := map[string]bool{}
	for i := range policy.Spec.TargetRefs {
		ref := &policy.Spec.TargetRefs[i]
		if ref.Kind == meshv1alpha1.TargetKindNamespace && ref.Name != policy.Namespace {
			errs = append(errs, field.Invalid(path.Index(i).Child("name"), ref.Name,
				fmt.Sprintf("a Namespace target must name the policy's own namespace %q: a MeshPolicy applies only in its namespace", policy.Namespace)))
		}
		key := ref.EffectiveGroup() + "/" + string(ref.Kind) + "/" + ref.Name
		if seen[key] {
			errs = append(errs, field.Duplicate(path.Index(i), fmt.Sprintf("%s %s", ref.Kind, ref.Name)))
		}
		seen[key] = true
	}
	return errs
}

// validateRuleIdentities parses every principal as a SPIFFE id and every
// service account reference as <namespace>/<name> with Kubernetes' own name
// rules. The schema's patterns check the shape only: they accept, for
// instance, a 70-character namespace or "a..b" as a service account.
func validateRuleIdentities(path *field.Path, rules []meshv1alpha1.Rule) field.ErrorList {
	var errs field.ErrorList
	for i := range rules {
		for j := range rules[i].From {
			from := path.Index(i).Child("from").Index(j)
			src := &rules[i].From[j]
			for k, p := range src.Principals {
				if _, err := spiffe.Parse(string(p)); err != nil {
					errs = append(errs, field.Invalid(from.Child("principals").Index(k), string(p), strings.TrimPrefix(err.Error(), "spiffe: ")))
				}
			}
			for k, sa := range src.ServiceAccounts {
				if msg := serviceAccountRefError(sa); msg != "" {
					errs = append(errs, field.Invalid(from.Child("serviceAccounts").Index(k), string(sa), msg))
				}
			}
		}
	}
	return errs
}

// validateJWT checks what the schema cannot: the issuer is not blank, the inline key set
// is a JSON Web Key Set of public keys, and the key set URI is an https URL (http only
// for localhost, where no one can intercept it).
func validateJWT(path *field.Path, j *meshv1alpha1.JWTSettings) field.ErrorList {
	if j == nil {
		return nil
	}
	var errs field.ErrorList
	if strings.TrimSpace(j.Issuer) == "" {
		errs = append(errs, field.Required(path.Child("issuer"), "the issuer the token's \"iss\" claim must equal"))
	}
	switch {
	case j.JWKS != "" && j.JWKSURI != "":
		errs = append(errs, field.Invalid(path.Child("jwksUri"), j.JWKSURI, "set exactly one of jwks or jwksUri"))
	case j.JWKS != "":
		if msg := jwksError(j.JWKS); msg != "" {
			errs = append(errs, field.Invalid(path.Child("jwks"), abbreviate(j.JWKS), msg))
		}
	case j.JWKSURI != "":
		if msg := jwksURIError(j.JWKSURI); msg != "" {
			errs = append(errs, field.Invalid(path.Child("jwksUri"), j.JWKSURI, msg))
		}
	default:
		errs = append(errs, field.Required(path.Child("jwks"), "set jwks (the key set, inline) or jwksUri (where to fetch it)"))
	}
	for i, h := range j.FromHeaders {
		if msgs := validation.IsHTTPHeaderName(h.Name); len(msgs) > 0 {
			errs = append(errs, field.Invalid(path.Child("fromHeaders").Index(i).Child("name"), h.Name, strings.Join(msgs, "; ")))
		}
	}
	return errs
}

// jwksError parses a JSON Web Key Set; "" when it is one, with at least one key, all
// public.
func jwksError(raw string) string {
	var set jose.JSONWebKeySet
	if err := json.Unmarshal([]byte(raw), &set); err != nil {
		return "not a JSON Web Key Set ({\"keys\": [...]}): " + err.Error()
	}
	if len(set.Keys) == 0 {
		return "the key set has no keys: no token could be validated"
	}
	for i := range set.Keys {
		if !set.Keys[i].IsPublic() {
			return fmt.Sprintf("keys[%d] is a private key: publish only public keys", i)
		}
	}
	return ""
}

func jwksURIError(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return err.Error()
	}
	if u.Host == "" || u.Hostname() == "" {
		return "must be an absolute URL with a host, e.g. https://issuer.example.com/.well-known/jwks.json"
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Sprintf("port %q is not in 1-65535", port)
		}
	}
	switch u.Scheme {
	case "https":
		return ""
	case "http":
		if isLocalhost(u.Hostname()) {
			return ""
		}
		return "must use https (http is allowed only for localhost): the keys decide which tokens are trusted"
	}
	return fmt.Sprintf("scheme %q: must be https", u.Scheme)
}

func isLocalhost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// abbreviate keeps error messages about a large inline value readable.
func abbreviate(s string) string {
	if len(s) <= 64 {
		return s
	}
	return s[:61] + "..."
}

func serviceAccountRefError(ref meshv1alpha1.ServiceAccountRef) string {
	ns, name, ok := strings.Cut(string(ref), "/")
	if !ok {
		return "must be a service account as <namespace>/<name>"
	}
	if msgs := validation.IsDNS1123Label(ns); len(msgs) > 0 {
		return "namespace: " + strings.Join(msgs, "; ")
	}
	if msgs := validation.IsDNS1123Subdomain(name); len(msgs) > 0 {
		return "name: " + strings.Join(msgs, "; ")
	}
	return ""
}

// trustDomainWarnings: a principal in another trust domain never matches a
// peer of this mesh. It is a warning, not an error, because federated
// peers may carry such identities.
func trustDomainWarnings(path *field.Path, rules []meshv1alpha1.Rule, trustDomain string) admission.Warnings {
	var warnings admission.Warnings
	for i := range rules {
		for j := range rules[i].From {
			for k, p := range rules[i].From[j].Principals {
				id, err := spiffe.Parse(string(p))
				if err == nil && id.TrustDomain != trustDomain {
					warnings = append(warnings, fmt.Sprintf(
						"%s: %q is in trust domain %q, but this mesh's trust domain is %q: it matches no peer of this mesh",
						path.Index(i).Child("from").Index(j).Child("principals").Index(k), string(p), id.TrustDomain, trustDomain))
				}
			}
		}
	}
	return warnings
}

// l7Warnings says when the policy's L7 rules (methods, paths, hosts, when)
// have no waypoint to enforce them. The policy is still accepted: the
// waypoint may be added next, and its status then shows it enforced.
func (v *MeshPolicyValidator) l7Warnings(ctx context.Context, policy *meshv1alpha1.MeshPolicy) (admission.Warnings, error) {
	if len(policy.Spec.TargetRefs) == 0 {
		return admission.Warnings{
			"spec.rules: L7 fields (methods, paths, hosts, when) need a waypoint, but this policy selects workloads, which ztunnel serves at L4 only; " +
				"attach it to a Service or Waypoint with spec.targetRefs to have a waypoint enforce it"}, nil
	}
	var warnings admission.Warnings
	for i := range policy.Spec.TargetRefs {
		msg, err := v.targetWithoutWaypoint(ctx, policy.Namespace, &policy.Spec.TargetRefs[i])
		if err != nil {
			return nil, err
		}
		if msg != "" {
			warnings = append(warnings, fmt.Sprintf("spec.targetRefs[%d]: %s; its L7 rules are not enforced until a waypoint serves it", i, msg))
		}
	}
	return warnings, nil
}

// targetWithoutWaypoint explains why no waypoint serves the target, or
// returns "" when one does.
func (v *MeshPolicyValidator) targetWithoutWaypoint(ctx context.Context, namespace string, ref *meshv1alpha1.PolicyTargetReference) (string, error) {
	key := client.ObjectKey{Namespace: namespace, Name: ref.Name}
	switch ref.Kind {
	case meshv1alpha1.TargetKindWaypoint:
		return v.missing(ctx, key, &meshv1alpha1.Waypoint{}, "Waypoint")
	case meshv1alpha1.TargetKindNamespace:
		var ns corev1.Namespace
		if msg, err := v.missing(ctx, client.ObjectKey{Name: namespace}, &ns, "Namespace"); msg != "" || err != nil {
			return msg, err
		}
		if !usesWaypoint(ns.Labels, nil) {
			return fmt.Sprintf("Namespace %s has no %s label", namespace, meshv1alpha1.LabelUseWaypoint), nil
		}
	case meshv1alpha1.TargetKindService:
		var svc corev1.Service
		if msg, err := v.missing(ctx, key, &svc, "Service"); msg != "" || err != nil {
			return msg, err
		}
		var ns corev1.Namespace
		if err := v.Reader.Get(ctx, client.ObjectKey{Name: namespace}, &ns); client.IgnoreNotFound(err) != nil {
			return "", apierrors.NewInternalError(err)
		}
		if !usesWaypoint(ns.Labels, svc.Labels) {
			return fmt.Sprintf("Service %s/%s uses no waypoint (label it or its namespace %s=<waypoint>)",
				namespace, ref.Name, meshv1alpha1.LabelUseWaypoint), nil
		}
	}
	return "", nil
}

// missing returns a message when the object does not exist.
func (v *MeshPolicyValidator) missing(ctx context.Context, key client.ObjectKey, obj client.Object, kind string) (string, error) {
	err := v.Reader.Get(ctx, key, obj)
	switch {
	case apierrors.IsNotFound(err):
		return fmt.Sprintf("%s %s does not exist", kind, strings.TrimPrefix(key.String(), "/")), nil
	case err != nil:
		return "", apierrors.NewInternalError(fmt.Errorf("reading %s %s: %w", kind, key, err))
	}
	return "", nil
}

// usesWaypoint applies the use-waypoint label rules: the object's own label
// wins ("none" opts out), otherwise the namespace's.
func usesWaypoint(nsLabels, objLabels map[string]string) bool {
	if v, ok := objLabels[meshv1alpha1.LabelUseWaypoint]; ok {
		return v != "" && v != meshv1alpha1.UseWaypointNone
	}
	v := nsLabels[meshv1alpha1.LabelUseWaypoint]
	return v != "" && v != meshv1alpha1.UseWaypointNone
}

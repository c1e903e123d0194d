package workloadv1alpha1

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Validation of resources as received over xDS. A ztunnel NACKs a response holding an
// invalid resource and keeps its last good configuration; the control plane can run the same
// checks on what it is about to send. Errors name the offending field.

func fieldErr(field, format string, args ...any) error {
	return fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...))
}

// ValidateWorkload checks a Workload sent under resource name name.
func ValidateWorkload(name string, w *Workload) error {
	var errs []error
	if w.GetUid() == "" {
		errs = append(errs, fieldErr("uid", "required"))
	} else if w.GetUid() != name {
		errs = append(errs, fieldErr("uid", "%q differs from the resource name %q", w.GetUid(), name))
	}
	if w.GetNamespace() == "" {
		errs = append(errs, fieldErr("namespace", "required"))
	}
	if w.GetTunnelProtocol() == TunnelProtocol_TUNNEL_PROTOCOL_HBONE && w.GetServiceAccount() == "" {
		errs = append(errs, fieldErr("service_account", "required for an HBONE workload"))
	}
	for i, a := range w.GetAddresses() {
		if _, err := netip.ParseAddr(a); err != nil {
			errs = append(errs, fieldErr(fmt.Sprintf("addresses[%d]", i), "%q is not an IP address", a))
		}
	}
	for svc, pl := range w.GetServices() {
		if _, _, ok := strings.Cut(svc, "/"); !ok {
			errs = append(errs, fieldErr(fmt.Sprintf("services[%q]", svc), "key must be <namespace>/<hostname>"))
		}
		errs = append(errs, validatePorts(fmt.Sprintf("services[%q].ports", svc), pl.GetPorts(), false))
	}
	errs = append(errs, validateGateway("waypoint", w.GetWaypoint()))
	return errors.Join(errs...)
}

// ValidateService checks a Service sent under resource name name.
func ValidateService(name string, s *Service) error {
	var errs []error
	if s.GetNamespace() == "" {
		errs = append(errs, fieldErr("namespace", "required"))
	}
	if s.GetHostname() == "" {
		errs = append(errs, fieldErr("hostname", "required"))
	}
	if want := ServiceResourceName(s.GetNamespace(), s.GetHostname()); name != want {
		errs = append(errs, fieldErr("hostname", "resource name %q should be %q", name, want))
	}
	for i, v := range s.GetVips() {
		if _, err := netip.ParseAddr(v); err != nil {
			errs = append(errs, fieldErr(fmt.Sprintf("vips[%d]", i), "%q is not an IP address", v))
		}
	}
	errs = append(errs, validatePorts("ports", s.GetPorts(), true))
	errs = append(errs, validateGateway("waypoint", s.GetWaypoint()))
	return errors.Join(errs...)
}

func validatePorts(field string, ports []*Port, targetMayBeZero bool) error {
	var errs []error
	for i, p := range ports {
		f := fmt.Sprintf("%s[%d]", field, i)
		if p.GetServicePort() == 0 || p.GetServicePort() > 65535 {
			errs = append(errs, fieldErr(f+".service_port", "%d is not a port", p.GetServicePort()))
		}
		if p.GetTargetPort() > 65535 || (p.GetTargetPort() == 0 && !targetMayBeZero) {
			errs = append(errs, fieldErr(f+".target_port", "%d is not a port", p.GetTargetPort()))
		}
	}
	return errors.Join(errs...)
}

func validateGateway(field string, g *GatewayAddress) error {
	if g == nil {
		return nil
	}
	var errs []error
	if _, err := netip.ParseAddr(g.GetAddress()); err != nil {
		errs = append(errs, fieldErr(field+".address", "%q is not an IP address", g.GetAddress()))
	}
	if g.GetHbonePort() > 65535 {
		errs = append(errs, fieldErr(field+".hbone_port", "%d is not a port", g.GetHbonePort()))
	}
	if _, _, _, ok := ParseSpiffeID(g.GetIdentity()); !ok {
		errs = append(errs, fieldErr(field+".identity", "%q is not a spiffe://<td>/ns/<ns>/sa/<sa> id", g.GetIdentity()))
	}
	return errors.Join(errs...)
}

// ValidateAuthorization checks an Authorization sent under resource name name.
func ValidateAuthorization(name string, a *Authorization) error {
	var errs []error
	if a.GetName() == "" {
		errs = append(errs, fieldErr("name", "required"))
	}
	if a.GetNamespace() == "" && a.GetScope() != AuthorizationScope_AUTHORIZATION_SCOPE_GLOBAL {
		errs = append(errs, fieldErr("namespace", "required unless scope is GLOBAL"))
	}
	if want := AuthorizationResourceName(a.GetNamespace(), a.GetName()); name != want {
		errs = append(errs, fieldErr("name", "resource name %q should be %q", name, want))
	}
	if _, ok := AuthorizationScope_name[int32(a.GetScope())]; !ok || a.GetScope() == AuthorizationScope_AUTHORIZATION_SCOPE_UNSPECIFIED {
		errs = append(errs, fieldErr("scope", "must be WORKLOAD_SELECTOR, NAMESPACE or GLOBAL"))
	}
	if _, ok := AuthorizationAction_name[int32(a.GetAction())]; !ok || a.GetAction() == AuthorizationAction_AUTHORIZATION_ACTION_UNSPECIFIED {
		errs = append(errs, fieldErr("action", "must be ALLOW, DENY or AUDIT"))
	}
	for i, r := range a.GetRules() {
		errs = append(errs, validateRule(fmt.Sprintf("rules[%d]", i), r))
	}
	return errors.Join(errs...)
}

func validateRule(field string, r *Rule) error {
	var errs []error
	for name, blocks := range map[string][]string{"ip_blocks": r.GetIpBlocks(), "not_ip_blocks": r.GetNotIpBlocks()} {
		for i, b := range blocks {
			if _, err := ParseIPBlock(b); err != nil {
				errs = append(errs, fieldErr(fmt.Sprintf("%s.%s[%d]", field, name, i), "%v", err))
			}
		}
	}
	for name, ports := range map[string][]uint32{"ports": r.GetPorts(), "not_ports": r.GetNotPorts()} {
		for i, p := range ports {
			if p == 0 || p > 65535 {
				errs = append(errs, fieldErr(fmt.Sprintf("%s.%s[%d]", field, name, i), "%d is not a port", p))
			}
		}
	}
	return errors.Join(errs...)
}

// ParseIPBlock parses "10.0.0.0/8" or a single address ("10.0.0.1" = "/32").
func ParseIPBlock(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR block", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR block", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// ValidateTrustBundle checks a TrustBundle sent under resource name name. Certificates are
// parsed by the consumer; here only presence is checked.
func ValidateTrustBundle(name string, b *TrustBundle) error {
	var errs []error
	if b.GetTrustDomain() == "" || b.GetTrustDomain() != name {
		errs = append(errs, fieldErr("trust_domain", "%q must be set and equal the resource name %q", b.GetTrustDomain(), name))
	}
	if len(b.GetRoots()) == 0 {
		errs = append(errs, fieldErr("roots", "at least one root certificate is required"))
	}
	return errors.Join(errs...)
}

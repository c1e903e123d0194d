package rbac

import (
	"fmt"
	"net/netip"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// predicate is a compiled permission or principal.
type predicate func(*Attributes) bool

func anyMatch(ps []predicate, a *Attributes) bool {
	for _, p := range ps {
		if p(a) {
			return true
		}
	}
	return false
}

func allMatch(ps []predicate, a *Attributes) bool {
	for _, p := range ps {
		if !p(a) {
			return false
		}
	}
	return true
}

func compilePermission(p *rbacv3.Permission) (predicate, error) {
	switch rule := p.GetRule().(type) {
	case *rbacv3.Permission_Any:
		return func(*Attributes) bool { return true }, nil
	case *rbacv3.Permission_AndRules:
		rules, err := compilePermissions("and_rules", rule.AndRules.GetRules())
		if err != nil {
			return nil, err
		}
		return func(a *Attributes) bool { return allMatch(rules, a) }, nil
	case *rbacv3.Permission_OrRules:
		rules, err := compilePermissions("or_rules", rule.OrRules.GetRules())
		if err != nil {
			return nil, err
		}
		return func(a *Attributes) bool { return anyMatch(rules, a) }, nil
	case *rbacv3.Permission_NotRule:
		inner, err := compilePermission(rule.NotRule)
		if err != nil {
			return nil, fmt.Errorf("not_rule: %w", err)
		}
		return func(a *Attributes) bool { return !inner(a) }, nil
	case *rbacv3.Permission_Header:
		return compileHeader(rule.Header)
	case *rbacv3.Permission_UrlPath:
		return compilePath(rule.UrlPath)
	case *rbacv3.Permission_DestinationIp:
		return compileCIDR(rule.DestinationIp, func(a *Attributes) netip.Addr { return a.DestinationIP })
	case *rbacv3.Permission_DestinationPort:
		port := rule.DestinationPort
		return func(a *Attributes) bool { return uint32(a.DestinationPort) == port }, nil
	case *rbacv3.Permission_DestinationPortRange:
		start, end := rule.DestinationPortRange.GetStart(), rule.DestinationPortRange.GetEnd()
		return func(a *Attributes) bool {
			port := int32(a.DestinationPort)
			return port >= start && port < end
		}, nil
	case *rbacv3.Permission_RequestedServerName:
		// The waypoint never sees a TLS SNI (see the package doc).
		m, err := compileString(rule.RequestedServerName)
		if err != nil {
			return nil, fmt.Errorf("requested_server_name: %w", err)
		}
		matchesNoSNI := m("")
		return func(*Attributes) bool { return matchesNoSNI }, nil
	case *rbacv3.Permission_Metadata:
		return compileMetadata(rule.Metadata)
	case *rbacv3.Permission_SourcedMetadata:
		return compileSourcedMetadata(rule.SourcedMetadata)
	default:
		return nil, fmt.Errorf("permission %s is not supported", oneofName(p, "rule"))
	}
}

func compilePermissions(field string, ps []*rbacv3.Permission) ([]predicate, error) {
	out := make([]predicate, 0, len(ps))
	for i, p := range ps {
		m, err := compilePermission(p)
		if err != nil {
			return nil, fmt.Errorf("%s[%d]: %w", field, i, err)
		}
		out = append(out, m)
	}
	return out, nil
}

func compilePrincipal(p *rbacv3.Principal) (predicate, error) {
	switch id := p.GetIdentifier().(type) {
	case *rbacv3.Principal_Any:
		return func(*Attributes) bool { return true }, nil
	case *rbacv3.Principal_AndIds:
		ids, err := compilePrincipals("and_ids", id.AndIds.GetIds())
		if err != nil {
			return nil, err
		}
		return func(a *Attributes) bool { return allMatch(ids, a) }, nil
	case *rbacv3.Principal_OrIds:
		ids, err := compilePrincipals("or_ids", id.OrIds.GetIds())
		if err != nil {
			return nil, err
		}
		return func(a *Attributes) bool { return anyMatch(ids, a) }, nil
	case *rbacv3.Principal_NotId:
		inner, err := compilePrincipal(id.NotId)
		if err != nil {
			return nil, fmt.Errorf("not_id: %w", err)
		}
		return func(a *Attributes) bool { return !inner(a) }, nil
	case *rbacv3.Principal_Authenticated_:
		return compileAuthenticated(id.Authenticated)
	case *rbacv3.Principal_SourceIp:
		// Envoy's source_ip is the connection's peer (it honors the PROXY
		// protocol, which the waypoint does not speak, but not Forwarded).
		return compileCIDR(id.SourceIp, func(a *Attributes) netip.Addr { return a.DirectRemoteIP })
	case *rbacv3.Principal_DirectRemoteIp:
		return compileCIDR(id.DirectRemoteIp, func(a *Attributes) netip.Addr { return a.DirectRemoteIP })
	case *rbacv3.Principal_RemoteIp:
		return compileCIDR(id.RemoteIp, func(a *Attributes) netip.Addr { return a.RemoteIP })
	case *rbacv3.Principal_Header:
		return compileHeader(id.Header)
	case *rbacv3.Principal_UrlPath:
		return compilePath(id.UrlPath)
	case *rbacv3.Principal_Metadata:
		return compileMetadata(id.Metadata)
	case *rbacv3.Principal_SourcedMetadata:
		return compileSourcedMetadata(id.SourcedMetadata)
	default:
		return nil, fmt.Errorf("principal %s is not supported", oneofName(p, "identifier"))
	}
}

func compilePrincipals(field string, ps []*rbacv3.Principal) ([]predicate, error) {
	out := make([]predicate, 0, len(ps))
	for i, p := range ps {
		m, err := compilePrincipal(p)
		if err != nil {
			return nil, fmt.Errorf("%s[%d]: %w", field, i, err)
		}
		out = append(out, m)
	}
	return out, nil
}

// compileAuthenticated matches the verified peer identity; without a
// principal_name, any authenticated peer.
func compileAuthenticated(auth *rbacv3.Principal_Authenticated) (predicate, error) {
	if auth.GetPrincipalName() == nil {
		return func(a *Attributes) bool { return a.Principal != "" }, nil
	}
	name, err := compileString(auth.GetPrincipalName())
	if err != nil {
		return nil, fmt.Errorf("authenticated.principal_name: %w", err)
	}
	return func(a *Attributes) bool { return a.Principal != "" && name(a.Principal) }, nil
}

func compileSourcedMetadata(sm *rbacv3.SourcedMetadata) (predicate, error) {
	if sm.GetMetadataSource() != rbacv3.MetadataSource_DYNAMIC {
		return nil, fmt.Errorf("sourced_metadata: metadata_source %v is not supported", sm.GetMetadataSource())
	}
	return compileMetadata(sm.GetMetadataMatcher())
}

// oneofName names the field set in a oneof, for error messages.
func oneofName(m proto.Message, oneof string) string {
	msg := m.ProtoReflect()
	od := msg.Descriptor().Oneofs().ByName(protoreflect.Name(oneof))
	if od == nil {
		return "(unknown)"
	}
	if fd := msg.WhichOneof(od); fd != nil {
		return string(fd.Name())
	}
	return "(unset)"
}

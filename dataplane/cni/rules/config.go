package rules

import (
	"fmt"
	"net/netip"
)

// Ports and marks fixed by the design (Istio's ambient values).
const (
	DefaultOutboundPort = 15001
	DefaultInboundPort  = 15006
	DefaultHBONEPort    = 15008
	// DefaultProxyMark is the SO_MARK ztunnel sets on its own sockets.
	DefaultProxyMark = 0x539
	DefaultMarkMask  = 0xfff
)

// DefaultProbeSource is the address kubelet probes to a pod's IPv4 address
// are SNATed to on the host.
var DefaultProbeSource = netip.MustParseAddr("169.254.7.127")

// DefaultProbeSourceIPv6 is the same for probes to a pod's IPv6 address. It
// is the unique local address Istio uses for its IPv6 probe SNAT, so pod
// networks that already keep it out of their ranges need no change.
var DefaultProbeSourceIPv6 = netip.MustParseAddr("fd16:9254:7127:1337:ffff:ffff:ffff:ffff")

// PodConfig says how a pod's traffic is captured.
type PodConfig struct {
	// OutboundPort receives the pod's outbound TCP (15001).
	OutboundPort uint16
	// InboundPort receives plaintext inbound TCP (15006).
	InboundPort uint16
	// HBONEPort is left uncaptured inbound (15008).
	HBONEPort uint16
	// ProxyMark/MarkMask identify ztunnel's own sockets, never captured.
	ProxyMark uint32
	MarkMask  uint32
	// ProbeSource and ProbeSourceIPv6 are the SNAT addresses of kubelet
	// probes to the pod's IPv4 and IPv6 addresses, never captured.
	ProbeSource     netip.Addr
	ProbeSourceIPv6 netip.Addr
}

// DefaultPodConfig returns the configuration from the design brief.
func DefaultPodConfig() PodConfig {
	return PodConfig{
		OutboundPort:    DefaultOutboundPort,
		InboundPort:     DefaultInboundPort,
		HBONEPort:       DefaultHBONEPort,
		ProxyMark:       DefaultProxyMark,
		MarkMask:        DefaultMarkMask,
		ProbeSource:     DefaultProbeSource,
		ProbeSourceIPv6: DefaultProbeSourceIPv6,
	}
}

// Validate reports the first field that cannot produce working rules.
func (c PodConfig) Validate() error {
	switch {
	case c.OutboundPort == 0:
		return fmt.Errorf("outboundPort: must be set")
	case c.InboundPort == 0:
		return fmt.Errorf("inboundPort: must be set")
	case c.HBONEPort == 0:
		return fmt.Errorf("hbonePort: must be set")
	case c.ProxyMark == 0 || c.MarkMask == 0:
		return fmt.Errorf("proxyMark: mark and mask must be non-zero")
	case c.ProxyMark&c.MarkMask != c.ProxyMark:
		return fmt.Errorf("proxyMark: %#x has bits outside mask %#x", c.ProxyMark, c.MarkMask)
	case !c.ProbeSource.Is4():
		return fmt.Errorf("probeSource: %q must be an IPv4 address", c.ProbeSource)
	case !c.ProbeSourceIPv6.Is6() || c.ProbeSourceIPv6.Is4In6():
		return fmt.Errorf("probeSourceIPv6: %q must be an IPv6 address", c.ProbeSourceIPv6)
	}
	return nil
}

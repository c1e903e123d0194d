package rules

import (
	"fmt"
	"net/netip"
	"os"
	"slices"
)

// The rule model both backends translate: a rule is a conjunction of
// matches and one verdict. Keeping it as data lets the two backends stay
// equivalent and lets tests read the intent without a kernel.

type verdict int

const (
	verdictReturn verdict = iota
	verdictRedirect
	verdictSNAT
)

type rule struct {
	// comment names what the rule does; it is unique within its chain and
	// mentions every parameter, so a changed config changes the comment.
	comment  string
	inIface  string
	outIface string
	src      netip.Prefix
	dst      netip.Prefix
	tcp      bool
	dstPort  uint16
	mark     uint32
	markMask uint32 // zero: no mark match
	// srcLocal matches packets whose source is an address of this netns
	// (locally generated, e.g. kubelet on the node).
	srcLocal bool
	verdict  verdict
	toPort   uint16
	toAddr   netip.Addr
}

// hook is where a chain sees packets.
type hook string

const (
	hookPrerouting  hook = "prerouting"
	hookOutput      hook = "output"
	hookPostrouting hook = "postrouting"
)

type chain struct {
	hook  hook
	rules []rule
}

const commentPrefix = "ambientmesh: "

// ipFamily is the IP version one copy of the rules is for: both backends
// install the model once per family (iptables and ip6tables; nftables
// tables of family ip and ip6), the same rules but for the probe address.
type ipFamily int

const (
	ipv4 ipFamily = 4
	ipv6 ipFamily = 6
)

func (f ipFamily) String() string { return fmt.Sprintf("IPv%d", int(f)) }

// has reports whether a belongs to the family (IPv4-mapped IPv6 addresses
// are IPv4).
func (f ipFamily) has(a netip.Addr) bool { return a.Unmap().Is4() == (f == ipv4) }

// probeSource is the family's kubelet probe SNAT address.
func (f ipFamily) probeSource(cfg PodConfig) netip.Addr {
	if f == ipv6 {
		return cfg.ProbeSourceIPv6
	}
	return cfg.ProbeSource
}

// families lists what the backends capture: IPv4 always, IPv6 whenever the
// kernel has it, whatever addresses the pod has (an IPv4-only pod still
// reaches its link neighbours over IPv6 link-local addresses). IPv6 comes
// first, so an Install that cannot capture IPv6 fails before it touches
// IPv4: a pod is never left with only part of its traffic captured by it.
func families() []ipFamily {
	if kernelHasIPv6() {
		return []ipFamily{ipv6, ipv4}
	}
	return []ipFamily{ipv4}
}

// kernelHasIPv6 is false when the kernel was built without IPv6 or booted
// with ipv6.disable=1: then no namespace can carry IPv6 traffic, and no
// IPv6 rule could be installed. The net.ipv6 sysctl tree exists in every
// namespace exactly when IPv6 is up, so the agent's own namespace answers
// for every pod. (disable_ipv6=1 in a pod does not count: the IPv6 rules
// install there all the same.)
func kernelHasIPv6() bool {
	_, err := os.Stat("/proc/sys/net/ipv6")
	return err == nil
}

// podChains is the in-pod capture of one family, by hook.
func podChains(cfg PodConfig, f ipFamily) []chain {
	probe := f.probeSource(cfg)
	mark := func() rule {
		return rule{
			comment:  fmt.Sprintf("proxy traffic (mark %#x/%#x) is not captured", cfg.ProxyMark, cfg.MarkMask),
			mark:     cfg.ProxyMark,
			markMask: cfg.MarkMask,
		}
	}
	return []chain{
		{hook: hookPrerouting, rules: []rule{
			{comment: "inbound loopback is not captured", inIface: "lo"},
			{comment: fmt.Sprintf("kubelet probes from %s are not captured", probe), src: netip.PrefixFrom(probe, probe.BitLen())},
			mark(),
			{comment: fmt.Sprintf("HBONE to %d is not captured", cfg.HBONEPort), tcp: true, dstPort: cfg.HBONEPort},
			{comment: fmt.Sprintf("inbound TCP to ztunnel %d", cfg.InboundPort), tcp: true, verdict: verdictRedirect, toPort: cfg.InboundPort},
		}},
		{hook: hookOutput, rules: []rule{
			{comment: "outbound loopback is not captured", outIface: "lo"},
			mark(),
			{comment: fmt.Sprintf("outbound TCP to ztunnel %d", cfg.OutboundPort), tcp: true, verdict: verdictRedirect, toPort: cfg.OutboundPort},
		}},
	}
}

// hostRules SNATs TCP from the node itself to each enrolled pod IP of the
// family to the family's probe source address. IPs are sorted so the result
// is deterministic.
func hostRules(cfg PodConfig, f ipFamily, podIPs []netip.Addr) []rule {
	var ips []netip.Addr
	for _, ip := range podIPs {
		if f.has(ip) {
			ips = append(ips, ip.Unmap())
		}
	}
	slices.SortFunc(ips, func(a, b netip.Addr) int { return a.Compare(b) })
	ips = slices.Compact(ips)
	probe := f.probeSource(cfg)
	out := make([]rule, 0, len(ips))
	for _, ip := range ips {
		out = append(out, rule{
			comment:  fmt.Sprintf("kubelet probes to pod %s from %s", ip, probe),
			dst:      netip.PrefixFrom(ip, ip.BitLen()),
			tcp:      true,
			srcLocal: true,
			verdict:  verdictSNAT,
			toAddr:   probe,
		})
	}
	return out
}

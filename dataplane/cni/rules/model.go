package rules

import (
	"fmt"
	"net/netip"
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

// podChains is the in-pod capture, by hook.
func podChains(cfg PodConfig) []chain {
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
			{comment: fmt.Sprintf("kubelet probes from %s are not captured", cfg.ProbeSource), src: netip.PrefixFrom(cfg.ProbeSource, 32)},
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

// hostRules SNATs TCP from the node itself to each enrolled pod IP to the
// probe source address. IPs are sorted so the result is deterministic.
func hostRules(cfg PodConfig, podIPs []netip.Addr) []rule {
	ips := slices.Clone(podIPs)
	slices.SortFunc(ips, func(a, b netip.Addr) int { return a.Compare(b) })
	ips = slices.Compact(ips)
	out := make([]rule, 0, len(ips))
	for _, ip := range ips {
		if !ip.Is4() {
			continue // probe SNAT is IPv4 only, like the rest of the capture
		}
		out = append(out, rule{
			comment:  fmt.Sprintf("kubelet probes to pod %s from %s", ip, cfg.ProbeSource),
			dst:      netip.PrefixFrom(ip, 32),
			tcp:      true,
			srcLocal: true,
			verdict:  verdictSNAT,
			toAddr:   cfg.ProbeSource,
		})
	}
	return out
}

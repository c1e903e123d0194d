package rules

import (
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
	"strings"

	"github.com/coreos/go-iptables/iptables"
	"github.com/google/nftables"
)

const natTable = "nat"

// iptablesRules drives the iptables binary inside the target netns.
type iptablesRules struct{}

func (*iptablesRules) Backend() string { return BackendIPTables }

func iptChain(h hook) string     { return "AMBIENT-" + strings.ToUpper(string(h)) }
func builtinChain(h hook) string { return strings.ToUpper(string(h)) }

// iptablesSpec is the rule as iptables arguments, in the canonical order
// `iptables -S` prints them, so listed rules compare equal as strings.
func iptablesSpec(r rule) []string {
	var s []string
	if r.src.IsValid() {
		s = append(s, "-s", r.src.String())
	}
	if r.dst.IsValid() {
		s = append(s, "-d", r.dst.String())
	}
	if r.inIface != "" {
		s = append(s, "-i", r.inIface)
	}
	if r.outIface != "" {
		s = append(s, "-o", r.outIface)
	}
	if r.tcp {
		s = append(s, "-p", "tcp")
		if r.dstPort != 0 {
			s = append(s, "-m", "tcp", "--dport", strconv.Itoa(int(r.dstPort)))
		}
	}
	if r.srcLocal {
		s = append(s, "-m", "addrtype", "--src-type", "LOCAL")
	}
	if r.markMask != 0 {
		s = append(s, "-m", "mark", "--mark", fmt.Sprintf("%#x/%#x", r.mark, r.markMask))
	}
	s = append(s, "-m", "comment", "--comment", commentPrefix+r.comment)
	switch r.verdict {
	case verdictReturn:
		s = append(s, "-j", "RETURN")
	case verdictRedirect:
		s = append(s, "-j", "REDIRECT", "--to-ports", strconv.Itoa(int(r.toPort)))
	case verdictSNAT:
		s = append(s, "-j", "SNAT", "--to-source", r.toAddr.String())
	}
	return s
}

// iptablesLine renders one rule as `iptables -S` prints it.
func iptablesLine(chain string, r rule) string {
	args := iptablesSpec(r)
	for i, a := range args {
		if strings.ContainsAny(a, " \"") {
			args[i] = strconv.Quote(a)
		}
	}
	return "-A " + chain + " " + strings.Join(args, " ")
}

// iptablesSave renders chains the way iptables-save shows them in *nat.
func iptablesSave(chains []chain) []string {
	var out []string
	for _, c := range chains {
		out = append(out, ":"+iptChain(c.hook)+" - [0:0]")
	}
	for _, c := range chains {
		out = append(out, "-A "+builtinChain(c.hook)+" -j "+iptChain(c.hook))
	}
	for _, c := range chains {
		for _, r := range c.rules {
			out = append(out, iptablesLine(iptChain(c.hook), r))
		}
	}
	return out
}

// iptablesCommand is the binary that programs the family.
func iptablesCommand(f ipFamily) string {
	if f == ipv6 {
		return "ip6tables"
	}
	return "iptables"
}

func newIPTables(f ipFamily) (*iptables.IPTables, error) {
	proto := iptables.ProtocolIPv4
	if f == ipv6 {
		proto = iptables.ProtocolIPv6
	}
	ipt, err := iptables.New(iptables.IPFamily(proto), iptables.Timeout(10))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", iptablesCommand(f), err)
	}
	return ipt, nil
}

// familyError names the family that failed; for IPv6 it also says why the
// family cannot be skipped.
func familyError(f ipFamily, err error) error {
	if f == ipv6 {
		return fmt.Errorf("capturing IPv6 (the kernel has IPv6, so the pod's IPv6 traffic must be captured too): %w", err)
	}
	return fmt.Errorf("capturing IPv4: %w", err)
}

func (b *iptablesRules) Install(netnsPath string, cfg PodConfig) (bool, error) {
	if err := cfg.Validate(); err != nil {
		return false, err
	}
	changed := false
	for _, f := range families() {
		familyChanged, err := b.apply(netnsPath, f, podChains(cfg, f))
		changed = changed || familyChanged
		if err != nil {
			return changed, familyError(f, err)
		}
	}
	return changed, nil
}

// apply reconciles each chain's rules first and its jump second, so capture
// is never half-wired: a jump only ever points at a complete chain.
func (b *iptablesRules) apply(netnsPath string, f ipFamily, chains []chain) (bool, error) {
	changed := false
	err := inNetNS(netnsPath, func() error {
		ipt, err := newIPTables(f)
		if err != nil {
			return err
		}
		for _, c := range chains {
			rulesChanged, err := reconcileChain(ipt, iptChain(c.hook), c.rules)
			if err != nil {
				return err
			}
			jumpChanged, err := ensureFirstJump(ipt, builtinChain(c.hook), iptChain(c.hook))
			if err != nil {
				return err
			}
			changed = changed || rulesChanged || jumpChanged
		}
		return nil
	})
	return changed, err
}

// chainRules lists a chain's rules as `iptables -S` lines (no -N/-P lines).
func chainRules(ipt *iptables.IPTables, chain string) ([]string, error) {
	lines, err := ipt.List(natTable, chain)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(lines, func(l string) bool { return !strings.HasPrefix(l, "-A ") }), nil
}

func reconcileChain(ipt *iptables.IPTables, chain string, want []rule) (bool, error) {
	wantLines := make([]string, len(want))
	for i, r := range want {
		wantLines[i] = iptablesLine(chain, r)
	}
	exists, err := ipt.ChainExists(natTable, chain)
	if err != nil {
		return false, err
	}
	if exists {
		got, err := chainRules(ipt, chain)
		if err != nil {
			return false, err
		}
		if slices.Equal(got, wantLines) {
			return false, nil
		}
	}
	if err := ipt.ClearChain(natTable, chain); err != nil { // creates or flushes
		return false, err
	}
	for _, r := range want {
		if err := ipt.Append(natTable, chain, iptablesSpec(r)...); err != nil {
			return false, err
		}
	}
	return true, nil
}

// ensureFirstJump keeps `-j chain` as the first rule of builtin, so no rule
// another component inserts at the top can bypass the capture.
func ensureFirstJump(ipt *iptables.IPTables, builtin, chain string) (bool, error) {
	jump := "-A " + builtin + " -j " + chain
	got, err := chainRules(ipt, builtin)
	if err != nil {
		return false, err
	}
	if len(got) > 0 && got[0] == jump {
		return false, nil
	}
	if slices.Contains(got, jump) {
		if err := ipt.Delete(natTable, builtin, "-j", chain); err != nil {
			return false, err
		}
	}
	return true, ipt.Insert(natTable, builtin, 1, "-j", chain)
}

func (b *iptablesRules) Check(netnsPath string, cfg PodConfig) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	present := 0
	var drift []string
	err := inNetNS(netnsPath, func() error {
		for _, f := range families() {
			ipt, err := newIPTables(f)
			if err != nil {
				return err
			}
			familyPresent, familyDrift, err := checkChains(ipt, podChains(cfg, f))
			if err != nil {
				return fmt.Errorf("%s: %w", iptablesCommand(f), err)
			}
			present += familyPresent
			for _, d := range familyDrift {
				drift = append(drift, iptablesCommand(f)+": "+d)
			}
		}
		return nil
	})
	switch {
	case err != nil:
		return err
	case present == 0:
		return fmt.Errorf("iptables: %w", ErrNotInstalled)
	case len(drift) > 0:
		return fmt.Errorf("%s", strings.Join(drift, "; "))
	}
	return nil
}

// checkChains counts the chains present and lists how they differ from
// chains.
func checkChains(ipt *iptables.IPTables, chains []chain) (present int, drift []string, err error) {
	for _, c := range chains {
		name := iptChain(c.hook)
		exists, err := ipt.ChainExists(natTable, name)
		if err != nil {
			return 0, nil, err
		}
		if !exists {
			drift = append(drift, "chain "+name+" is missing")
			continue
		}
		present++
		got, err := chainRules(ipt, name)
		if err != nil {
			return 0, nil, err
		}
		want := make([]string, len(c.rules))
		for i, r := range c.rules {
			want[i] = iptablesLine(name, r)
		}
		if !slices.Equal(got, want) {
			drift = append(drift, fmt.Sprintf("chain %s has %q, want %q", name, got, want))
		}
		builtin, err := chainRules(ipt, builtinChain(c.hook))
		if err != nil {
			return 0, nil, err
		}
		if len(builtin) == 0 || builtin[0] != "-A "+builtinChain(c.hook)+" -j "+name {
			drift = append(drift, fmt.Sprintf("%s does not jump to %s first", builtinChain(c.hook), name))
		}
	}
	return present, drift, nil
}

func (b *iptablesRules) Remove(netnsPath string) (bool, error) {
	removed := false
	var errs []error
	for _, f := range families() {
		familyRemoved, err := b.remove(netnsPath, f, []hook{hookPrerouting, hookOutput})
		removed = removed || familyRemoved
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", iptablesCommand(f), err))
		}
	}
	return removed, errors.Join(errs...)
}

// remove takes the jumps out first (capture stops at once), then the chains,
// then a nat table iptables-nft created for us and left empty.
func (b *iptablesRules) remove(netnsPath string, f ipFamily, hooks []hook) (bool, error) {
	removed := false
	err := withNetNSFd(netnsPath, func(fd int) error {
		return inNetNS(netnsPath, func() error {
			ipt, err := newIPTables(f)
			if err != nil {
				return err
			}
			for _, h := range hooks {
				if ok, _ := ipt.ChainExists(natTable, builtinChain(h)); !ok {
					continue
				}
				if exists, err := ipt.Exists(natTable, builtinChain(h), "-j", iptChain(h)); err == nil && exists {
					removed = true
					if err := ipt.Delete(natTable, builtinChain(h), "-j", iptChain(h)); err != nil {
						return err
					}
				}
				if exists, err := ipt.ChainExists(natTable, iptChain(h)); err != nil {
					return err
				} else if exists {
					removed = true
					if err := ipt.ClearAndDeleteChain(natTable, iptChain(h)); err != nil {
						return err
					}
				}
			}
			if !removed {
				return nil
			}
			return tidyNFTNat(fd, f, hooks)
		})
	})
	return removed, err
}

// tidyNFTNat undoes what iptables-nft does behind our back: it creates the
// "ip nat" table ("ip6 nat" for ip6tables) and each built-in chain on first
// use and never deletes them. When iptables runs on nf_tables, the built-in chains we used that
// are now empty with an accept policy are deleted, then the table if it is
// empty, so the pod's ruleset reads the same as before Install. An empty
// accepting base chain does nothing, so no behaviour is lost.
func tidyNFTNat(netnsFd int, f ipFamily, hooks []hook) error {
	if !iptablesIsNFT() {
		return nil
	}
	conn, err := nftConn(netnsFd)
	if err != nil {
		return err
	}
	tables, err := conn.ListTablesOfFamily(nftFamily(f))
	if err != nil {
		return fmt.Errorf("nftables: list tables: %w", err)
	}
	i := slices.IndexFunc(tables, func(t *nftables.Table) bool { return t.Name == natTable })
	if i < 0 {
		return nil
	}
	table := tables[i]
	chains, err := conn.ListChainsOfTableFamily(nftFamily(f))
	if err != nil {
		return fmt.Errorf("nftables: list chains: %w", err)
	}
	remaining := 0
	for _, c := range chains {
		if c.Table.Name != natTable {
			continue
		}
		remaining++
		if !slices.ContainsFunc(hooks, func(h hook) bool { return builtinChain(h) == c.Name }) ||
			c.Policy == nil || *c.Policy != nftables.ChainPolicyAccept {
			continue
		}
		rules, err := conn.GetRules(table, c)
		if err != nil {
			return fmt.Errorf("nftables: list rules of nat %s: %w", c.Name, err)
		}
		if len(rules) == 0 {
			conn.DelChain(c)
			remaining--
		}
	}
	if remaining == 0 {
		conn.DelTable(table)
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("nftables: tidy nat table: %w", err)
	}
	return nil
}

// iptablesIsNFT reports whether the iptables binary is the nf_tables variant
// (Debian switches iptables and ip6tables together).
func iptablesIsNFT() bool {
	out, err := exec.Command("iptables", "--version").Output()
	return err == nil && strings.Contains(string(out), "nf_tables")
}

// SyncHost keeps one chain per family, holding the SNAT rules of that
// family's pod IPs; a family without pod IPs has no chain.
func (b *iptablesRules) SyncHost(netnsPath string, cfg PodConfig, podIPs []netip.Addr) (bool, error) {
	if err := cfg.Validate(); err != nil {
		return false, err
	}
	changed := false
	for _, f := range families() {
		var familyChanged bool
		var err error
		if rules := hostRules(cfg, f, podIPs); len(rules) > 0 {
			familyChanged, err = b.apply(netnsPath, f, []chain{{hook: hookPostrouting, rules: rules}})
		} else {
			familyChanged, err = b.remove(netnsPath, f, []hook{hookPostrouting})
		}
		changed = changed || familyChanged
		if err != nil {
			return changed, fmt.Errorf("%s: %w", iptablesCommand(f), err)
		}
	}
	return changed, nil
}

func (b *iptablesRules) RemoveHost(netnsPath string) error {
	var errs []error
	for _, f := range families() {
		if _, err := b.remove(netnsPath, f, []hook{hookPostrouting}); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", iptablesCommand(f), err))
		}
	}
	return errors.Join(errs...)
}

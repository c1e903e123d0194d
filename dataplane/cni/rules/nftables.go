package rules

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// Table names of the nftables backend. Each exists once per family (ip and
// ip6) with the same chains; the rules differ only in the probe address.
const (
	nftPodTable  = "ambientmesh"
	nftHostTable = "ambientmesh-host"
)

// nftablesRules programs nf_tables over netlink from a socket opened in the
// target netns; no thread ever changes namespace.
type nftablesRules struct{}

func (*nftablesRules) Backend() string { return BackendNFTables }

// nftChain is the base chain a hook's rules live in. The postrouting SNAT
// runs one step before srcnat so it decides before the primary CNI's
// masquerade (the first NAT decision for a connection wins).
func nftChain(t *nftables.Table, h hook) *nftables.Chain {
	accept := nftables.ChainPolicyAccept
	c := &nftables.Chain{Name: string(h), Table: t, Type: nftables.ChainTypeNAT, Policy: &accept}
	switch h {
	case hookPrerouting:
		c.Hooknum, c.Priority = nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest
	case hookOutput:
		c.Hooknum, c.Priority = nftables.ChainHookOutput, nftables.ChainPriorityNATDest
	case hookPostrouting:
		c.Hooknum, c.Priority = nftables.ChainHookPostrouting, nftables.ChainPriorityRef(*nftables.ChainPriorityNATSource-1)
	}
	return c
}

// nftFamily is the nf_tables family of an IP version's tables.
func nftFamily(f ipFamily) nftables.TableFamily {
	if f == ipv6 {
		return nftables.TableFamilyIPv6
	}
	return nftables.TableFamilyIPv4
}

// nftFamilyName is how nft names the family ("ip" or "ip6").
func nftFamilyName(f ipFamily) string {
	if f == ipv6 {
		return "ip6"
	}
	return "ip"
}

func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

// nftExprs translates one rule of the model into nf_tables expressions.
func nftExprs(r rule) []expr.Any {
	var e []expr.Any
	cmpEq := func(data []byte) *expr.Cmp { return &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: data} }
	if r.inIface != "" {
		e = append(e, &expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}, cmpEq(ifname(r.inIface)))
	}
	if r.outIface != "" {
		e = append(e, &expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1}, cmpEq(ifname(r.outIface)))
	}
	// Source and destination addresses in the IPv4 and IPv6 headers.
	addr := func(p netip.Prefix, offset4, offset6 uint32) {
		offset := offset4
		if p.Addr().Is6() {
			offset = offset6
		}
		size := uint32(p.Addr().BitLen() / 8)
		e = append(e, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: size})
		if p.Bits() < p.Addr().BitLen() {
			e = append(e, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: size, Mask: prefixMask(p), Xor: make([]byte, size)})
		}
		e = append(e, cmpEq(p.Masked().Addr().AsSlice()))
	}
	if r.src.IsValid() {
		addr(r.src, 12, 8)
	}
	if r.dst.IsValid() {
		addr(r.dst, 16, 24)
	}
	if r.tcp {
		e = append(e, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, cmpEq([]byte{unix.IPPROTO_TCP}))
		if r.dstPort != 0 {
			e = append(e,
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
				cmpEq(binaryutil.BigEndian.PutUint16(r.dstPort)))
		}
	}
	if r.srcLocal {
		e = append(e,
			&expr.Fib{Register: 1, FlagSADDR: true, ResultADDRTYPE: true},
			cmpEq(binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)))
	}
	if r.markMask != 0 {
		e = append(e,
			&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(r.markMask), Xor: make([]byte, 4)},
			cmpEq(binaryutil.NativeEndian.PutUint32(r.mark)))
	}
	switch r.verdict {
	case verdictReturn:
		e = append(e, &expr.Verdict{Kind: expr.VerdictReturn})
	case verdictRedirect:
		e = append(e,
			&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(r.toPort)},
			&expr.Redir{RegisterProtoMin: 1})
	case verdictSNAT:
		family := uint32(unix.NFPROTO_IPV4)
		if r.toAddr.Is6() {
			family = unix.NFPROTO_IPV6
		}
		e = append(e,
			&expr.Immediate{Register: 1, Data: r.toAddr.AsSlice()},
			&expr.NAT{Type: expr.NATTypeSourceNAT, Family: family, RegAddrMin: 1})
	}
	return e
}

// prefixMask is the network mask of p, as bytes of p's address length.
func prefixMask(p netip.Prefix) []byte {
	mask := make([]byte, p.Addr().BitLen()/8)
	for i, bits := 0, p.Bits(); bits > 0; i, bits = i+1, bits-8 {
		mask[i] = ^byte(0) << max(8-bits, 0)
	}
	return mask
}

// nftComment is the rule's comment as stored in its userdata, the same
// encoding the nft tool uses, so `nft list ruleset` shows it.
func nftComment(r rule) []byte {
	return userdata.AppendString(nil, userdata.TypeComment, commentPrefix+r.comment)
}

func nftConn(netnsFd int) (*nftables.Conn, error) {
	var opts []nftables.ConnOption
	if netnsFd >= 0 {
		opts = append(opts, nftables.WithNetNSFd(netnsFd))
	}
	conn, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	return conn, nil
}

// nftWant is the wanted content of one family's table: no chains means no
// table at all.
type nftWant struct {
	family ipFamily
	chains []chain
}

// podWants is the in-pod capture of every family.
func podWants(cfg PodConfig) []nftWant {
	var wants []nftWant
	for _, f := range families() {
		wants = append(wants, nftWant{family: f, chains: podChains(cfg, f)})
	}
	return wants
}

func (b *nftablesRules) Install(netnsPath string, cfg PodConfig) (bool, error) {
	if err := cfg.Validate(); err != nil {
		return false, err
	}
	return nftApply(netnsPath, nftPodTable, podWants(cfg))
}

// nftApply replaces the family tables named tableName that differ from
// wants, all in one netlink batch: one nf_tables transaction, so the old
// rules stay active until the new ones are, and either every family is
// programmed or none is (a pod is never left with its IPv4 captured and its
// IPv6 not).
func nftApply(netnsPath, tableName string, wants []nftWant) (bool, error) {
	changed := false
	err := withNetNSFd(netnsPath, func(fd int) error {
		conn, err := nftConn(fd)
		if err != nil {
			return err
		}
		var programmed []string
		for _, w := range wants {
			exists, drift, err := nftDrift(conn, w.family, tableName, w.chains)
			if err != nil {
				return err
			}
			if len(drift) == 0 {
				continue
			}
			table := &nftables.Table{Name: tableName, Family: nftFamily(w.family)}
			programmed = append(programmed, nftFamilyName(w.family)+" "+tableName)
			if exists {
				conn.DelTable(table)
			}
			if len(w.chains) == 0 {
				continue
			}
			conn.AddTable(table)
			for _, c := range w.chains {
				ch := conn.AddChain(nftChain(table, c.hook))
				for _, r := range c.rules {
					conn.AddRule(&nftables.Rule{Table: table, Chain: ch, Exprs: nftExprs(r), UserData: nftComment(r)})
				}
			}
		}
		if len(programmed) == 0 {
			return nil
		}
		if err := conn.Flush(); err != nil {
			return fmt.Errorf("nftables: program table %s: %w", strings.Join(programmed, " and "), err)
		}
		changed = true
		return nil
	})
	return changed, err
}

// nftDrift reports whether the family's table exists and lists every way it
// differs from chains (nil: identical; with no chains the table should not
// exist). Rules are compared by their comments, which name every parameter.
func nftDrift(conn *nftables.Conn, f ipFamily, tableName string, chains []chain) (exists bool, drift []string, err error) {
	name := nftFamilyName(f) + " " + tableName
	tables, err := conn.ListTablesOfFamily(nftFamily(f))
	if err != nil {
		return false, nil, fmt.Errorf("nftables: list %s tables: %w", nftFamilyName(f), err)
	}
	i := slices.IndexFunc(tables, func(t *nftables.Table) bool { return t.Name == tableName })
	switch {
	case i < 0 && len(chains) == 0:
		return false, nil, nil
	case i < 0:
		return false, []string{"table " + name + " is missing"}, nil
	case len(chains) == 0:
		return true, []string{"table " + name + " should not exist"}, nil
	}
	table := tables[i]
	all, err := conn.ListChainsOfTableFamily(nftFamily(f))
	if err != nil {
		return true, nil, fmt.Errorf("nftables: list %s chains: %w", nftFamilyName(f), err)
	}
	got := map[string]*nftables.Chain{}
	for _, c := range all {
		if c.Table.Name == tableName {
			got[c.Name] = c
		}
	}
	if len(got) != len(chains) {
		drift = append(drift, fmt.Sprintf("table %s has %d chains, want %d", name, len(got), len(chains)))
	}
	for _, c := range chains {
		want := nftChain(table, c.hook)
		have, ok := got[want.Name]
		if !ok {
			drift = append(drift, "chain "+want.Name+" of "+name+" is missing")
			continue
		}
		if have.Type != want.Type || !eqPtr(have.Hooknum, want.Hooknum) || !eqPtr(have.Priority, want.Priority) {
			drift = append(drift, "chain "+want.Name+" of "+name+" has the wrong type, hook or priority")
		}
		rules, err := conn.GetRules(table, have)
		if err != nil {
			return true, nil, fmt.Errorf("nftables: list rules of %s %s: %w", name, want.Name, err)
		}
		var haveComments, wantComments []string
		for _, r := range rules {
			comment, _ := userdata.GetString(r.UserData, userdata.TypeComment)
			haveComments = append(haveComments, comment)
		}
		for _, r := range c.rules {
			wantComments = append(wantComments, commentPrefix+r.comment)
		}
		if !slices.Equal(haveComments, wantComments) {
			drift = append(drift, fmt.Sprintf("chain %s of %s has rules %q, want %q", want.Name, name, haveComments, wantComments))
		}
	}
	return true, drift, nil
}

func eqPtr[T comparable](a, b *T) bool { return a != nil && b != nil && *a == *b }

func (b *nftablesRules) Check(netnsPath string, cfg PodConfig) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	return withNetNSFd(netnsPath, func(fd int) error {
		conn, err := nftConn(fd)
		if err != nil {
			return err
		}
		present := 0
		var drift []string
		for _, w := range podWants(cfg) {
			exists, familyDrift, err := nftDrift(conn, w.family, nftPodTable, w.chains)
			if err != nil {
				return err
			}
			if exists {
				present++
			}
			drift = append(drift, familyDrift...)
		}
		switch {
		case present == 0:
			return fmt.Errorf("nftables: %w", ErrNotInstalled)
		case len(drift) > 0:
			return fmt.Errorf("nftables: %s", strings.Join(drift, "; "))
		}
		return nil
	})
}

func (b *nftablesRules) Remove(netnsPath string) (bool, error) {
	return nftApply(netnsPath, nftPodTable, noTables())
}

// noTables wants the table of every family gone.
func noTables() []nftWant {
	var wants []nftWant
	for _, f := range families() {
		wants = append(wants, nftWant{family: f})
	}
	return wants
}

// SyncHost keeps one table per family, holding the SNAT rules of that
// family's pod IPs; a family without pod IPs has no table.
func (b *nftablesRules) SyncHost(netnsPath string, cfg PodConfig, podIPs []netip.Addr) (bool, error) {
	if err := cfg.Validate(); err != nil {
		return false, err
	}
	var wants []nftWant
	for _, f := range families() {
		w := nftWant{family: f}
		if rules := hostRules(cfg, f, podIPs); len(rules) > 0 {
			w.chains = []chain{{hook: hookPostrouting, rules: rules}}
		}
		wants = append(wants, w)
	}
	return nftApply(netnsPath, nftHostTable, wants)
}

func (b *nftablesRules) RemoveHost(netnsPath string) error {
	_, err := nftApply(netnsPath, nftHostTable, noTables())
	return err
}

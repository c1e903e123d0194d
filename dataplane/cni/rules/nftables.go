package rules

import (
	"encoding/binary"
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

// Table names of the nftables backend; both are family ip.
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
	addr := func(p netip.Prefix, offset uint32) {
		e = append(e, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4})
		if p.Bits() < 32 {
			mask := binary.BigEndian.AppendUint32(nil, ^uint32(0)<<(32-p.Bits()))
			e = append(e, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)})
		}
		ip := p.Masked().Addr().As4()
		e = append(e, cmpEq(ip[:]))
	}
	if r.src.IsValid() {
		addr(r.src, 12)
	}
	if r.dst.IsValid() {
		addr(r.dst, 16)
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
		ip := r.toAddr.As4()
		e = append(e,
			&expr.Immediate{Register: 1, Data: ip[:]},
			&expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1})
	}
	return e
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

func (b *nftablesRules) Install(netnsPath string, cfg PodConfig) (bool, error) {
	if err := cfg.Validate(); err != nil {
		return false, err
	}
	return nftApply(netnsPath, nftPodTable, podChains(cfg))
}

// nftApply replaces the table in one netlink batch (one nf_tables
// transaction: the old rules stay active until the new ones are), unless it
// already holds exactly the wanted chains and rules.
func nftApply(netnsPath, tableName string, chains []chain) (bool, error) {
	changed := false
	err := withNetNSFd(netnsPath, func(fd int) error {
		conn, err := nftConn(fd)
		if err != nil {
			return err
		}
		drift, err := nftDrift(conn, tableName, chains)
		if err != nil || len(drift) == 0 {
			return err
		}
		changed = true
		table := &nftables.Table{Name: tableName, Family: nftables.TableFamilyIPv4}
		if !slices.Contains(drift, "table "+tableName+" is missing") {
			conn.DelTable(table)
		}
		conn.AddTable(table)
		for _, c := range chains {
			ch := conn.AddChain(nftChain(table, c.hook))
			for _, r := range c.rules {
				conn.AddRule(&nftables.Rule{Table: table, Chain: ch, Exprs: nftExprs(r), UserData: nftComment(r)})
			}
		}
		if err := conn.Flush(); err != nil {
			return fmt.Errorf("nftables: program table %s: %w", tableName, err)
		}
		return nil
	})
	return changed, err
}

// nftDrift lists every way the table differs from chains (nil: identical).
// Rules are compared by their comments, which name every parameter.
func nftDrift(conn *nftables.Conn, tableName string, chains []chain) ([]string, error) {
	tables, err := conn.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return nil, fmt.Errorf("nftables: list tables: %w", err)
	}
	i := slices.IndexFunc(tables, func(t *nftables.Table) bool { return t.Name == tableName })
	if i < 0 {
		return []string{"table " + tableName + " is missing"}, nil
	}
	table := tables[i]
	all, err := conn.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return nil, fmt.Errorf("nftables: list chains: %w", err)
	}
	got := map[string]*nftables.Chain{}
	for _, c := range all {
		if c.Table.Name == tableName {
			got[c.Name] = c
		}
	}
	var drift []string
	if len(got) != len(chains) {
		drift = append(drift, fmt.Sprintf("table %s has %d chains, want %d", tableName, len(got), len(chains)))
	}
	for _, c := range chains {
		want := nftChain(table, c.hook)
		have, ok := got[want.Name]
		if !ok {
			drift = append(drift, "chain "+want.Name+" is missing")
			continue
		}
		if have.Type != want.Type || !eqPtr(have.Hooknum, want.Hooknum) || !eqPtr(have.Priority, want.Priority) {
			drift = append(drift, "chain "+want.Name+" has the wrong type, hook or priority")
		}
		rules, err := conn.GetRules(table, have)
		if err != nil {
			return nil, fmt.Errorf("nftables: list rules of %s: %w", want.Name, err)
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
			drift = append(drift, fmt.Sprintf("chain %s has rules %q, want %q", want.Name, haveComments, wantComments))
		}
	}
	return drift, nil
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
		drift, err := nftDrift(conn, nftPodTable, podChains(cfg))
		switch {
		case err != nil:
			return err
		case len(drift) == 1 && strings.HasSuffix(drift[0], "is missing") && strings.HasPrefix(drift[0], "table"):
			return fmt.Errorf("nftables: %w", ErrNotInstalled)
		case len(drift) > 0:
			return fmt.Errorf("nftables: %s", strings.Join(drift, "; "))
		}
		return nil
	})
}

func (b *nftablesRules) Remove(netnsPath string) (bool, error) {
	return nftDelete(netnsPath, nftPodTable)
}

func nftDelete(netnsPath, tableName string) (bool, error) {
	removed := false
	err := withNetNSFd(netnsPath, func(fd int) error {
		conn, err := nftConn(fd)
		if err != nil {
			return err
		}
		tables, err := conn.ListTablesOfFamily(nftables.TableFamilyIPv4)
		if err != nil {
			return fmt.Errorf("nftables: list tables: %w", err)
		}
		if !slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == tableName }) {
			return nil
		}
		removed = true
		conn.DelTable(&nftables.Table{Name: tableName, Family: nftables.TableFamilyIPv4})
		if err := conn.Flush(); err != nil {
			return fmt.Errorf("nftables: delete table %s: %w", tableName, err)
		}
		return nil
	})
	return removed, err
}

func (b *nftablesRules) SyncHost(netnsPath string, cfg PodConfig, podIPs []netip.Addr) (bool, error) {
	if err := cfg.Validate(); err != nil {
		return false, err
	}
	return nftApply(netnsPath, nftHostTable, []chain{{hook: hookPostrouting, rules: hostRules(cfg, podIPs)}})
}

func (b *nftablesRules) RemoveHost(netnsPath string) error {
	_, err := nftDelete(netnsPath, nftHostTable)
	return err
}

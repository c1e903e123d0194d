package rules

import (
	"bytes"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files")

func assertGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden (run with -update to create): %v", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from golden:\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

var goldenPodIPs = []netip.Addr{
	netip.MustParseAddr("10.244.1.7"),
	netip.MustParseAddr("10.244.1.5"),
	netip.MustParseAddr("10.244.1.5"),        // duplicates collapse
	netip.MustParseAddr("::ffff:10.244.1.5"), // an IPv4-mapped address is IPv4
	netip.MustParseAddr("fd00:10:244:1::7"),  // IPv6 addresses go to the IPv6 table
	netip.MustParseAddr("fd00:10:244:1::5"),
}

// goldenName is the golden file of a backend, family and side ("pod",
// "host"); IPv4 keeps the names these files had before IPv6 was captured.
func goldenName(backend string, f ipFamily, side string) string {
	switch {
	case f == ipv4:
		return backend + "_" + side + ".golden"
	case backend == BackendIPTables:
		return "ip6tables_" + side + ".golden"
	default:
		return backend + "_ip6_" + side + ".golden"
	}
}

func TestIPTablesGolden(t *testing.T) {
	cfg := DefaultPodConfig()
	for _, f := range []ipFamily{ipv4, ipv6} {
		t.Run(f.String(), func(t *testing.T) {
			assertGolden(t, goldenName(BackendIPTables, f, "pod"), strings.Join(iptablesSave(podChains(cfg, f)), "\n")+"\n")
			host := []chain{{hook: hookPostrouting, rules: hostRules(cfg, f, goldenPodIPs)}}
			assertGolden(t, goldenName(BackendIPTables, f, "host"), strings.Join(iptablesSave(host), "\n")+"\n")
		})
	}
}

// describeNFT prints the exact expressions sent to the kernel.
func describeNFT(chains []chain) string {
	var b strings.Builder
	for _, c := range chains {
		fmt.Fprintf(&b, "chain %s\n", c.hook)
		for _, r := range c.rules {
			fmt.Fprintf(&b, "  rule %q\n", commentPrefix+r.comment)
			for _, e := range nftExprs(r) {
				fmt.Fprintf(&b, "    %T %+v\n", e, e)
			}
		}
	}
	return b.String()
}

func TestNFTablesGolden(t *testing.T) {
	cfg := DefaultPodConfig()
	for _, f := range []ipFamily{ipv4, ipv6} {
		t.Run(f.String(), func(t *testing.T) {
			assertGolden(t, goldenName(BackendNFTables, f, "pod"), describeNFT(podChains(cfg, f)))
			host := []chain{{hook: hookPostrouting, rules: hostRules(cfg, f, goldenPodIPs)}}
			assertGolden(t, goldenName(BackendNFTables, f, "host"), describeNFT(host))
		})
	}
}

// The two families differ only in the probe source: every other rule, and
// the order, is the same.
func TestFamiliesHaveTheSameRules(t *testing.T) {
	cfg := DefaultPodConfig()
	v4, v6 := podChains(cfg, ipv4), podChains(cfg, ipv6)
	for i := range v4 {
		for j := range v4[i].rules {
			a, b := v4[i].rules[j], v6[i].rules[j]
			if a.src == netip.PrefixFrom(cfg.ProbeSource, 32) {
				if b.src != netip.PrefixFrom(cfg.ProbeSourceIPv6, 128) {
					t.Errorf("IPv6 probe rule matches source %v, want %v/128", b.src, cfg.ProbeSourceIPv6)
				}
				continue
			}
			if a != b {
				t.Errorf("%s rule %d differs between families:\n%+v\n%+v", v4[i].hook, j, a, b)
			}
		}
	}
}

func TestPrefixMask(t *testing.T) {
	for _, tc := range []struct {
		prefix string
		want   []byte
	}{
		{"10.0.0.0/8", []byte{0xff, 0, 0, 0}},
		{"10.244.0.0/21", []byte{0xff, 0xff, 0xf8, 0}},
		{"10.244.1.5/32", []byte{0xff, 0xff, 0xff, 0xff}},
		{"fd00::/20", []byte{0xff, 0xff, 0xf0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
	} {
		if got := prefixMask(netip.MustParsePrefix(tc.prefix)); !bytes.Equal(got, tc.want) {
			t.Errorf("prefixMask(%s) = %x, want %x", tc.prefix, got, tc.want)
		}
	}
}

func TestConfigChangesRules(t *testing.T) {
	cfg := DefaultPodConfig()
	cfg.InboundPort = 16006
	for _, line := range iptablesSave(podChains(cfg, ipv4)) {
		if strings.Contains(line, "15006") {
			t.Errorf("rule still names the default inbound port: %s", line)
		}
	}
}

func TestValidate(t *testing.T) {
	for name, tc := range map[string]struct {
		mutate func(*PodConfig)
		field  string
	}{
		"ok":              {func(*PodConfig) {}, ""},
		"no outbound":     {func(c *PodConfig) { c.OutboundPort = 0 }, "outboundPort"},
		"no inbound":      {func(c *PodConfig) { c.InboundPort = 0 }, "inboundPort"},
		"no hbone":        {func(c *PodConfig) { c.HBONEPort = 0 }, "hbonePort"},
		"mark outside":    {func(c *PodConfig) { c.ProxyMark = 0x1539 }, "proxyMark"},
		"zero mask":       {func(c *PodConfig) { c.MarkMask = 0 }, "proxyMark"},
		"ipv6 probe":      {func(c *PodConfig) { c.ProbeSource = netip.MustParseAddr("fd00::1") }, "probeSource"},
		"no probe source": {func(c *PodConfig) { c.ProbeSource = netip.Addr{} }, "probeSource"},
		"ipv4 probe6":     {func(c *PodConfig) { c.ProbeSourceIPv6 = netip.MustParseAddr("169.254.7.127") }, "probeSourceIPv6"},
		"mapped probe6":   {func(c *PodConfig) { c.ProbeSourceIPv6 = netip.MustParseAddr("::ffff:169.254.7.127") }, "probeSourceIPv6"},
		"no probe6":       {func(c *PodConfig) { c.ProbeSourceIPv6 = netip.Addr{} }, "probeSourceIPv6"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := DefaultPodConfig()
			tc.mutate(&cfg)
			err := cfg.Validate()
			if tc.field == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.field+":") {
				t.Fatalf("error %v, want one naming %s", err, tc.field)
			}
		})
	}
}

func TestNewRejectsUnknownBackend(t *testing.T) {
	if _, err := New("ebpf"); err == nil || !strings.Contains(err.Error(), "backend") {
		t.Fatalf("New(ebpf) = %v, want a backend error", err)
	}
	for _, b := range []string{BackendIPTables, BackendNFTables} {
		r, err := New(b)
		if err != nil || r.Backend() != b {
			t.Fatalf("New(%s) = %v, %v", b, r, err)
		}
	}
}

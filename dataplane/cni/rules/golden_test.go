package rules

import (
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
	netip.MustParseAddr("10.244.1.5"), // duplicates collapse
	netip.MustParseAddr("fd00::5"),    // IPv6 is not SNATed
}

func TestIPTablesGolden(t *testing.T) {
	cfg := DefaultPodConfig()
	assertGolden(t, "iptables_pod.golden", strings.Join(iptablesSave(podChains(cfg)), "\n")+"\n")
	host := []chain{{hook: hookPostrouting, rules: hostRules(cfg, goldenPodIPs)}}
	assertGolden(t, "iptables_host.golden", strings.Join(iptablesSave(host), "\n")+"\n")
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
	assertGolden(t, "nftables_pod.golden", describeNFT(podChains(cfg)))
	assertGolden(t, "nftables_host.golden", describeNFT([]chain{{hook: hookPostrouting, rules: hostRules(cfg, goldenPodIPs)}}))
}

func TestConfigChangesRules(t *testing.T) {
	cfg := DefaultPodConfig()
	cfg.InboundPort = 16006
	for _, line := range iptablesSave(podChains(cfg)) {
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

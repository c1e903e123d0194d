package rules

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ambientmesh/ambient-operator/dataplane/ztunnel/inpod"
	"github.com/ambientmesh/ambient-operator/internal/netnstest"
)

var backends = []string{BackendIPTables, BackendNFTables}

func mustNew(t *testing.T, backend string) Rules {
	t.Helper()
	r, err := New(backend)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// installedText is how the kernel lists our rules of both families, for the
// golden check.
func installedText(t *testing.T, pod *netnstest.NS, backend string) string {
	t.Helper()
	if backend == BackendNFTables {
		return pod.Run(t, "nft", "list", "table", "ip", nftPodTable) + pod.Run(t, "nft", "list", "table", "ip6", nftPodTable)
	}
	var ours []string
	for _, save := range []string{"iptables-save", "ip6tables-save"} {
		ours = append(ours, "# "+save)
		for _, l := range strings.Split(pod.Run(t, save, "-t", "nat"), "\n") {
			if strings.Contains(l, "AMBIENT-") {
				ours = append(ours, l)
			}
		}
	}
	return strings.Join(ours, "\n") + "\n"
}

var chainCounters = regexp.MustCompile(`\[\d+:\d+\]`)

// ruleset is netnstest's Ruleset plus ip6tables-save, so a test sees every
// rule of both families whichever iptables variant the node has.
func ruleset(t *testing.T, n *netnstest.NS) string {
	t.Helper()
	var kept []string
	for _, l := range strings.Split(n.Run(t, "ip6tables-save"), "\n") {
		if !strings.HasPrefix(l, "#") {
			kept = append(kept, chainCounters.ReplaceAllString(l, "[0:0]"))
		}
	}
	return n.Ruleset(t) + "--- ip6tables-save\n" + strings.Join(kept, "\n")
}

// testFamily is one IP version's addressing in the capture tests: a pod and
// a peer (or node) on a veth pair, private addresses inside the test's own
// namespaces.
type testFamily struct {
	family    ipFamily
	pod, peer netip.Addr
	bits      int
	loopback  netip.Addr
	probe     netip.Addr
}

var testFamilies = []testFamily{
	{ipv4, netip.MustParseAddr("10.248.0.2"), netip.MustParseAddr("10.248.0.1"), 24, netip.MustParseAddr("127.0.0.1"), DefaultProbeSource},
	{ipv6, netip.MustParseAddr("fd00:10::2"), netip.MustParseAddr("fd00:10::1"), 64, netip.MustParseAddr("::1"), DefaultProbeSourceIPv6},
}

// link joins pod and peer with a veth pair addressed in the family and
// routes the pod's traffic through peer. IPv6 addresses skip duplicate
// address detection, which would leave them unusable for a second or two.
func (f testFamily) link(t *testing.T, pod, peer *netnstest.NS) {
	t.Helper()
	podIf, peerIf := netnstest.Veth(t, pod, "", peer, "")
	for _, a := range []struct {
		ns   *netnstest.NS
		dev  string
		addr netip.Addr
	}{{pod, podIf, f.pod}, {peer, peerIf, f.peer}} {
		args := []string{"ip", "addr", "add", netip.PrefixFrom(a.addr, f.bits).String(), "dev", a.dev}
		if f.family == ipv6 {
			args = append(args, "nodad")
		}
		a.ns.Run(t, args...)
	}
	pod.Run(t, "ip", "route", "add", "default", "via", f.peer.String())
}

func addrPort(a netip.Addr, port uint16) string { return netip.AddrPortFrom(a, port).String() }

// listen opens a TCP listener in n, closed at test end; ":port" listens on
// both families, as ztunnel's listeners do.
func listen(t *testing.T, n *netnstest.NS, addr string) net.Listener {
	t.Helper()
	var l net.Listener
	if err := n.Do(func() (err error) { l, err = net.Listen("tcp", addr); return }); err != nil {
		t.Fatalf("listen %s in %s: %v", addr, n.Name, err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// dial connects from n to addr, from local when it is valid, with SO_MARK
// mark on the socket when mark is non-zero (as ztunnel does).
func dial(n *netnstest.NS, addr string, mark int, local netip.Addr) (net.Conn, error) {
	d := net.Dialer{Timeout: 3 * time.Second}
	if local.IsValid() {
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(local, 0))
	}
	if mark != 0 {
		d.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, mark) }); err != nil {
				return err
			}
			return serr
		}
	}
	var conn net.Conn
	err := n.Do(func() (err error) { conn, err = d.DialContext(context.Background(), "tcp", addr); return })
	return conn, err
}

// originalDst is what ztunnel reads on a captured connection.
func originalDst(t *testing.T, c net.Conn) string {
	t.Helper()
	dst, ok, err := inpod.OriginalDst(c)
	if err != nil || !ok {
		t.Fatalf("original destination of a captured connection: ok=%v, %v", ok, err)
	}
	return dst.String()
}

func TestInstallIsIdempotentAndRemoveRestoresThePod(t *testing.T) {
	netnstest.RequireRoot(t)
	for _, backend := range backends {
		for _, preexisting := range []bool{false, true} {
			name := backend + "/empty-pod"
			if preexisting {
				name = backend + "/pod-with-its-own-rules"
			}
			t.Run(name, func(t *testing.T) {
				r := mustNew(t, backend)
				pod := netnstest.New(t, "rpod")
				if preexisting {
					for _, ipt := range []string{"iptables", "ip6tables"} {
						pod.Run(t, ipt, "-A", "INPUT", "-p", "tcp", "--dport", "9", "-j", "DROP")
						pod.Run(t, ipt, "-t", "nat", "-A", "PREROUTING", "-p", "udp", "--dport", "53", "-j", "RETURN")
					}
					for _, family := range []string{"ip", "ip6"} {
						pod.Run(t, "nft", "add", "table", family, "app")
						pod.Run(t, "nft", "add", "chain", family, "app", "c")
					}
				}
				before := ruleset(t, pod)

				changed, err := r.Install(pod.Path, DefaultPodConfig())
				if err != nil || !changed {
					t.Fatalf("first Install = %v, %v; want changed", changed, err)
				}
				if err := r.Check(pod.Path, DefaultPodConfig()); err != nil {
					t.Fatalf("Check after Install: %v", err)
				}
				assertGolden(t, "kernel_"+backend+"_pod.golden", installedText(t, pod, backend))
				afterFirst := ruleset(t, pod)

				changed, err = r.Install(pod.Path, DefaultPodConfig())
				if err != nil || changed {
					t.Fatalf("second Install = %v, %v; want no change", changed, err)
				}
				if got := ruleset(t, pod); got != afterFirst {
					t.Fatalf("second Install changed the ruleset:\n%s\nwas:\n%s", got, afterFirst)
				}

				removed, err := r.Remove(pod.Path)
				if err != nil || !removed {
					t.Fatalf("Remove = %v, %v", removed, err)
				}
				if got := ruleset(t, pod); got != before {
					t.Fatalf("Remove did not restore the pod:\n%s\nbefore Install:\n%s", got, before)
				}
				if err := r.Check(pod.Path, DefaultPodConfig()); !errors.Is(err, ErrNotInstalled) {
					t.Fatalf("Check after Remove = %v, want ErrNotInstalled", err)
				}
				if removed, err := r.Remove(pod.Path); err != nil || removed {
					t.Fatalf("second Remove = %v, %v; want nothing to do", removed, err)
				}
			})
		}
	}
}

func TestInstallRepairsDriftAndFollowsConfig(t *testing.T) {
	netnstest.RequireRoot(t)
	// Someone deletes some of our rules by hand, or an agent that captured
	// only IPv4 installed them.
	tampering := map[string]map[string][][]string{
		BackendIPTables: {
			"IPv4 rule deleted": {{"iptables", "-t", "nat", "-D", "AMBIENT-OUTPUT", "3"}},
			"IPv6 rule deleted": {{"ip6tables", "-t", "nat", "-D", "AMBIENT-OUTPUT", "3"}},
			"IPv6 not captured": {
				{"ip6tables", "-t", "nat", "-D", "PREROUTING", "-j", "AMBIENT-PREROUTING"},
				{"ip6tables", "-t", "nat", "-D", "OUTPUT", "-j", "AMBIENT-OUTPUT"},
				{"ip6tables", "-t", "nat", "-F", "AMBIENT-PREROUTING"},
				{"ip6tables", "-t", "nat", "-X", "AMBIENT-PREROUTING"},
				{"ip6tables", "-t", "nat", "-F", "AMBIENT-OUTPUT"},
				{"ip6tables", "-t", "nat", "-X", "AMBIENT-OUTPUT"},
			},
		},
		BackendNFTables: {
			"IPv4 rule deleted": {{"nft", "flush", "chain", "ip", nftPodTable, "output"}},
			"IPv6 rule deleted": {{"nft", "flush", "chain", "ip6", nftPodTable, "output"}},
			"IPv6 not captured": {{"nft", "delete", "table", "ip6", nftPodTable}},
		},
	}
	for _, backend := range backends {
		for name, commands := range tampering[backend] {
			t.Run(backend+"/"+name, func(t *testing.T) {
				r := mustNew(t, backend)
				pod := netnstest.New(t, "rpod")
				if _, err := r.Install(pod.Path, DefaultPodConfig()); err != nil {
					t.Fatal(err)
				}
				for _, c := range commands {
					pod.Run(t, c...)
				}
				if err := r.Check(pod.Path, DefaultPodConfig()); err == nil || errors.Is(err, ErrNotInstalled) {
					t.Fatalf("Check after tampering = %v, want a drift error", err)
				}
				if changed, err := r.Install(pod.Path, DefaultPodConfig()); err != nil || !changed {
					t.Fatalf("repairing Install = %v, %v", changed, err)
				}
				if err := r.Check(pod.Path, DefaultPodConfig()); err != nil {
					t.Fatalf("Check after repair: %v", err)
				}
				cfg := DefaultPodConfig()
				cfg.InboundPort = 16006
				if err := r.Check(pod.Path, cfg); err == nil {
					t.Fatal("Check with another inbound port passed against the default rules")
				}
				if changed, err := r.Install(pod.Path, cfg); err != nil || !changed {
					t.Fatalf("Install with new config = %v, %v", changed, err)
				}
				if err := r.Check(pod.Path, cfg); err != nil {
					t.Fatalf("Check after reconfigure: %v", err)
				}
				if _, err := r.Remove(pod.Path); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

// expectAccept dials and asserts that want (and no other listener) got the
// connection; it returns the accepted side.
func expectAccept(t *testing.T, what string, dial func() (net.Conn, error), want net.Listener) net.Conn {
	t.Helper()
	c, err := dial()
	if err != nil {
		t.Fatalf("%s: dial: %v", what, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	got, err := netnstest.AcceptOne(want)
	if err != nil {
		t.Fatalf("%s: expected listener %s did not get the connection: %v", what, want.Addr(), err)
	}
	t.Cleanup(func() { _ = got.Close() })
	return got
}

// Both families, both backends: what the pod's app and its peers see.
func TestCaptureBehaviour(t *testing.T) {
	netnstest.RequireRoot(t)
	for _, backend := range backends {
		for _, f := range testFamilies {
			t.Run(backend+"/"+f.family.String(), func(t *testing.T) {
				r := mustNew(t, backend)
				pod, peer := netnstest.New(t, "rpod"), netnstest.New(t, "rpeer")
				f.link(t, pod, peer)
				peer.Run(t, "ip", "addr", "add", netip.PrefixFrom(f.probe, f.probe.BitLen()).String(), "dev", "lo")

				outbound := listen(t, pod, ":15001")
				inbound := listen(t, pod, ":15006")
				hbone := listen(t, pod, ":15008")
				app := listen(t, pod, ":8080")
				remote := listen(t, peer, addrPort(f.peer, 9090))

				if _, err := r.Install(pod.Path, DefaultPodConfig()); err != nil {
					t.Fatal(err)
				}

				peerApp, podApp := addrPort(f.peer, 9090), addrPort(f.pod, 8080)
				c := expectAccept(t, "pod → peer", func() (net.Conn, error) { return dial(pod, peerApp, 0, netip.Addr{}) }, outbound)
				if dst := originalDst(t, c); dst != peerApp {
					t.Fatalf("outbound original destination = %s, want %s", dst, peerApp)
				}
				expectAccept(t, "marked pod → peer", func() (net.Conn, error) { return dial(pod, peerApp, DefaultProxyMark, netip.Addr{}) }, remote)
				expectAccept(t, "pod → loopback", func() (net.Conn, error) { return dial(pod, addrPort(f.loopback, 8080), 0, netip.Addr{}) }, app)
				expectAccept(t, "pod → own IP", func() (net.Conn, error) { return dial(pod, podApp, 0, netip.Addr{}) }, app)

				c = expectAccept(t, "peer → pod app", func() (net.Conn, error) { return dial(peer, podApp, 0, netip.Addr{}) }, inbound)
				if dst := originalDst(t, c); dst != podApp {
					t.Fatalf("inbound original destination = %s, want %s", dst, podApp)
				}
				expectAccept(t, "peer → pod HBONE", func() (net.Conn, error) { return dial(peer, addrPort(f.pod, 15008), 0, netip.Addr{}) }, hbone)
				probe := expectAccept(t, "probe source → pod app", func() (net.Conn, error) { return dial(peer, podApp, 0, f.probe) }, app)
				if got := probe.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap(); got != f.probe {
					t.Fatalf("probe arrived from %s, want %s", got, f.probe)
				}

				// UDP (DNS) is never captured.
				var udp net.PacketConn
				if err := peer.Do(func() (err error) { udp, err = net.ListenPacket("udp", addrPort(f.peer, 5353)); return }); err != nil {
					t.Fatal(err)
				}
				defer udp.Close()
				if err := pod.Do(func() error {
					u, err := net.Dial("udp", addrPort(f.peer, 5353))
					if err != nil {
						return err
					}
					defer u.Close()
					_, err = u.Write([]byte("dns?"))
					return err
				}); err != nil {
					t.Fatal(err)
				}
				_ = udp.SetReadDeadline(time.Now().Add(3 * time.Second))
				buf := make([]byte, 16)
				if n, _, err := udp.ReadFrom(buf); err != nil || string(buf[:n]) != "dns?" {
					t.Fatalf("UDP did not pass untouched: %q, %v", buf[:n], err)
				}
			})
		}
	}
}

func TestHostProbeSNAT(t *testing.T) {
	netnstest.RequireRoot(t)
	for _, backend := range backends {
		for _, f := range testFamilies {
			t.Run(backend+"/"+f.family.String(), func(t *testing.T) {
				r := mustNew(t, backend)
				node, pod := netnstest.New(t, "rnode"), netnstest.New(t, "rpod")
				f.link(t, pod, node)
				// The primary CNI's masquerade must not win over the probe SNAT.
				node.Run(t, iptablesCommand(f.family), "-t", "nat", "-A", "POSTROUTING",
					"-d", netip.PrefixFrom(f.pod, f.bits).Masked().String(), "-j", "MASQUERADE")
				nodeBefore := ruleset(t, node)

				app := listen(t, pod, ":8080")
				inbound := listen(t, pod, ":15006")
				if _, err := r.Install(pod.Path, DefaultPodConfig()); err != nil {
					t.Fatal(err)
				}
				// The other family's address shows each family's rules leave the other alone.
				other := testFamilies[0].pod
				if f.family == ipv4 {
					other = testFamilies[1].pod
				}
				ips := []netip.Addr{f.pod, other}
				if changed, err := r.SyncHost(node.Path, DefaultPodConfig(), ips); err != nil || !changed {
					t.Fatalf("SyncHost = %v, %v", changed, err)
				}
				if changed, err := r.SyncHost(node.Path, DefaultPodConfig(), slices.Clone(ips)); err != nil || changed {
					t.Fatalf("second SyncHost = %v, %v; want no change", changed, err)
				}
				podApp := addrPort(f.pod, 8080)
				c := expectAccept(t, "kubelet → pod", func() (net.Conn, error) { return dial(node, podApp, 0, netip.Addr{}) }, app)
				if got := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap(); got != f.probe {
					t.Fatalf("probe reached the app from %s, want %s", got, f.probe)
				}

				// Without the host rule the node's connection is captured like any other.
				if _, err := r.SyncHost(node.Path, DefaultPodConfig(), []netip.Addr{other}); err != nil {
					t.Fatal(err)
				}
				expectAccept(t, "node → pod without SNAT", func() (net.Conn, error) { return dial(node, podApp, 0, netip.Addr{}) }, inbound)

				if err := r.RemoveHost(node.Path); err != nil {
					t.Fatal(err)
				}
				if got := ruleset(t, node); got != nodeBefore {
					t.Fatalf("RemoveHost did not restore the node:\n%s\nbefore:\n%s", got, nodeBefore)
				}
			})
		}
	}
}

// A pod whose IPv6 traffic cannot be captured (here: the node has no
// ip6tables) is not captured at all: Install fails naming IPv6 and leaves
// the pod's rules as they were, so nothing half-captures it.
func TestInstallRefusesWhenIPv6CannotBeCaptured(t *testing.T) {
	netnstest.RequireRoot(t)
	r := mustNew(t, BackendIPTables)
	pod := netnstest.New(t, "rpod")
	before := ruleset(t, pod)
	t.Run("without ip6tables", func(t *testing.T) {
		t.Setenv("PATH", netnstest.IPTablesPathWithout(t, "ip6tables"))
		changed, err := r.Install(pod.Path, DefaultPodConfig())
		if err == nil || changed || !strings.Contains(err.Error(), "capturing IPv6") || !strings.Contains(err.Error(), "ip6tables") {
			t.Fatalf("Install without ip6tables = %v, %v; want an unchanged pod and an error about IPv6 and ip6tables", changed, err)
		}
	})
	if got := ruleset(t, pod); got != before {
		t.Fatalf("the failed Install changed the pod's rules:\n%s\nbefore:\n%s", got, before)
	}
}

// disable_ipv6 in a pod does not stop its IPv6 rules: they are installed
// and checked like any others, and capture as soon as the pod turns IPv6 on.
func TestIPv6DisabledInThePodIsStillCaptured(t *testing.T) {
	netnstest.RequireRoot(t)
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			r := mustNew(t, backend)
			pod := netnstest.New(t, "rpod")
			pod.Run(t, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
			if _, err := r.Install(pod.Path, DefaultPodConfig()); err != nil {
				t.Fatalf("Install in a pod with IPv6 disabled: %v", err)
			}
			if err := r.Check(pod.Path, DefaultPodConfig()); err != nil {
				t.Fatalf("Check: %v", err)
			}
			if text := installedText(t, pod, backend); !strings.Contains(text, DefaultProbeSourceIPv6.String()) {
				t.Fatalf("no IPv6 rules installed:\n%s", text)
			}
			if _, err := r.Remove(pod.Path); err != nil {
				t.Fatal(err)
			}
		})
	}
}

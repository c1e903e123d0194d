package rules

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

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

// installedText is how the kernel lists our rules, for the golden check.
func installedText(t *testing.T, pod *netnstest.NS, backend string) string {
	t.Helper()
	if backend == BackendNFTables {
		return pod.Run(t, "nft", "list", "table", "ip", nftPodTable)
	}
	var ours []string
	for _, l := range strings.Split(pod.Run(t, "iptables-save", "-t", "nat"), "\n") {
		if strings.Contains(l, "AMBIENT-") {
			ours = append(ours, l)
		}
	}
	return strings.Join(ours, "\n") + "\n"
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
					pod.Run(t, "iptables", "-A", "INPUT", "-p", "tcp", "--dport", "9", "-j", "DROP")
					pod.Run(t, "iptables", "-t", "nat", "-A", "PREROUTING", "-p", "udp", "--dport", "53", "-j", "RETURN")
					pod.Run(t, "nft", "add", "table", "ip", "app")
					pod.Run(t, "nft", "add", "chain", "ip", "app", "c")
				}
				before := pod.Ruleset(t)

				changed, err := r.Install(pod.Path, DefaultPodConfig())
				if err != nil || !changed {
					t.Fatalf("first Install = %v, %v; want changed", changed, err)
				}
				if err := r.Check(pod.Path, DefaultPodConfig()); err != nil {
					t.Fatalf("Check after Install: %v", err)
				}
				assertGolden(t, "kernel_"+backend+"_pod.golden", installedText(t, pod, backend))
				afterFirst := pod.Ruleset(t)

				changed, err = r.Install(pod.Path, DefaultPodConfig())
				if err != nil || changed {
					t.Fatalf("second Install = %v, %v; want no change", changed, err)
				}
				if got := pod.Ruleset(t); got != afterFirst {
					t.Fatalf("second Install changed the ruleset:\n%s\nwas:\n%s", got, afterFirst)
				}

				removed, err := r.Remove(pod.Path)
				if err != nil || !removed {
					t.Fatalf("Remove = %v, %v", removed, err)
				}
				if got := pod.Ruleset(t); got != before {
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
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			r := mustNew(t, backend)
			pod := netnstest.New(t, "rpod")
			if _, err := r.Install(pod.Path, DefaultPodConfig()); err != nil {
				t.Fatal(err)
			}
			// Someone deletes one of our rules by hand.
			if backend == BackendIPTables {
				pod.Run(t, "iptables", "-t", "nat", "-D", "AMBIENT-OUTPUT", "3")
			} else {
				pod.Run(t, "nft", "flush", "chain", "ip", nftPodTable, "output")
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

func TestCaptureBehaviour(t *testing.T) {
	netnstest.RequireRoot(t)
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			r := mustNew(t, backend)
			pod, peer := netnstest.New(t, "rpod"), netnstest.New(t, "rpeer")
			netnstest.Veth(t, pod, "10.248.0.2/24", peer, "10.248.0.1/24")
			pod.Run(t, "ip", "route", "add", "default", "via", "10.248.0.1")
			peer.Run(t, "ip", "addr", "add", "169.254.7.127/32", "dev", "lo")

			outbound := pod.Listen(t, ":15001")
			inbound := pod.Listen(t, ":15006")
			hbone := pod.Listen(t, ":15008")
			app := pod.Listen(t, ":8080")
			remote := peer.Listen(t, "10.248.0.1:9090")

			if _, err := r.Install(pod.Path, DefaultPodConfig()); err != nil {
				t.Fatal(err)
			}

			c := expectAccept(t, "pod → peer", func() (net.Conn, error) { return pod.Dial("10.248.0.1:9090", 0) }, outbound)
			if dst, err := netnstest.OriginalDst(c); err != nil || dst.String() != "10.248.0.1:9090" {
				t.Fatalf("outbound original destination = %v, %v; want 10.248.0.1:9090", dst, err)
			}
			expectAccept(t, "marked pod → peer", func() (net.Conn, error) { return pod.Dial("10.248.0.1:9090", DefaultProxyMark) }, remote)
			expectAccept(t, "pod → 127.0.0.1", func() (net.Conn, error) { return pod.Dial("127.0.0.1:8080", 0) }, app)
			expectAccept(t, "pod → own IP", func() (net.Conn, error) { return pod.Dial("10.248.0.2:8080", 0) }, app)

			c = expectAccept(t, "peer → pod app", func() (net.Conn, error) { return peer.Dial("10.248.0.2:8080", 0) }, inbound)
			if dst, err := netnstest.OriginalDst(c); err != nil || dst.String() != "10.248.0.2:8080" {
				t.Fatalf("inbound original destination = %v, %v; want 10.248.0.2:8080", dst, err)
			}
			expectAccept(t, "peer → pod HBONE", func() (net.Conn, error) { return peer.Dial("10.248.0.2:15008", 0) }, hbone)
			probe := expectAccept(t, "probe source → pod app", func() (net.Conn, error) {
				d := net.Dialer{Timeout: 3 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(169, 254, 7, 127)}}
				var conn net.Conn
				err := peer.Do(func() (err error) { conn, err = d.Dial("tcp4", "10.248.0.2:8080"); return })
				return conn, err
			}, app)
			if got := probe.RemoteAddr().(*net.TCPAddr).IP.String(); got != "169.254.7.127" {
				t.Fatalf("probe arrived from %s", got)
			}

			// UDP (DNS) is never captured.
			var udp net.PacketConn
			if err := peer.Do(func() (err error) { udp, err = net.ListenPacket("udp4", "10.248.0.1:5353"); return }); err != nil {
				t.Fatal(err)
			}
			defer udp.Close()
			if err := pod.Do(func() error {
				u, err := net.Dial("udp4", "10.248.0.1:5353")
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

func TestHostProbeSNAT(t *testing.T) {
	netnstest.RequireRoot(t)
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			r := mustNew(t, backend)
			node, pod := netnstest.New(t, "rnode"), netnstest.New(t, "rpod")
			netnstest.Veth(t, node, "10.249.0.1/24", pod, "10.249.0.2/24")
			pod.Run(t, "ip", "route", "add", "default", "via", "10.249.0.1")
			// The primary CNI's masquerade must not win over the probe SNAT.
			node.Run(t, "iptables", "-t", "nat", "-A", "POSTROUTING", "-d", "10.249.0.0/24", "-j", "MASQUERADE")
			nodeBefore := node.Ruleset(t)

			app := pod.Listen(t, ":8080")
			inbound := pod.Listen(t, ":15006")
			if _, err := r.Install(pod.Path, DefaultPodConfig()); err != nil {
				t.Fatal(err)
			}
			ips := []netip.Addr{netip.MustParseAddr("10.249.0.2")}
			if changed, err := r.SyncHost(node.Path, DefaultPodConfig(), ips); err != nil || !changed {
				t.Fatalf("SyncHost = %v, %v", changed, err)
			}
			if changed, err := r.SyncHost(node.Path, DefaultPodConfig(), slices.Clone(ips)); err != nil || changed {
				t.Fatalf("second SyncHost = %v, %v; want no change", changed, err)
			}
			c := expectAccept(t, "kubelet → pod", func() (net.Conn, error) { return node.Dial("10.249.0.2:8080", 0) }, app)
			if got := c.RemoteAddr().(*net.TCPAddr).IP.String(); got != "169.254.7.127" {
				t.Fatalf("probe reached the app from %s, want 169.254.7.127", got)
			}

			// Without the host rule the node's connection is captured like any other.
			if _, err := r.SyncHost(node.Path, DefaultPodConfig(), nil); err != nil {
				t.Fatal(err)
			}
			expectAccept(t, "node → pod without SNAT", func() (net.Conn, error) { return node.Dial("10.249.0.2:8080", 0) }, inbound)

			if err := r.RemoveHost(node.Path); err != nil {
				t.Fatal(err)
			}
			if got := node.Ruleset(t); got != nodeBefore {
				t.Fatalf("RemoveHost did not restore the node:\n%s\nbefore:\n%s", got, nodeBefore)
			}
		})
	}
}

// Package netnstest creates throw-away network namespaces, veth links and
// sockets inside them for root-only tests (cni, ztunnel, e2e). Namespaces get
// a random suffix so parallel tests never collide, and everything is removed
// by t.Cleanup. Addresses used must be private and live only inside the
// namespaces a test creates.
package netnstest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"
)

// T is what the helpers need of a test: testing.TB and GinkgoT() both fit.
type T interface {
	Helper()
	Fatalf(format string, args ...any)
	Skip(args ...any)
	Cleanup(func())
	TempDir() string
}

// RequireRoot skips t unless it runs as root.
func RequireRoot(t T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, veth links and netfilter rules")
	}
}

// UniqueName returns prefix plus 6 random hex digits (keep prefix ≤ 8 chars
// when the name is used for an interface: Linux allows 15).
func UniqueName(prefix string) string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// NS is a named network namespace (ip netns), with loopback up.
type NS struct {
	Name string
	Path string
}

// New creates a namespace deleted when the test ends.
func New(t T, prefix string) *NS {
	t.Helper()
	name := UniqueName(prefix)
	RunOnHost(t, "ip", "netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	n := &NS{Name: name, Path: "/var/run/netns/" + name}
	n.Run(t, "ip", "link", "set", "lo", "up")
	return n
}

// RunOnHost runs a command in the test's own namespace and fails the test on
// error, with the command's output in the message.
func RunOnHost(t T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Run runs a command inside the namespace and fails the test on error.
func (n *NS) Run(t T, args ...string) string {
	t.Helper()
	return RunOnHost(t, "ip", append([]string{"netns", "exec", n.Name}, args...)...)
}

// Cmd returns a command that runs inside the namespace, for callers that
// start it in the background or inspect its error themselves.
func (n *NS) Cmd(args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.Name}, args...)...)
}

var counters = regexp.MustCompile(`\[\d+:\d+\]`)

// Ruleset is what a user would look at: iptables-save (without counters and
// comments about the save time) followed by nft list ruleset.
func (n *NS) Ruleset(t T) string {
	t.Helper()
	var kept []string
	for _, l := range strings.Split(n.Run(t, "iptables-save"), "\n") {
		if strings.HasPrefix(l, "#") {
			continue
		}
		kept = append(kept, counters.ReplaceAllString(l, "[0:0]"))
	}
	// -s: stateless, so packet counters do not make equal rulesets differ.
	return strings.Join(kept, "\n") + "\n--- nft\n" + n.Run(t, "nft", "-s", "list", "ruleset")
}

// Veth links a and b with a veth pair and brings both ends up. An address
// (CIDR form, e.g. "10.248.0.1/24") is assigned to each end unless it is
// empty, as for a node-side end that only routes. It returns the interface
// names in a and in b.
func Veth(t T, a *NS, aAddr string, b *NS, bAddr string) (aIf, bIf string) {
	t.Helper()
	aIf, bIf = UniqueName("va"), UniqueName("vb")
	RunOnHost(t, "ip", "link", "add", aIf, "netns", a.Name, "type", "veth", "peer", "name", bIf, "netns", b.Name)
	if aAddr != "" {
		a.Run(t, "ip", "addr", "add", aAddr, "dev", aIf)
	}
	if bAddr != "" {
		b.Run(t, "ip", "addr", "add", bAddr, "dev", bIf)
	}
	a.Run(t, "ip", "link", "set", aIf, "up")
	b.Run(t, "ip", "link", "set", bIf, "up")
	return aIf, bIf
}

// Do runs fn on a thread inside the namespace.
func (n *NS) Do(fn func() error) error {
	return ns.WithNetNSPath(n.Path, func(ns.NetNS) error { return fn() })
}

// Listen opens a TCP listener inside the namespace, closed at test end.
func (n *NS) Listen(t T, addr string) net.Listener {
	t.Helper()
	var l net.Listener
	if err := n.Do(func() (err error) { l, err = net.Listen("tcp4", addr); return }); err != nil {
		t.Fatalf("listen %s in %s: %v", addr, n.Name, err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// Dial connects from inside the namespace; mark, when non-zero, is set as
// SO_MARK on the socket before connecting (as ztunnel does).
func (n *NS) Dial(addr string, mark uint32) (net.Conn, error) {
	d := net.Dialer{Timeout: 3 * time.Second}
	if mark != 0 {
		d.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark)) })
			if err != nil {
				return err
			}
			return serr
		}
	}
	var conn net.Conn
	err := n.Do(func() (err error) {
		conn, err = d.DialContext(context.Background(), "tcp4", addr)
		return
	})
	return conn, err
}

// OriginalDst reads SO_ORIGINAL_DST of a connection accepted after a nat
// REDIRECT: the destination the client asked for.
func OriginalDst(c net.Conn) (netip.AddrPort, error) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("not a TCP connection: %T", c)
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	var sa unix.RawSockaddrInet4
	var serr error
	err = raw.Control(func(fd uintptr) {
		size := uint32(unsafe.Sizeof(sa))
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_IP, unix.SO_ORIGINAL_DST,
			uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&size)), 0)
		if errno != 0 {
			serr = errno
		}
	})
	if err != nil {
		return netip.AddrPort{}, err
	}
	if serr != nil {
		return netip.AddrPort{}, fmt.Errorf("SO_ORIGINAL_DST: %w", serr)
	}
	port := sa.Port>>8 | sa.Port<<8 // network byte order
	return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), port), nil
}

// AcceptOne accepts one connection within a few seconds, or returns an error.
func AcceptOne(l net.Listener) (net.Conn, error) {
	if tl, ok := l.(*net.TCPListener); ok {
		_ = tl.SetDeadline(time.Now().Add(3 * time.Second))
	}
	return l.Accept()
}

// IPTablesPathWithout is a PATH holding only the iptables tools (both IP versions, with
// their save and restore) less missing: a node where that tool is not installed.
func IPTablesPathWithout(t T, missing string) string {
	t.Helper()
	dir := t.TempDir()
	for _, tool := range []string{"iptables", "ip6tables", "iptables-save", "ip6tables-save", "iptables-restore", "ip6tables-restore"} {
		if tool == missing {
			continue
		}
		target, err := exec.LookPath(tool)
		if err != nil {
			t.Fatalf("%v", err)
		}
		if err := os.Symlink(target, filepath.Join(dir, tool)); err != nil {
			t.Fatalf("%v", err)
		}
	}
	return dir
}

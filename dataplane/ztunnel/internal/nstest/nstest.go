// Package nstest creates network namespaces for ztunnel's root-only tests: named with a
// random suffix, private addresses only inside them, all removed by t.Cleanup.
package nstest

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// RequireRoot skips the test unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, veth links and netfilter rules")
	}
}

// Name returns prefix + 6 random hex digits (prefix ≤ 8 chars keeps interface names legal).
func Name(prefix string) string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// NS is a named network namespace with loopback up.
type NS struct {
	Name string
	Path string
}

// New creates a namespace that is deleted when the test ends.
func New(t testing.TB, prefix string) *NS {
	t.Helper()
	name := Name(prefix)
	Run(t, "ip", "netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	ns := &NS{Name: name, Path: "/var/run/netns/" + name}
	ns.Run(t, "ip", "link", "set", "lo", "up")
	return ns
}

// Run runs a command on the host and fails the test on error.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Run runs a command inside the namespace.
func (n *NS) Run(t testing.TB, args ...string) string {
	t.Helper()
	return Run(t, "ip", append([]string{"netns", "exec", n.Name}, args...)...)
}

// Cmd returns a command that runs inside the namespace.
func (n *NS) Cmd(args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.Name}, args...)...)
}

// Veth links a and b with a veth pair and assigns the addresses (CIDR form, e.g.
// "10.200.0.1/24"); both ends are up.
func Veth(t testing.TB, a *NS, aAddr string, b *NS, bAddr string) (aIf, bIf string) {
	t.Helper()
	aIf, bIf = Name("va"), Name("vb")
	Run(t, "ip", "link", "add", aIf, "netns", a.Name, "type", "veth", "peer", "name", bIf, "netns", b.Name)
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

package localmesh

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ambientmesh/ambient-operator/internal/netnstest"
)

// A capture shows the payload sent in its namespace; an interface the
// namespace lacks is an error, not a capture that sees nothing.
func TestStartTcpdump(t *testing.T) {
	netnstest.RequireRoot(t)
	if _, err := exec.LookPath("tcpdump"); err != nil {
		t.Skip("needs tcpdump")
	}
	n := netnstest.New(t, "cap")
	c, err := StartTcpdump(n.Name, "lo", "tcp", filepath.Join(t.TempDir(), "lo.txt"))
	if err != nil {
		t.Fatal(err)
	}
	l := n.Listen(t, "127.0.0.1:0")
	conn, err := n.Dial(l.Addr().String(), 0)
	if err != nil {
		t.Fatal(err)
	}
	const secret = "capture-me-7f3a"
	if _, err := conn.Write([]byte(secret)); err != nil {
		t.Fatal(err)
	}
	_ = conn.Close()
	text, err := c.Stop()
	if err != nil || !strings.Contains(text, secret) || PacketCount(text) == 0 {
		t.Fatalf("capture = %v, %d packets, want the payload %q:\n%s", err, PacketCount(text), secret, text)
	}

	if _, err := StartTcpdump(n.Name, "nosuch0", "tcp", filepath.Join(t.TempDir(), "none.txt")); err == nil || !strings.Contains(err.Error(), "nosuch0") {
		t.Fatalf("tcpdump on a missing interface: %v, want an error naming it", err)
	}
}

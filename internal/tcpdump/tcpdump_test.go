package tcpdump

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ambientmesh/ambient-operator/internal/netnstest"
)

// A capture shows the payload sent in its namespace up to Stop; an interface
// the namespace lacks is an error, not a capture that sees nothing.
func TestCaptureShowsThePayloadSentBeforeStop(t *testing.T) {
	netnstest.RequireRoot(t)
	if _, err := exec.LookPath("tcpdump"); err != nil {
		t.Skip("needs tcpdump")
	}
	n := netnstest.New(t, "cap")
	c, err := Start(n.Name, "lo", "tcp", filepath.Join(t.TempDir(), "lo.txt"))
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
	if err != nil || !strings.Contains(text, secret) || !strings.Contains(text, " IP 127.0.0.1.") {
		t.Fatalf("capture = %v, want a packet header and the payload %q:\n%s", err, secret, text)
	}
	select {
	case <-c.Done():
	default:
		t.Fatal("tcpdump still runs after Stop")
	}

	if _, err := Start(n.Name, "nosuch0", "tcp", filepath.Join(t.TempDir(), "none.txt")); err == nil || !strings.Contains(err.Error(), "nosuch0") {
		t.Fatalf("tcpdump on a missing interface: %v, want an error naming it", err)
	}
}

func TestCaughtUpOncePrintedWhatWasGivenOrNothingMovedForAWhile(t *testing.T) {
	const given = 6 // received − dropped when Stop began
	for _, tc := range []struct {
		line       string
		unmovedFor time.Duration
		want       bool
	}{
		{"tcpdump: 6 packets captured, 9 packets received by filter, 0 packets dropped by kernel", 0, true},
		{"tcpdump: 5 packets captured, 9 packets received by filter, 0 packets dropped by kernel", 0, false},
		// Not scheduled between two reports is not done.
		{"tcpdump: 4 packets captured, 8 packets received by filter, 0 packets dropped by kernel", 20 * time.Millisecond, false},
		{"tcpdump: 4 packets captured, 8 packets received by filter, 0 packets dropped by kernel", quietPeriod, true},
	} {
		now, err := parseCounts(tc.line)
		if err != nil {
			t.Fatal(err)
		}
		if got := now.caughtUp(given, tc.unmovedFor); got != tc.want {
			t.Errorf("%q, unmoved for %v: caught up %v, want %v", tc.line, tc.unmovedFor, got, tc.want)
		}
	}
	if _, err := parseCounts("tcpdump: listening on lo"); err == nil {
		t.Error("parsed counts from a line without them")
	}
}

// Package tcpdump captures what crosses a network namespace's link, for tests
// that look on the wire for what must (or must not) be there: the e2e mesh,
// the cluster suite and the ztunnel node tests share it.
package tcpdump

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ambientmesh/ambient-operator/internal/testwait"
)

// Capture is a tcpdump running in a network namespace.
type Capture struct {
	cmd  *exec.Cmd
	path string
	done chan struct{}
	// stats carries the statistics lines tcpdump prints when asked (SIGUSR1).
	stats chan string
}

// Start runs tcpdump on iface ("any": every interface) inside the named
// network namespace, printing each packet the pcap filter selects with its
// payload into path, and returns once it is capturing. A tcpdump that ends or
// stays silent before it captures is an error, never an empty capture: a test
// that looks for what must not be on the wire would then pass unseen.
func Start(netns, iface, filter, path string) (*Capture, error) {
	out, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	// --immediate-mode: each packet reaches tcpdump as it is captured, not in
	// blocks a timer releases, so Stop finds it caught up at once.
	cmd := exec.Command("ip", "netns", "exec", netns, "tcpdump", "--immediate-mode", "-i", iface, "-nn", "-l", "-A", "-s", "0", filter)
	cmd.Stdout = out
	stderr, err := cmd.StderrPipe()
	if err != nil {
		_ = out.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		_ = out.Close()
		return nil, fmt.Errorf("tcpdump: %w", err)
	}
	c := &Capture{cmd: cmd, path: path, done: make(chan struct{}), stats: make(chan string, 4)}
	listening := make(chan struct{})
	var said []string // what tcpdump printed before it listened, for the error
	go func() {
		c.readStderr(stderr, listening, &said)
		_ = cmd.Wait()
		_ = out.Close()
		close(c.done)
	}()
	select {
	case <-listening:
		return c, nil
	case <-c.done:
		return nil, fmt.Errorf("tcpdump on %s in %s ended before it captured: %s", iface, netns, strings.Join(said, "; "))
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-c.done
		return nil, fmt.Errorf("tcpdump on %s in %s did not start capturing within 10s", iface, netns)
	}
}

// readStderr collects what tcpdump says until it listens (into said), then
// hands on its statistics lines.
func (c *Capture) readStderr(stderr io.Reader, listening chan struct{}, said *[]string) {
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		if strings.Contains(sc.Text(), "listening on") {
			close(listening)
			break
		}
		*said = append(*said, sc.Text())
	}
	for sc.Scan() {
		if statsLine.MatchString(sc.Text()) {
			select {
			case c.stats <- sc.Text():
			default: // nobody asked: Stop asks again
			}
		}
	}
	_, _ = io.Copy(io.Discard, stderr) // a line too long to scan must not block tcpdump
}

// Pid is tcpdump's process id.
func (c *Capture) Pid() int { return c.cmd.Process.Pid }

// Done is closed once tcpdump has exited.
func (c *Capture) Done() <-chan struct{} { return c.done }

// Stop ends the capture, once tcpdump has printed the packets it was given
// before the call (waiting at most 5 s for that), and returns what it printed
// (one header line per packet, then the payload as ASCII).
func (c *Capture) Stop() (string, error) {
	c.waitCaughtUp()
	_ = c.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
	data, err := os.ReadFile(c.path)
	_ = os.Remove(c.path)
	return string(data), err
}

// waitCaughtUp waits until tcpdump has printed what the kernel had handed it
// when the call began (tcpdump exits on SIGINT without reading what is still
// queued for it), or has printed nothing more for quietPeriod: a backlog it is
// working through would have moved its count. The second covers packets libpcap
// counts but skips without printing (on loopback, each one's outgoing copy); it
// needs a period, not two reports in a row, because on a busy machine tcpdump
// may not run at all between two reports. Traffic that keeps matching the filter
// can hold both off; the wait then ends after 5 s, as a capture must end.
func (c *Capture) waitCaughtUp() {
	first, err := c.counts()
	if err != nil {
		return // it exited, or prints no statistics: nothing to wait for
	}
	given, printed, moved := first.received-first.dropped, first.captured, time.Now()
	_ = testwait.Until(5*time.Second, func() error {
		now, err := c.counts()
		if err != nil {
			return nil
		}
		if now.captured != printed {
			printed, moved = now.captured, time.Now()
		}
		if now.caughtUp(given, time.Since(moved)) {
			return nil
		}
		return fmt.Errorf("tcpdump is still reading: %d packets printed of %d given", now.captured, given)
	})
}

// quietPeriod is how long tcpdump's printed count must stay the same before
// waitCaughtUp takes it as done with what it was given.
const quietPeriod = 250 * time.Millisecond

// counts asks tcpdump for its counts (SIGUSR1) and reads them.
func (c *Capture) counts() (counts, error) {
	if err := c.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		return counts{}, err
	}
	select {
	case line := <-c.stats:
		return parseCounts(line)
	case <-c.done:
		return counts{}, errors.New("tcpdump exited")
	case <-time.After(2 * time.Second):
		return counts{}, errors.New("tcpdump did not print its statistics")
	}
}

// statsLine is what tcpdump prints on SIGUSR1, e.g. "tcpdump: 5 packets
// captured, 7 packets received by filter, 2 packets dropped by kernel".
var statsLine = regexp.MustCompile(`(\d+) packets? captured, (\d+) packets? received by filter, (\d+) packets? dropped by kernel`)

// counts are tcpdump's statistics: packets it printed, packets the kernel's
// filter let through to it, and of those the ones the kernel dropped.
type counts struct{ captured, received, dropped int }

func parseCounts(line string) (counts, error) {
	m := statsLine.FindStringSubmatch(line)
	if m == nil {
		return counts{}, fmt.Errorf("unexpected statistics %q", line)
	}
	var n [3]int
	for i := range n {
		n[i], _ = strconv.Atoi(m[i+1])
	}
	return counts{captured: n[0], received: n[1], dropped: n[2]}, nil
}

// caughtUp: tcpdump has printed the given packets, or its printed count has not
// moved for quietPeriod.
func (n counts) caughtUp(given int, unmovedFor time.Duration) bool {
	return n.captured >= given || unmovedFor >= quietPeriod
}

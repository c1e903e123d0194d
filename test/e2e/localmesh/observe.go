package localmesh

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
)

// ZtunnelGet fetches a path from the ztunnel on node: the admin endpoint
// (127.0.0.1:15000, localhost only: the request is made from inside the
// node's netns) or metrics (port 15020).
func ZtunnelGet(node *Node, port int32, path string) (string, error) {
	body, err := GetIn(node.NetnsPath(), port, path)
	if err != nil {
		return "", fmt.Errorf("ztunnel on %s: %w", node.Name, err)
	}
	return body, nil
}

// GetIn fetches http://127.0.0.1:<port><path> from inside the netns at
// netnsPath (a proxy's admin, metrics or readiness endpoint).
func GetIn(netnsPath string, port int32, path string) (string, error) {
	c := HTTPClientIn(netnsPath, 3*time.Second)
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d%s", port, path))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s: %s", path, resp.Status, body)
	}
	return string(body), nil
}

// Metrics returns the ztunnel's Prometheus text on node.
func Metrics(node *Node) (string, error) {
	return ZtunnelGet(node, meshv1alpha1.PortMetrics, "/metrics")
}

// LogLine returns the last line of the log file at path that contains
// fragment.
func LogLine(path, fragment string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	lines := strings.Split(string(data), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], fragment) {
			return lines[i], nil
		}
	}
	return "", fmt.Errorf("no line with %q in %s", fragment, path)
}

// MetricLines returns the lines of metric name whose labels contain every
// fragment (e.g. `source_principal="spiffe://..."`).
func MetricLines(text, name string, fragments ...string) []string {
	var out []string
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		ok := true
		for _, f := range fragments {
			ok = ok && strings.Contains(line, f)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

// CaptureEcho sends secret from `from` to addr and reads its echo while tcpdump
// captures the underlay of from's node. It returns what the capture printed, and
// the echo's error or else the capture's.
func (m *Mesh) CaptureEcho(from *AppPod, addr, secret string, timeout time.Duration) (string, error) {
	capture, err := m.StartCapture(from.Node)
	if err != nil {
		return "", err
	}
	conn, err := from.Dial(addr, timeout)
	if err == nil {
		err = conn.Echo(secret, timeout)
		conn.Close()
	}
	text, cerr := capture.Stop()
	if err == nil {
		err = cerr
	}
	return text, err
}

// Capture is a tcpdump running in a network namespace.
type Capture struct {
	cmd  *exec.Cmd
	path string
	done chan struct{}
}

// StartCapture runs tcpdump on the node's underlay interface (inside the
// node's netns) and returns once it is capturing.
func (m *Mesh) StartCapture(node *Node) (*Capture, error) {
	path := filepath.Join(m.StateDir, fmt.Sprintf("capture-%s-%d.txt", node.Name, time.Now().UnixNano()))
	c, err := StartTcpdump(node.Name, node.UnderlayIf, "tcp", path)
	if err != nil {
		return nil, err
	}
	// Recorded so that a later run kills it if this one dies before Stop.
	pid := c.cmd.Process.Pid
	_ = m.state.addProc(ProcRecord{Name: "tcpdump", Node: node.Name, PID: pid, Binary: "tcpdump"})
	go func() {
		<-c.done
		_ = m.state.removeProc(pid)
	}()
	return c, nil
}

// StartTcpdump runs tcpdump on iface ("any": every interface) inside the
// named network namespace, printing each packet the pcap filter selects with
// its payload into path, and returns once it is capturing. A tcpdump that ends or stays
// silent before it captures is an error, never an empty capture: a test
// that looks for what must not be on the wire would then pass unseen.
func StartTcpdump(netns, iface, filter, path string) (*Capture, error) {
	out, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("ip", "netns", "exec", netns, "tcpdump", "-i", iface, "-nn", "-l", "-A", "-s", "0", filter)
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
	c := &Capture{cmd: cmd, path: path, done: make(chan struct{})}
	listening := make(chan struct{})
	var said []string // what tcpdump printed before it listened, for the error
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "listening on") {
				close(listening)
				_, _ = io.Copy(io.Discard, stderr)
				break
			}
			said = append(said, sc.Text())
		}
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

// Stop ends the capture and returns what it printed (one header line per
// packet, then the payload as ASCII).
func (c *Capture) Stop() (string, error) {
	time.Sleep(300 * time.Millisecond) // let the last packets be printed
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

// PacketCount counts the packet header lines of a capture.
func PacketCount(capture string) int {
	n := 0
	for _, line := range strings.Split(capture, "\n") {
		if strings.Contains(line, " IP ") && strings.Contains(line, " > ") {
			n++
		}
	}
	return n
}

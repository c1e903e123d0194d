package localmesh

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/internal/tcpdump"
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

// StartCapture runs tcpdump on the node's underlay interface (inside the
// node's netns) and returns once it is capturing.
func (m *Mesh) StartCapture(node *Node) (*tcpdump.Capture, error) {
	path := filepath.Join(m.StateDir, fmt.Sprintf("capture-%s-%d.txt", node.Name, time.Now().UnixNano()))
	c, err := tcpdump.Start(node.Name, node.UnderlayIf, "tcp", path)
	if err != nil {
		return nil, err
	}
	// Recorded so that a later run kills it if this one dies before Stop.
	pid := c.Pid()
	_ = m.state.addProc(ProcRecord{Name: "tcpdump", Node: node.Name, PID: pid, Binary: "tcpdump"})
	go func() {
		<-c.Done()
		_ = m.state.removeProc(pid)
	}()
	return c, nil
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

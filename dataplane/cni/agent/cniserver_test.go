package agent

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ambientmesh/ambient-operator/dataplane/cni/wire"
	"github.com/ambientmesh/ambient-operator/internal/netnstest"
	"github.com/ambientmesh/ambient-operator/internal/testwait"
	"github.com/ambientmesh/ambient-operator/internal/unixsock/unixsocktest"
)

// The plugin's socket: root only (mode 0600, SO_PEERCRED), and a request naming a netns
// path outside /proc/<pid>/ns/net and /var/run/netns is refused with a message saying which
// paths are accepted, before anything is opened.
func TestCNISocketServesOnlyRoot(t *testing.T) {
	netnstest.RequireRoot(t)
	metrics := NewMetrics(prometheus.NewRegistry())
	srv := &CNIServer{Enroller: &Enroller{Metrics: metrics}, Log: testr.New(t)}
	socket := filepath.Join(t.TempDir(), "cni", "agent.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, socket) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	testwait.For(t, "the CNI socket", 5*time.Second, func() bool { _, err := os.Stat(socket); return err == nil })
	if st, err := os.Stat(socket); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("CNI socket mode %v (%v), want 0600", st.Mode(), err)
	}

	// A non-root peer that got past the file mode is closed unanswered.
	c, err := unixsocktest.DialAsPastMode(65534, "unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.WriteString(c, "POST "+wire.Path+" HTTP/1.1\r\nHost: agent\r\nContent-Length: 2\r\n\r\n{}")
	if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
		t.Fatalf("a uid 65534 peer got an answer: %s", resp.Status)
	}
	testwait.For(t, "the refused peer counted", 5*time.Second, func() bool {
		return metricValue(metrics.Failures.WithLabelValues("cni_peer")) == 1
	})

	// Root is answered; an unaccepted netns path gets a 400 naming the accepted ones.
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", socket)
		}}}
	body := `{"command":"ADD","containerID":"c1","netns":"/etc/shadow","podName":"web","podNamespace":"shop"}`
	resp, err := client.Post("http://agent"+wire.Path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("root peer: %v", err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(answer), "/var/run/netns/<name>") {
		t.Fatalf("ADD with netns /etc/shadow: %s %s, want 400 naming the accepted netns paths", resp.Status, answer)
	}
	if got := metricValue(metrics.Failures.WithLabelValues("cni_request")); got != 1 {
		t.Fatalf("ambient_cni_failures_total{stage=cni_request} = %v, want 1", got)
	}
}

func TestAgentNetnsPath(t *testing.T) {
	for _, tc := range []struct {
		procRoot, runtime, want string
	}{
		{"/host/proc", "/proc/4242/ns/net", "/host/proc/4242/ns/net"},
		{"/host/proc", "/var/run/netns/cni-1", "/var/run/netns/cni-1"},
		{"/proc", "/proc/4242/ns/net", "/proc/4242/ns/net"},
		{"", "/proc/4242/ns/net", "/proc/4242/ns/net"},
		{"/host/proc", "", ""},
	} {
		s := &CNIServer{ProcRoot: tc.procRoot}
		if got := s.agentNetnsPath(tc.runtime); got != tc.want {
			t.Errorf("ProcRoot %q: agentNetnsPath(%q) = %q, want %q", tc.procRoot, tc.runtime, got, tc.want)
		}
	}
}

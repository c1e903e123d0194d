package localmesh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// NetnsDir is where `ip netns` bind-mounts named namespaces: the
// machine's, shared with every other test. A node's CNI agent sees its own
// (Node.HostPath).
const NetnsDir = "/var/run/netns"

// NetnsPath is the bind-mount path of a named network namespace.
func NetnsPath(name string) string { return filepath.Join(NetnsDir, name) }

// run runs a command and returns its combined output in the error.
func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// inNetns runs a command inside a named network namespace.
func inNetns(netns string, args ...string) error {
	return run("ip", append([]string{"netns", "exec", netns}, args...)...)
}

// createNetns creates a named network namespace with its loopback up and records it in
// st once it exists, so the state names exactly the namespaces this mesh made: Down after
// a partial Up deletes them all, and never one that `ip netns add` refused because it
// already existed (another mesh's am-ul, say). If the record cannot be written, the new
// namespace is deleted again; one whose loopback failed stays recorded for Down.
func createNetns(st *State, name string) error {
	if err := run("ip", "netns", "add", name); err != nil {
		return err
	}
	if err := st.addNetns(name); err != nil {
		return errors.Join(err, deleteNetns(name))
	}
	return inNetns(name, "ip", "link", "set", "lo", "up")
}

// deleteNetns removes a named network namespace; a missing one is not an error.
func deleteNetns(name string) error {
	if _, err := os.Stat(NetnsPath(name)); os.IsNotExist(err) {
		return nil
	}
	return run("ip", "netns", "delete", name)
}

// Do runs fn on an OS thread that entered the network namespace at path.
// Sockets created by fn live in that namespace whichever thread uses them
// afterwards; processes fn starts inherit it (CNI plugins act in the
// caller's netns).
func Do(path string, fn func() error) error {
	netns, err := ns.GetNS(path)
	if err != nil {
		return err
	}
	defer netns.Close()
	return netns.Do(func(ns.NetNS) error { return fn() })
}

// DialIn opens a TCP connection from inside the netns at path.
func DialIn(path, address string, timeout time.Duration) (net.Conn, error) {
	var conn net.Conn
	err := Do(path, func() error {
		var err error
		conn, err = net.DialTimeout("tcp", address, timeout)
		return err
	})
	return conn, err
}

// ListenIn listens on a TCP address inside the netns at path.
func ListenIn(path, address string) (net.Listener, error) {
	var l net.Listener
	err := Do(path, func() error {
		var err error
		l, err = net.Listen("tcp", address)
		return err
	})
	return l, err
}

// HTTPClientIn is an HTTP client whose connections are opened inside the
// netns at path (for a node's localhost-only admin endpoint, say).
func HTTPClientIn(path string, timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return DialIn(path, addr, timeout)
		},
	}}
}

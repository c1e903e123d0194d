package localmesh

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/ambientmesh/ambient-operator/internal/meshconfig"
)

// Names and addresses of the local topology. Private addresses are used
// only inside namespaces the harness creates.
const (
	UnderlayNetns  = "am-ul"
	underlayBridge = "ul0"
	underlayPrefix = "10.88.0."
	podNetPrefix   = "10.89."
	// ControlPlaneNode is the Node object of the root network namespace,
	// where the apiserver, cert-manager, the operator and the control plane run.
	ControlPlaneNode = "am-control-plane"
)

// Node is a "node": a network namespace on the underlay, with its own pod
// CIDR behind a bridge and its own directory standing in for its host
// filesystem.
type Node struct {
	Name       string // also the netns name
	Index      int
	UnderlayIP string
	PodCIDR    string
	Gateway    string
	// HostDir holds what would be the node's own files: CNI bin and conf
	// dirs, /var/run/ambientmesh, host-local IPAM state, and its views of
	// the kernel: /var/run/netns (links to its pods' namespaces) and /proc.
	HostDir string
	// UnderlayIf is the node's underlay interface (inside the node netns).
	UnderlayIf string
}

// NetnsPath is the node's netns path.
func (n *Node) NetnsPath() string { return NetnsPath(n.Name) }

// HostPath maps a path on the node's host filesystem to the node's own
// directory, /var/run/netns and /proc included: the machine's are shared
// with every other test and cluster on it, and the CNI agent removes its
// rules from every namespace it finds there when the mesh is uninstalled.
// The node's /var/run/netns holds its pods' namespaces (see linkPodNetns),
// as a container runtime's does; its /proc stays empty, since every pod
// here has a named namespace.
func (n *Node) HostPath(p string) string { return filepath.Join(n.HostDir, p) }

func newNode(stateDir string, i int) *Node {
	name := fmt.Sprintf("am-n%d", i)
	return &Node{
		Name: name, Index: i,
		UnderlayIP: fmt.Sprintf("%s%d", underlayPrefix, 10+i),
		PodCIDR:    fmt.Sprintf("%s%d.0/24", podNetPrefix, i),
		Gateway:    fmt.Sprintf("%s%d.1", podNetPrefix, i),
		HostDir:    nodeHostDir(stateDir, name),
		UnderlayIf: "eth0",
	}
}

func nodeHostDir(stateDir, name string) string { return filepath.Join(stateDir, "nodes", name) }

// podNetnsView is the node's /var/run/netns: what its CNI agent sees.
func (n *Node) podNetnsView() string { return n.HostPath(meshconfig.NetNSDir) }

// podNetnsViews are the nodes' /var/run/netns under a mesh's state dir.
func podNetnsViews(stateDir string) []string {
	views, _ := filepath.Glob(filepath.Join(nodeHostDir(stateDir, "*"), meshconfig.NetNSDir))
	return views
}

// linkPodNetns shows a pod's namespace in its node's /var/run/netns. The
// agent opens the link like the bind mount a runtime would leave there;
// the namespace itself stays in the machine's netns dir, where `ip netns`
// and the CNI plugin (which accepts only /var/run/netns/<name>) name it.
func (n *Node) linkPodNetns(name string) error {
	if err := os.MkdirAll(n.podNetnsView(), 0o755); err != nil {
		return err
	}
	link := filepath.Join(n.podNetnsView(), name)
	if err := os.Remove(link); err != nil && !os.IsNotExist(err) {
		return err
	}
	return os.Symlink(NetnsPath(name), link)
}

// unlinkPodNetns hides a pod's namespace from its node before it goes: a
// stale link would name whatever namespace takes the name next.
func (n *Node) unlinkPodNetns(name string) error {
	if err := os.Remove(filepath.Join(n.podNetnsView(), name)); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}

// buildTopology creates the underlay netns with its bridge and one netns per
// node linked to it, with routes to every other node's pod CIDR.
func buildTopology(st *State, nodes []*Node) error {
	if err := createNetns(st, UnderlayNetns); err != nil {
		return err
	}
	steps := [][]string{
		{"ip", "-n", UnderlayNetns, "link", "add", underlayBridge, "type", "bridge"},
		{"ip", "-n", UnderlayNetns, "link", "set", underlayBridge, "up"},
	}
	for _, n := range nodes {
		if err := createNetns(st, n.Name); err != nil {
			return err
		}
		peer := "ul-" + strings.TrimPrefix(n.Name, "am-")
		steps = append(steps,
			[]string{"ip", "-n", UnderlayNetns, "link", "add", peer, "type", "veth", "peer", "name", n.UnderlayIf, "netns", n.Name},
			[]string{"ip", "-n", UnderlayNetns, "link", "set", peer, "master", underlayBridge, "up"},
			[]string{"ip", "-n", n.Name, "addr", "add", n.UnderlayIP + "/24", "dev", n.UnderlayIf},
			[]string{"ip", "-n", n.Name, "link", "set", n.UnderlayIf, "up"},
			[]string{"ip", "netns", "exec", n.Name, "sysctl", "-qw", "net.ipv4.ip_forward=1"},
		)
		for _, other := range nodes {
			if other != n {
				steps = append(steps, []string{"ip", "-n", n.Name, "route", "add", other.PodCIDR, "via", other.UnderlayIP})
			}
		}
	}
	for _, s := range steps {
		if err := run(s[0], s[1:]...); err != nil {
			return err
		}
	}
	return nil
}

// writeNetnsHosts gives a netns an /etc/hosts (ip netns exec bind-mounts
// /etc/netns/<name>/hosts over /etc/hosts for processes it starts) in which
// names (the cluster Service names the mesh's processes use) resolve to the
// netns's loopback, where the port forwarder listens.
func writeNetnsHosts(st *State, netns string, names []string) error {
	if _, err := os.Stat("/etc/netns"); os.IsNotExist(err) {
		if err := st.addPath("/etc/netns"); err != nil {
			return err
		}
	}
	dir := filepath.Join("/etc/netns", netns)
	if err := st.addPath(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "hosts"), []byte(hostsFile(netns, names)), 0o644)
}

// Forwarder listens on 127.0.0.1:<port> inside a node's (or pod's) netns
// and forwards each connection to 127.0.0.1:<port> of the root netns: it
// stands in for the cluster network between the nodes and the
// control-plane node, like `kubectl port-forward`.
type Forwarder struct {
	listeners []net.Listener
	wg        sync.WaitGroup
}

// forward starts listeners for ports inside the netns at path.
func forward(path string, ports []int) (*Forwarder, error) {
	f := &Forwarder{}
	for _, port := range ports {
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		l, err := ListenIn(path, addr)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("forwarder in %s: %w", path, err)
		}
		f.listeners = append(f.listeners, l)
		f.wg.Add(1)
		go f.serve(l, addr)
	}
	return f, nil
}

func (f *Forwarder) serve(l net.Listener, target string) {
	defer f.wg.Done()
	for {
		in, err := l.Accept()
		if err != nil {
			return
		}
		go pipe(in, target)
	}
}

func pipe(in net.Conn, target string) {
	defer in.Close()
	out, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer out.Close()
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go cp(out, in)
	go cp(in, out)
	<-done
	<-done
}

// Close stops accepting; open connections end with their peers.
func (f *Forwarder) Close() error {
	var errs []error
	for _, l := range f.listeners {
		errs = append(errs, l.Close())
	}
	f.wg.Wait()
	return errors.Join(errs...)
}

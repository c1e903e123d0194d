package nodetest

import (
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ambientmesh/ambient-operator/internal/testwait"
)

// relayEnv makes this test binary a plain TCP relay ("listen>target") instead of running
// tests (TestMain): the floor against which BenchmarkDataplane's round-trip figure is read.
const relayEnv = "NODETEST_RELAY"

// runRelay accepts on listen and copies each connection both ways to a new connection to
// target: what any user-space proxy does at least, with no TLS, HTTP/2 or capture rules.
func runRelay(spec string) int {
	listen, target, _ := strings.Cut(spec, ">")
	l, err := net.Listen("tcp", listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for {
		c, err := l.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		go func() {
			defer c.Close()
			u, err := net.Dial("tcp", target)
			if err != nil {
				return
			}
			defer u.Close()
			go func() { _, _ = io.Copy(u, c) }()
			_, _ = io.Copy(c, u)
		}()
	}
}

// startRelays runs two relay processes on the mesh path's route, one in each node's
// namespace: plain-a → relay on node a (its bridge address) → relay on node b (its underlay
// address) → legacy. Like the mesh path it crosses three TCP connections and two proxy
// processes. It returns the path for requestResponse.
func (c *cluster) startRelays(t testing.TB) func() (*pod, string) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	start := func(n *node, listen, target string) {
		cmd := n.ns.Cmd(exe)
		cmd.Env = append(os.Environ(), relayEnv+"="+listen+">"+target)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	}
	const nodeBUnderlay = "10.99.0.2:7000" // newCluster's underlay address of node b
	nodeA := c.nodes["a"]
	start(c.nodes["b"], nodeBUnderlay, c.pods["legacy"].ip.String()+":7000")
	start(nodeA, nodeA.gateway+":7000", nodeBUnderlay)
	relayed := func() (*pod, string) { return c.pods["plain-a"], nodeA.gateway }
	testwait.For(t, "the relays to answer", 10*time.Second, func() bool {
		p, ip := relayed()
		_, err := connectRTT(p, ip+":7000")
		return err == nil
	})
	return relayed
}

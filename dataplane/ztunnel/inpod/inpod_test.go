package inpod

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	handoffpb "github.com/ambientmesh/ambient-operator/api/handoff/v1alpha1"
	"github.com/ambientmesh/ambient-operator/dataplane/cni/rules"
	"github.com/ambientmesh/ambient-operator/internal/netnstest"
	"github.com/ambientmesh/ambient-operator/internal/testwait"
)

// openNetNS opens n the way ztunnel opens a pod's netns; it is closed when
// the test ends.
func openNetNS(tb testing.TB, n *netnstest.NS) *NetNS {
	tb.Helper()
	ns, err := OpenNetNS(n.Path)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ns.Close() })
	return ns
}

// serveGreeting listens on port inside ns until the test ends and answers
// each connection with greeting (nothing when empty) before closing it.
func serveGreeting(tb testing.TB, ns *NetNS, port uint16, greeting string) {
	tb.Helper()
	ln, err := ns.Listen(port)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if greeting != "" {
				_, _ = c.Write([]byte(greeting))
			}
			c.Close()
		}
	}()
}

// threadsOutsideHostNetns lists this process's threads whose netns is not the host's.
func threadsOutsideHostNetns(t *testing.T) []string {
	t.Helper()
	host, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	tasks, _ := filepath.Glob("/proc/self/task/*/ns/net")
	var bad []string
	for _, p := range tasks {
		if ns, err := os.Readlink(p); err == nil && ns != host {
			bad = append(bad, p+"="+ns)
		}
	}
	return bad
}

func TestDoReturnsThreadsToHostNetns(t *testing.T) {
	netnstest.RequireRoot(t)
	pod := netnstest.New(t, "zpod")
	ns := openNetNS(t, pod)
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := ns.Do(func() error {
				got, err := os.Readlink("/proc/thread-self/ns/net")
				if err != nil {
					return err
				}
				if want := fmt.Sprintf("net:[%d]", ns.Inode()); got != want {
					return fmt.Errorf("inside Do the thread is in %s, want %s", got, want)
				}
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if bad := threadsOutsideHostNetns(t); len(bad) > 0 {
		t.Fatalf("threads left in a pod netns: %v", bad)
	}
}

func TestNewNetNSRejectsOtherFiles(t *testing.T) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewNetNS(f); err == nil || !strings.Contains(err.Error(), "not a namespace file") {
		t.Fatalf("got %v", err)
	}
}

// echoPods is a PodHandler that echoes on the outbound and inbound listeners and reports
// what the original destination of each connection was ("outbound <dst> <ok> <err>",
// "inbound ..."), and the local address of each connection to the HBONE listener ("hbone
// <addr>").
type echoPods struct {
	mu   sync.Mutex
	seen []string
}

func (e *echoPods) record(s string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.seen = append(e.seen, s)
}

func (e *echoPods) seenSoFar() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.seen...)
}

func (e *echoPods) ServePod(pod *Pod) func() {
	var loops, conns sync.WaitGroup
	serve := func(kind string, ln net.Listener) {
		defer loops.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer conns.Done()
				defer c.Close()
				if kind == "hbone" {
					e.record("hbone " + c.LocalAddr().String())
					return
				}
				dst, ok, err := OriginalDst(c)
				e.record(fmt.Sprintf("%s %s %v %v", kind, dst, ok, err))
				_, _ = io.Copy(c, c)
			}()
		}
	}
	loops.Add(3)
	go serve("outbound", pod.Outbound)
	go serve("inbound", pod.Inbound)
	go serve("hbone", pod.HBONE)
	return func() { loops.Wait(); conns.Wait() }
}

func TestManagerListensInPodNetnsWithCapture(t *testing.T) {
	netnstest.RequireRoot(t)
	for _, backend := range []string{rules.BackendIPTables, rules.BackendNFTables} {
		t.Run(backend, func(t *testing.T) {
			pod := netnstest.New(t, "zpod")
			peer := netnstest.New(t, "zpeer")
			netnstest.Veth(t, pod, "10.251.0.2/24", peer, "10.251.0.1/24")
			r, err := rules.New(backend)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := r.Install(pod.Path, rules.DefaultPodConfig()); err != nil {
				t.Fatal(err)
			}

			h := &echoPods{}
			m := NewManager(h, DefaultPorts, testr.New(t))
			defer m.Close()
			f, err := os.Open(pod.Path)
			if err != nil {
				t.Fatal(err)
			}
			if err := m.Add(&handoffpb.AddWorkload{Uid: "u1", Name: "p", Namespace: "ns", ServiceAccount: "sa"}, f); err != nil {
				t.Fatal(err)
			}
			// The app in the pod connects to some outside address: the capture sends it to our
			// 15001 listener in the pod, which sees the original destination.
			podNS := openNetNS(t, pod)
			if out := appRoundTrip(t, podNS, "10.251.0.1:8080", "hello"); out != "hello" {
				t.Fatalf("captured echo returned %q", out)
			}
			if seen := strings.Join(h.seenSoFar(), ";"); seen != "outbound 10.251.0.1:8080 true <nil>" {
				t.Fatalf("original destination seen: %q", seen)
			}
			// Nothing listens on the host's 15001 because of us.
			if c, err := net.DialTimeout("tcp", "127.0.0.1:15001", 200*time.Millisecond); err == nil {
				c.Close()
				t.Fatal("a listener leaked into the host netns")
			}
			if bad := threadsOutsideHostNetns(t); len(bad) > 0 {
				t.Fatalf("threads left in a pod netns: %v", bad)
			}
			// Replaying the same pod (same netns) keeps the listeners; deleting closes them.
			f2, _ := os.Open(pod.Path)
			if err := m.Add(&handoffpb.AddWorkload{Uid: "u1", Name: "p", Namespace: "ns", ServiceAccount: "sa"}, f2); err != nil {
				t.Fatal(err)
			}
			if err := m.Del("u1"); err != nil {
				t.Fatal(err)
			}
			if err := appDial(podNS, "127.0.0.1:15001"); err == nil {
				t.Fatal("15001 still open in the pod after delete")
			}
		})
	}
}

// A dual-stack pod: the listeners ztunnel opens in it accept IPv6 too, the capture sends
// the pod's IPv6 connections to them with their original destination readable, HBONE to
// the pod's IPv6 address reaches the 15008 listener uncaptured, and ztunnel's own marked
// IPv6 dial (HBONE to a peer's [addr]:15008) leaves the pod uncaptured.
func TestManagerServesIPv6(t *testing.T) {
	netnstest.RequireRoot(t)
	for _, backend := range []string{rules.BackendIPTables, rules.BackendNFTables} {
		t.Run(backend, func(t *testing.T) {
			pod, peer := netnstest.New(t, "zpod"), netnstest.New(t, "zpeer")
			// No duplicate address detection: it would keep the addresses unusable a while.
			podIf, peerIf := netnstest.Veth(t, pod, "10.251.0.2/24", peer, "10.251.0.1/24")
			pod.Run(t, "ip", "addr", "add", "fd00:251::2/64", "dev", podIf, "nodad")
			peer.Run(t, "ip", "addr", "add", "fd00:251::1/64", "dev", peerIf, "nodad")
			r, err := rules.New(backend)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := r.Install(pod.Path, rules.DefaultPodConfig()); err != nil {
				t.Fatal(err)
			}
			h := &echoPods{}
			m := NewManager(h, DefaultPorts, testr.New(t))
			defer m.Close()
			f, err := os.Open(pod.Path)
			if err != nil {
				t.Fatal(err)
			}
			if err := m.Add(&handoffpb.AddWorkload{Uid: "u1", Name: "p", Namespace: "ns", ServiceAccount: "sa"}, f); err != nil {
				t.Fatal(err)
			}
			podNS, peerNS := openNetNS(t, pod), openNetNS(t, peer)
			serveGreeting(t, peerNS, 15008, "served") // the peer's HBONE port

			if out := appRoundTrip(t, podNS, "[fd00:251::1]:8080", "hello"); out != "hello" {
				t.Fatalf("captured outbound echo returned %q", out)
			}
			if out := appRoundTrip(t, peerNS, "[fd00:251::2]:8080", "hi"); out != "hi" {
				t.Fatalf("captured inbound echo returned %q", out)
			}
			if err := appDial(peerNS, "[fd00:251::2]:15008"); err != nil {
				t.Fatalf("HBONE to the pod's IPv6 address: %v", err)
			}
			want := []string{
				"outbound [fd00:251::1]:8080 true <nil>",
				"inbound [fd00:251::2]:8080 true <nil>",
				"hbone [fd00:251::2]:15008",
			}
			testwait.For(t, "three connections served", 5*time.Second, func() bool { return len(h.seenSoFar()) == len(want) })
			if got := h.seenSoFar(); !slices.Equal(got, want) {
				t.Fatalf("served %q, want %q", got, want)
			}

			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err := podNS.DialTCP(ctx, netip.MustParseAddrPort("[fd00:251::1]:15008"))
			if err != nil {
				t.Fatalf("ztunnel's dial to a peer's IPv6 HBONE port: %v", err)
			}
			defer c.Close()
			if got, _ := io.ReadAll(c); string(got) != "served" {
				t.Fatalf("the marked IPv6 dial read %q, want the peer's answer (it was captured?)", got)
			}
			if got := c.RemoteAddr().String(); got != "[fd00:251::1]:15008" {
				t.Fatalf("remote address %s", got)
			}
		})
	}
}

// markOnlyPod is a pod netns (10.252.0.2) with a peer (10.252.0.1) serving "served" on
// port 9000, which the pod reaches only with marked packets: its OUTPUT rejects the rest.
func markOnlyPod(t *testing.T) *NetNS {
	netnstest.RequireRoot(t)
	pod := netnstest.New(t, "zpod")
	peer := netnstest.New(t, "zpeer")
	netnstest.Veth(t, pod, "10.252.0.2/24", peer, "10.252.0.1/24")
	pod.Run(t, "iptables", "-A", "OUTPUT", "-p", "tcp", "--dport", "9000", "-m", "mark", "!", "--mark", "0x539", "-j", "REJECT")
	serveGreeting(t, openNetNS(t, peer), 9000, "served")
	return openNetNS(t, pod)
}

func TestDialerMarksItsSockets(t *testing.T) {
	ns := markOnlyPod(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := ns.DialTCP(ctx, netip.MustParseAddrPort("10.252.0.1:9000"))
	if err != nil {
		t.Fatalf("marked dial from the pod netns: %v", err)
	}
	defer c.Close()
	got, _ := io.ReadAll(c)
	if strings.TrimSpace(string(got)) != "served" {
		t.Fatalf("read %q", got)
	}
	// An unmarked socket from the same netns is rejected by the rule, proving the mark matters.
	err = ns.Do(func() error {
		c, err := net.DialTimeout("tcp", "10.252.0.1:9000", time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
	if err == nil {
		t.Fatal("an unmarked dial went through: the test rule does not check the mark")
	}
}

// appDial connects from inside ns like an application would (no mark).
func appDial(ns *NetNS, addr string) error {
	return ns.Do(func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
}

// appRoundTrip sends msg from inside ns to addr, half-closes, and returns the reply.
func appRoundTrip(t *testing.T, ns *NetNS, addr, msg string) string {
	t.Helper()
	var c net.Conn
	if err := ns.Do(func() error {
		var err error
		c, err = net.DialTimeout("tcp", addr, 2*time.Second)
		return err
	}); err != nil {
		t.Fatalf("app dial %s: %v", addr, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	return string(got)
}

// sparesFull reports whether ns holds all the spare sockets it keeps.
func sparesFull(ns *NetNS) bool {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	return len(ns.spares) == spareCount
}

// Dials after the first take sockets made in advance: they too carry the mark (the rule
// below rejects unmarked ones), report their real addresses, and closing the namespace
// closes the spares left.
func TestSpareSocketsAreMarkedAndAddressed(t *testing.T) {
	ns := markOnlyPod(t)
	dst := netip.MustParseAddrPort("10.252.0.1:9000")
	spared := 0
	for i := range 3 * spareCount {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := ns.DialTCP(ctx, dst)
		cancel()
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		if _, ok := c.(*spareConn); ok {
			spared++
		}
		local, _ := netip.ParseAddrPort(c.LocalAddr().String())
		if c.RemoteAddr().String() != dst.String() || local.Addr() != netip.MustParseAddr("10.252.0.2") || local.Port() == 0 {
			t.Fatalf("dial %d: local %v remote %v, want 10.252.0.2:<port> and %v", i, c.LocalAddr(), c.RemoteAddr(), dst)
		}
		got, _ := io.ReadAll(c)
		c.Close()
		if strings.TrimSpace(string(got)) != "served" {
			t.Fatalf("dial %d: read %q", i, got)
		}
		testwait.For(t, "the spare sockets refilled", 5*time.Second, func() bool { return sparesFull(ns) })
	}
	if spared == 0 {
		t.Fatal("no dial used a spare socket")
	}
	ns.mu.Lock()
	spares := append([]*net.TCPConn(nil), ns.spares...)
	ns.mu.Unlock()
	if len(spares) == 0 {
		t.Fatal("no spare socket kept after dialing")
	}
	ns.Close()
	if rc, err := spares[0].SyscallConn(); err == nil && rc.Control(func(uintptr) {}) == nil {
		t.Fatal("a spare socket is still open after the namespace was closed")
	}
}

// A Manager with DisableSpareSockets gives its pods namespaces whose dials make their own
// socket every time and keep none in advance; by default the second dial takes a spare.
func TestManagerDisableSpareSockets(t *testing.T) {
	netnstest.RequireRoot(t)
	for _, disable := range []bool{false, true} {
		t.Run(fmt.Sprintf("disable=%v", disable), func(t *testing.T) {
			pod := netnstest.New(t, "zpod")
			serveGreeting(t, openNetNS(t, pod), 7000, "")
			m := NewManager(&echoPods{}, DefaultPorts, testr.New(t))
			m.DisableSpareSockets = disable
			defer m.Close()
			f, err := os.Open(pod.Path)
			if err != nil {
				t.Fatal(err)
			}
			if err := m.Add(&handoffpb.AddWorkload{Uid: "u1", Name: "p", Namespace: "ns", ServiceAccount: "sa"}, f); err != nil {
				t.Fatal(err)
			}
			ns := m.Pods()[0].Net.(*NetNS)
			dial := func() net.Conn {
				t.Helper()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				c, err := ns.Dial(ctx, "tcp", "127.0.0.1:7000")
				if err != nil {
					t.Fatal(err)
				}
				c.Close()
				return c
			}
			if _, spare := dial().(*spareConn); spare {
				t.Fatal("the first dial took a spare socket")
			}
			ns.mu.Lock()
			keepsSpares := ns.useSpare
			ns.mu.Unlock()
			if keepsSpares == disable {
				t.Fatalf("after the first dial the namespace keeps spare sockets: %v, want %v", keepsSpares, !disable)
			}
			if !disable {
				testwait.For(t, "the spare sockets made after the first dial", 5*time.Second, func() bool { return sparesFull(ns) })
			}
			if _, spare := dial().(*spareConn); spare == disable {
				t.Fatalf("the second dial took a spare socket: %v, want %v", spare, !disable)
			}
		})
	}
}

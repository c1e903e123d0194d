package inpod

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/ambientmesh/ambient-operator/internal/netnstest"
)

func BenchmarkDo(b *testing.B) {
	netnstest.RequireRoot(b)
	pod := netnstest.New(b, "zpod")
	ns := openNetNS(b, pod)
	for b.Loop() {
		if err := ns.Do(func() error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDialLoopback(b *testing.B) {
	netnstest.RequireRoot(b)
	pod := netnstest.New(b, "zpod")
	ns := openNetNS(b, pod)
	serveGreeting(b, ns, 7000, "")
	for b.Loop() {
		c, err := ns.Dial(context.Background(), "tcp", "127.0.0.1:7000")
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}

// BenchmarkDialSpareSockets measures a performance device, the spare in-pod sockets
// (AMBIENT_PERF_SPARE_SOCKETS, docs/performance.md): a dial from a pod's namespace to an
// app in the pod, as the inbound path dials its upstream, alternately from a NetNS that
// keeps spares and from one that does not (the same namespace). Each pair of dials starts
// once the spares are refilled, as they are for connections more than a few milliseconds
// apart, so the refill never runs during a dial. It prints each mode's p50 and ignores b.N;
// run it once (root):
//
//	go test ./dataplane/ztunnel/inpod -run '^$' -bench '^BenchmarkDialSpareSockets$' -benchtime 1x
func BenchmarkDialSpareSockets(b *testing.B) {
	netnstest.RequireRoot(b)
	pod := netnstest.New(b, "zpod")
	withSpares, without := openNetNS(b, pod), openNetNS(b, pod)
	without.noSpares = true
	serveGreeting(b, withSpares, 7000, "")
	dial := func(ns *NetNS) time.Duration {
		start := time.Now()
		c, err := ns.Dial(context.Background(), "tcp", "127.0.0.1:7000")
		if err != nil {
			b.Fatal(err)
		}
		took := time.Since(start)
		c.Close()
		return took
	}
	dial(withSpares) // the first dial has the spares made
	var on, off []time.Duration
	for range 1000 {
		waitForSpares(b, withSpares)
		off = append(off, dial(without))
		on = append(on, dial(withSpares))
	}
	fmt.Printf("spare_sockets_dial_p50_us_on: %.0f\n", p50Micros(on))
	fmt.Printf("spare_sockets_dial_p50_us_off: %.0f\n", p50Micros(off))
}

// waitForSpares polls until ns holds spareCount spare sockets. Not testwait.For: a refill
// takes about a millisecond and this runs 1000 times a benchmark, so it polls every 100µs
// where testwait.For's 20ms would add 20s to every run.
func waitForSpares(b *testing.B, ns *NetNS) {
	b.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Microsecond) {
		if sparesFull(ns) {
			return
		}
		if time.Now().After(deadline) {
			b.Fatal("the spare sockets were not refilled within 5s")
		}
	}
}

func p50Micros(d []time.Duration) float64 {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return float64(s[(len(s)-1)/2]) / float64(time.Microsecond)
}

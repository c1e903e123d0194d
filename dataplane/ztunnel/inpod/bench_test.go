package inpod

import (
	"context"
	"testing"

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

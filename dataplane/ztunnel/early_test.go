package ztunnel

import (
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ambientmesh/ambient-operator/internal/tcptest"
	"github.com/ambientmesh/ambient-operator/internal/testwait"
)

func TestReadReadyTakesQueuedBytesWithoutWaiting(t *testing.T) {
	app, proxy := tcptest.Pair(t)
	start := time.Now()
	if got, err := readReady(proxy); err != nil || got != nil {
		t.Fatalf("nothing sent yet: got %q %v, want nothing", got, err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("readReady waited %v with nothing queued", d)
	}
	if _, err := app.Write([]byte("GET / HTTP/1.1\r\n")); err != nil {
		t.Fatal(err)
	}
	var got []byte
	testwait.For(t, "the written bytes to be ready", 5*time.Second, func() bool {
		b, err := readReady(proxy)
		if err != nil {
			t.Fatal(err)
		}
		got = b
		return len(got) > 0
	})
	if string(got) != "GET / HTTP/1.1\r\n" {
		t.Fatalf("got %q", got)
	}
	// What was not taken early is still there for the copy that follows.
	if _, err := app.Write([]byte("rest")); err != nil {
		t.Fatal(err)
	}
	if err := app.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(proxy)
	if err != nil || string(rest) != "rest" {
		t.Fatalf("after the early bytes: %q %v", rest, err)
	}
}

func TestReadReadyLeavesEOFForTheCopy(t *testing.T) {
	app, proxy := tcptest.Pair(t)
	if err := app.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "the FIN to arrive", 5*time.Second, func() bool { return finQueued(t, proxy) })
	if got, err := readReady(proxy); err != nil || got != nil {
		t.Fatalf("half-closed app: got %q %v, want nothing", got, err)
	}
	_ = proxy.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := proxy.Read(make([]byte, 8)); n != 0 || err != io.EOF {
		t.Fatalf("the copy should still see EOF: %d %v", n, err)
	}
}

// finQueued peeks at c without taking anything from it: true once the peer's FIN is there
// to be read.
func finQueued(t *testing.T, c net.Conn) bool {
	t.Helper()
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	n, peekErr := -1, error(nil)
	if err := rc.Read(func(fd uintptr) bool {
		n, _, peekErr = unix.Recvfrom(int(fd), make([]byte, 1), unix.MSG_PEEK|unix.MSG_DONTWAIT)
		return true // one attempt: the caller polls
	}); err != nil {
		t.Fatal(err)
	}
	return n == 0 && peekErr == nil
}

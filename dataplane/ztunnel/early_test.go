package ztunnel

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/ambientmesh/ambient-operator/internal/tcptest"
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
	for deadline := time.Now().Add(5 * time.Second); len(got) == 0 && time.Now().Before(deadline); {
		b, err := readReady(proxy)
		if err != nil {
			t.Fatal(err)
		}
		got = b
	}
	if string(got) != "GET / HTTP/1.1\r\n" {
		t.Fatalf("got %q", got)
	}
	// What was not taken early is still there for the copy that follows.
	app.Write([]byte("rest"))
	app.(*net.TCPConn).CloseWrite()
	rest, err := io.ReadAll(proxy)
	if err != nil || string(rest) != "rest" {
		t.Fatalf("after the early bytes: %q %v", rest, err)
	}
}

func TestReadReadyLeavesEOFForTheCopy(t *testing.T) {
	app, proxy := tcptest.Pair(t)
	app.(*net.TCPConn).CloseWrite()
	time.Sleep(50 * time.Millisecond) // let the FIN arrive
	if got, err := readReady(proxy); err != nil || got != nil {
		t.Fatalf("half-closed app: got %q %v, want nothing", got, err)
	}
	_ = proxy.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := proxy.Read(make([]byte, 8)); n != 0 || err != io.EOF {
		t.Fatalf("the copy should still see EOF: %d %v", n, err)
	}
}

// Package tcptest gives tests real TCP connections on loopback.
package tcptest

import (
	"net"
	"testing"
)

// Pair returns both ends of a loopback TCP connection: app (the side an
// application writes to) and proxy (the side a ztunnel reads). Both close
// when the test ends.
func Pair(t testing.TB) (app, proxy net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	app, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	proxy, err = l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Close(); proxy.Close() })
	return app, proxy
}

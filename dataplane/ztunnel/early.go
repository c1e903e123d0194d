package ztunnel

import (
	"errors"
	"net"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// earlyReadSize bounds what is taken from the app before the tunnel is up: enough for a
// request's first segment, small against the stream's flow-control window.
const earlyReadSize = 16 << 10

var earlyBufs = sync.Pool{New: func() any { b := make([]byte, earlyReadSize); return &b }}

// readReady returns what the app has already sent on c, without waiting for more: one
// non-blocking read, nothing (nil) when no data is queued or the app already half-closed
// (the copy that follows sees that EOF again). Protocols where the server speaks first
// are unaffected: they simply have nothing queued.
func readReady(c net.Conn) ([]byte, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	bp := earlyBufs.Get().(*[]byte)
	defer earlyBufs.Put(bp)
	n := 0
	var rerr error
	if err := rc.Read(func(fd uintptr) bool {
		n, rerr = unix.Read(int(fd), *bp)
		return true // one attempt: never wait in the poller
	}); err != nil {
		return nil, err
	}
	if errors.Is(rerr, unix.EAGAIN) || n <= 0 && rerr == nil {
		return nil, nil
	}
	if rerr != nil {
		return nil, rerr
	}
	return append([]byte(nil), (*bp)[:n]...), nil
}

// Package unixsocktest connects to unix sockets as another user, for tests
// (run as root) of servers that check their peer with SO_PEERCRED.
//
// The connection is made from an OS thread of the test process whose
// credentials alone are changed (setresuid(2) on that thread, not the
// process-wide syscall.Setuid). The kernel records the thread's effective
// uid as the peer's, exactly as for a separate process. The thread is never
// reused: its goroutine ends still locked to it, so the Go runtime discards
// it.
package unixsocktest

import (
	"fmt"
	"net"
	"runtime"

	"golang.org/x/sys/unix"
)

// DialAs connects as a process running as uid: the socket file's mode
// applies to it like to any unprivileged process.
func DialAs(uid int, network, path string) (*net.UnixConn, error) {
	return dialAs(uid, false, network, path)
}

// DialAsPastMode connects with effective uid uid (what SO_PEERCRED reports)
// but root's file system identity, like a process of that user holding
// CAP_DAC_OVERRIDE: the socket file's mode does not stop it, so only the
// server's peer check can.
func DialAsPastMode(uid int, network, path string) (*net.UnixConn, error) {
	return dialAs(uid, true, network, path)
}

func dialAs(uid int, rootFS bool, network, path string) (*net.UnixConn, error) {
	type result struct {
		conn *net.UnixConn
		err  error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with this goroutine
		// Real and saved uid stay 0, so the thread may take root's file system uid back.
		if _, _, errno := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), uintptr(uid), ^uintptr(0)); errno != 0 {
			done <- result{err: fmt.Errorf("setresuid(-1, %d, -1): %w", uid, errno)}
			return
		}
		if rootFS {
			// setfsuid returns the previous fsuid, never an error; a change from non-zero to
			// 0 also gives the thread back its file system capabilities.
			_, _, _ = unix.RawSyscall(unix.SYS_SETFSUID, 0, 0, 0)
		}
		c, err := net.DialUnix(network, nil, &net.UnixAddr{Name: path, Net: network})
		done <- result{c, err}
	}()
	r := <-done
	return r.conn, r.err
}

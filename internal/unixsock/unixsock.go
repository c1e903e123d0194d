// Package unixsock opens the node-local unix sockets of the mesh: the one
// the CNI plugin calls the node agent on, and the hand-off socket over which
// the agent gives ztunnel pod network namespaces. Both are root-only:
//
//   - Listen makes the socket file appear at its path with mode 0600,
//     already listening. It binds a temporary name beside the path, chmods
//     it before listen(2) (until then a connect is refused, so the default
//     mode is never usable), and renames it onto the path. It does not
//     change the umask, which is per process and would race with files other
//     goroutines create, and it does not fchmod the socket, which on Linux
//     changes the socket's own inode and not the bound file. The rename
//     also replaces a stale socket (or that of a predecessor still draining)
//     in one step, so the path never goes missing.
//   - Listener (and CheckPeer) accepts a connection only when SO_PEERCRED
//     says its peer ran as root or as this process's user: the same users
//     the 0600 mode lets connect, enforced again for a peer that got past
//     the mode some other way (a capability, a mode changed by hand).
package unixsock

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// Mode is the permission of the socket files Listen creates.
const Mode = 0o600

// maxPathLen is the longest socket path the kernel takes (sun_path holds 108
// bytes with the terminating NUL).
const maxPathLen = 107

// Listen listens on a unix socket at path; network is "unix" (stream) or
// "unixpacket" (SOCK_SEQPACKET). The file at path is created with mode
// 0600, owned by this process's user, and is listening when it appears.
// The listener does not remove the file when closed: a successor may
// already have replaced it.
func Listen(network, path string) (*net.UnixListener, error) {
	sotype := unix.SOCK_STREAM
	switch network {
	case "unix":
	case "unixpacket":
		sotype = unix.SOCK_SEQPACKET
	default:
		return nil, fmt.Errorf("unixsock: network %q is not unix or unixpacket", network)
	}
	if len(path) > maxPathLen {
		return nil, fmt.Errorf("unixsock: socket path %s is longer than %d bytes", path, maxPathLen)
	}
	fd, err := unix.Socket(unix.AF_UNIX, sotype|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("unixsock: socket: %w", err)
	}
	tmp, err := bindTemporary(fd, path)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	if err := listenAndRename(fd, tmp, path); err != nil {
		unix.Close(fd)
		_ = os.Remove(tmp)
		return nil, err
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close() // FileListener holds its own duplicate
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("unixsock: %s: %w", path, err)
	}
	return ln.(*net.UnixListener), nil
}

// bindTemporary binds fd to a fresh name in path's directory and returns it.
func bindTemporary(fd int, path string) (string, error) {
	dir, base := filepath.Split(path)
	for range 10 {
		tmp := filepath.Join(dir, "."+base+"~"+strconv.FormatUint(uint64(rand.Uint32()), 36))
		if len(tmp) > maxPathLen {
			return "", fmt.Errorf("unixsock: socket path %s leaves no room for a temporary name (%d bytes at most)", path, maxPathLen-8)
		}
		err := unix.Bind(fd, &unix.SockaddrUnix{Name: tmp})
		if err == nil {
			return tmp, nil
		}
		if !errors.Is(err, unix.EADDRINUSE) {
			return "", fmt.Errorf("unixsock: bind %s: %w", tmp, err)
		}
	}
	return "", fmt.Errorf("unixsock: no free temporary name beside %s", path)
}

func listenAndRename(fd int, tmp, path string) error {
	if err := os.Chmod(tmp, Mode); err != nil {
		return fmt.Errorf("unixsock: %w", err)
	}
	if err := unix.Listen(fd, unix.SOMAXCONN); err != nil {
		return fmt.Errorf("unixsock: listen on %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("unixsock: %w", err)
	}
	return nil
}

// PeerError is a connection CheckPeer refused.
type PeerError struct {
	UID uint32
	PID int32
}

func (e *PeerError) Error() string {
	allowed := "root"
	if uid := os.Geteuid(); uid != 0 {
		allowed = fmt.Sprintf("root or uid %d (this process's user)", uid)
	}
	return fmt.Sprintf("unix socket peer pid %d runs as uid %d: only %s may connect", e.PID, e.UID, allowed)
}

// CheckPeer returns nil when the process at the other end of c ran as root
// or as this process's effective user when it connected, else a *PeerError
// (or the error reading the credentials).
func CheckPeer(c *net.UnixConn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return err
	}
	if credErr != nil {
		return fmt.Errorf("unixsock: SO_PEERCRED: %w", credErr)
	}
	if cred.Uid != 0 && cred.Uid != uint32(os.Geteuid()) {
		return &PeerError{UID: cred.Uid, PID: cred.Pid}
	}
	return nil
}

// Listener accepts only the connections CheckPeer allows: it closes the
// others, tells Refused (when set) why, and waits for the next one.
type Listener struct {
	*net.UnixListener
	Refused func(error)
}

// AcceptUnix returns the next allowed connection.
func (l *Listener) AcceptUnix() (*net.UnixConn, error) {
	for {
		c, err := l.UnixListener.AcceptUnix()
		if err != nil {
			return nil, err
		}
		perr := CheckPeer(c)
		if perr == nil {
			return c, nil
		}
		_ = c.Close()
		if l.Refused != nil {
			l.Refused(perr)
		}
	}
}

// Accept returns the next allowed connection (net.Listener).
func (l *Listener) Accept() (net.Conn, error) {
	c, err := l.AcceptUnix()
	if err != nil {
		return nil, err
	}
	return c, nil
}

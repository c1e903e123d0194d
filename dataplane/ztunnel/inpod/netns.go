// Package inpod runs ztunnel's sockets inside enrolled pods' network namespaces: the
// listeners on 15001 (outbound capture), 15006 (inbound plaintext capture) and 15008
// (inbound HBONE), and the upstream dials, marked with SO_MARK so that the pod's capture
// rules let them through. IPv4 and IPv6 alike: the listeners take both, dials go to
// either, and the original destination of a captured connection is read for both.
package inpod

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ProxyMark is the SO_MARK on ztunnel's own sockets (the in-pod rules skip it).
const ProxyMark = 0x539

// hostNetns is the netns ztunnel started in; threads return to it after working in a pod.
var hostNetns = func() *os.File {
	f, err := os.Open("/proc/self/ns/net")
	if err != nil {
		return nil
	}
	return f
}()

// NetNS is an open network namespace.
type NetNS struct {
	file *os.File

	// Unconnected IPv4 sockets made in advance (see Dial). Guarded by mu.
	mu       sync.Mutex
	spares   []*net.TCPConn
	filling  bool
	closed   bool
	useSpare bool // the namespace dials: keep spares (idle pods keep none)
	noSpares bool // every dial makes its own socket (Manager.DisableSpareSockets)
}

// spareCount is how many sockets a dialing namespace keeps ready.
const spareCount = 4

// NewNetNS takes ownership of f, an open netns file (from the hand-off or /var/run/netns).
func NewNetNS(f *os.File) (*NetNS, error) {
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err != nil {
		return nil, fmt.Errorf("netns fd: %w", err)
	}
	if st.Type != unix.NSFS_MAGIC {
		return nil, errors.New("netns fd: not a namespace file")
	}
	return &NetNS{file: f}, nil
}

// OpenNetNS opens a netns by path (e.g. /var/run/netns/<name>).
func OpenNetNS(path string) (*NetNS, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	ns, err := NewNetNS(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ns, nil
}

// Inode identifies the namespace (two fds of one netns have the same inode).
func (n *NetNS) Inode() uint64 {
	var st unix.Stat_t
	if err := unix.Fstat(int(n.file.Fd()), &st); err != nil {
		return 0
	}
	return st.Ino
}

// Close releases the namespace file and the spare sockets.
func (n *NetNS) Close() error {
	n.mu.Lock()
	n.closed = true
	spares := n.spares
	n.spares = nil
	n.mu.Unlock()
	for _, c := range spares {
		c.Close()
	}
	return n.file.Close()
}

// Do runs fn on an OS thread switched into the namespace. Sockets fn creates belong to the
// namespace for their whole life, wherever they are used later. fn must not start
// goroutines that expect to run in the namespace.
//
// fn runs on a goroutine of its own, locked to its thread. The thread is switched back to
// the host namespace afterwards and unlocked; if switching back fails, the goroutine exits
// still locked, and the Go runtime then destroys the thread, so no thread is ever left in a
// pod's namespace.
func (n *NetNS) Do(fn func() error) error {
	if hostNetns == nil {
		return errors.New("cannot open this process's network namespace")
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(int(n.file.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread() // still in the host namespace
			errc <- fmt.Errorf("entering pod netns: %w", err)
			return
		}
		err := fn()
		if unix.Setns(int(hostNetns.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// Listen opens a TCP listener on port inside the namespace, on every address (IPv4, and IPv6
// when the kernel has it), with SO_REUSEPORT so that a new ztunnel can listen beside an old
// one that drains.
func (n *NetNS) Listen(port uint16) (net.Listener, error) {
	var ln net.Listener
	err := n.Do(func() error {
		// Queued connections of a closed SO_REUSEPORT listener move to the others instead of
		// being reset: what a restart needs to refuse nothing. Best effort (kernel ≥ 5.14).
		_ = os.WriteFile("/proc/sys/net/ipv4/tcp_migrate_req", []byte("1"), 0o644)
		// No TCP keepalive on accepted connections: the apps are in the pod itself, and
		// peers on 15008 are watched by HTTP/2 PINGs. It saves four syscalls per accept.
		lc := net.ListenConfig{KeepAlive: -1, Control: func(_, _ string, c syscall.RawConn) error {
			return setsockopt(c, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}}
		var err error
		ln, err = lc.Listen(context.Background(), "tcp", fmt.Sprintf(":%d", port))
		return err
	})
	return ln, err
}

// Dial connects from inside the namespace with SO_MARK ProxyMark. Only the socket is
// created on a thread in the namespace (a socket keeps its namespace for life); the connect
// then waits in the runtime's poller like any dial, so no OS thread is held in the pod's
// namespace while the peer answers.
//
// IPv4 dials take a socket made in advance when one is ready: entering the namespace and
// wrapping the socket for the runtime (net.FileConn) are half the cost of a dial to the
// pod's own app, on the critical path of every inbound connection. A namespace keeps
// spareCount such sockets from its first dial on, unless its Manager has
// DisableSpareSockets.
func (n *NetNS) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if network != "tcp" && network != "tcp4" && network != "tcp6" {
		return nil, fmt.Errorf("inpod: dial %s: only tcp is supported", network)
	}
	dst, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("inpod: dial %q: %w", addr, err)
	}
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	if dst.Addr().Is6() {
		fd, err := n.socket(unix.AF_INET6)
		if err != nil {
			return nil, err
		}
		return connectFD(ctx, fd, &unix.SockaddrInet6{Port: int(dst.Port()), Addr: dst.Addr().As16()}, addr)
	}
	sa := &unix.SockaddrInet4{Port: int(dst.Port()), Addr: dst.Addr().As4()}
	if c := n.takeSpare(); c != nil {
		return connectSpare(ctx, c, sa, dst)
	}
	fd, err := n.socket(unix.AF_INET)
	if err != nil {
		return nil, err
	}
	return connectFD(ctx, fd, sa, addr)
}

// socket makes a non-blocking TCP socket with SO_MARK in the namespace.
func (n *NetNS) socket(family int) (int, error) {
	fd := -1
	if err := n.Do(func() error {
		var err error
		if fd, err = unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0); err != nil {
			return err
		}
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, ProxyMark)
	}); err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		return -1, fmt.Errorf("inpod: socket in pod netns: %w", err)
	}
	return fd, nil
}

// takeSpare returns a spare socket, if one is ready, and has the spares refilled.
func (n *NetNS) takeSpare() *net.TCPConn {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed || n.noSpares {
		return nil
	}
	n.useSpare = true
	var c *net.TCPConn
	if len(n.spares) > 0 {
		c = n.spares[len(n.spares)-1]
		n.spares = n.spares[:len(n.spares)-1]
	}
	// Back to spareCount after every take: an idle namespace always holds exactly that
	// many (a steady number of fds). The refill waits a moment: run at once, it takes the
	// CPU that the connection being set up needs next (the app accepting it, the answer
	// on its way back), and a burst of dials is refilled in one visit.
	if !n.filling && len(n.spares) < spareCount {
		n.filling = true
		time.AfterFunc(refillDelay, n.refill)
	}
	return c
}

// refillDelay is how long after taking a spare the refill starts: longer than a new
// connection's first round trip through the node (a few hundred microseconds).
const refillDelay = time.Millisecond

// refill makes spare sockets until there are spareCount (dials may take some meanwhile),
// each batch in one visit to the namespace.
func (n *NetNS) refill() {
	for {
		n.mu.Lock()
		want := spareCount - len(n.spares)
		if want <= 0 || n.closed {
			n.filling = false
			n.mu.Unlock()
			return
		}
		n.mu.Unlock()
		made, err := n.makeSpares(want)
		n.mu.Lock()
		if n.closed {
			n.filling = false
			n.mu.Unlock()
			for _, c := range made {
				c.Close()
			}
			return
		}
		n.spares = append(n.spares, made...)
		if err != nil { // dials fall back to a socket of their own; the next one retries
			n.filling = false
			n.mu.Unlock()
			return
		}
		n.mu.Unlock()
	}
}

// makeSpares makes count unconnected, marked IPv4 TCP sockets in the namespace, wrapped
// for the runtime's poller.
func (n *NetNS) makeSpares(count int) ([]*net.TCPConn, error) {
	var fds []int
	err := n.Do(func() error {
		for range count {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, ProxyMark); err != nil {
				unix.Close(fd)
				return err
			}
			fds = append(fds, fd)
		}
		return nil
	})
	var made []*net.TCPConn
	for _, fd := range fds {
		f := os.NewFile(uintptr(fd), "tcp-spare")
		c, ferr := net.FileConn(f)
		f.Close()
		if ferr != nil {
			err = errors.Join(err, ferr)
			continue
		}
		made = append(made, c.(*net.TCPConn))
	}
	return made, err
}

// connectSpare connects a spare socket to dst.
func connectSpare(ctx context.Context, c *net.TCPConn, sa unix.Sockaddr, dst netip.AddrPort) (net.Conn, error) {
	if err := connectWithin(ctx, c, sa); err != nil {
		c.Close()
		return nil, err
	}
	_ = c.SetWriteDeadline(time.Time{})
	return &spareConn{TCPConn: c, remote: net.TCPAddrFromAddrPort(dst)}, nil
}

// spareConn is a connected spare socket. net.FileConn fixed a socket's addresses when it
// wrapped it, unconnected: these are the right ones.
type spareConn struct {
	*net.TCPConn
	remote    net.Addr
	localOnce sync.Once
	local     net.Addr
}

func (c *spareConn) RemoteAddr() net.Addr { return c.remote }

func (c *spareConn) LocalAddr() net.Addr {
	c.localOnce.Do(func() {
		c.local = c.TCPConn.LocalAddr()
		rc, err := c.SyscallConn()
		if err != nil {
			return
		}
		_ = rc.Control(func(fd uintptr) {
			if sa, err := unix.Getsockname(int(fd)); err == nil {
				if in4, ok := sa.(*unix.SockaddrInet4); ok {
					c.local = net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.AddrFrom4(in4.Addr), uint16(in4.Port)))
				}
			}
		})
	})
	return c.local
}

// PlainTCP is the TCP connection itself, for copies that splice between kernel sockets.
func (c *spareConn) PlainTCP() *net.TCPConn { return c.TCPConn }

// connectFD connects a non-blocking socket, waiting for completion in the poller, and
// returns it as a net.Conn. It takes ownership of fd.
func connectFD(ctx context.Context, fd int, sa unix.Sockaddr, addr string) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), "tcp:"+addr) // non-blocking: registered with the poller
	defer f.Close()                           // net.FileConn keeps its own duplicate
	if err := connectWithin(ctx, f, sa); err != nil {
		return nil, err
	}
	return net.FileConn(f)
}

// pollerSocket is a socket registered with the runtime's poller: an *os.File or a
// *net.TCPConn.
type pollerSocket interface {
	SyscallConn() (syscall.RawConn, error)
	SetWriteDeadline(t time.Time) error
}

// connectWithin connects s, waiting in the poller until ctx is done at the latest (its
// deadline, or its cancellation, becomes s's write deadline).
func connectWithin(ctx context.Context, s pollerSocket, sa unix.Sockaddr) error {
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetWriteDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = s.SetWriteDeadline(time.Unix(1, 0)) })
	defer stop()
	rc, err := s.SyscallConn()
	if err != nil {
		return err
	}
	return connectRaw(ctx, rc, sa)
}

// connectRaw connects the socket behind rc, waiting in the poller (write deadlines bound
// the wait; connectWithin ties them to ctx).
func connectRaw(ctx context.Context, rc syscall.RawConn, sa unix.Sockaddr) error {
	started := false
	var connErr error
	werr := rc.Write(func(fd uintptr) bool {
		if !started {
			started = true
			connErr = unix.Connect(int(fd), sa)
			if connErr != unix.EINPROGRESS {
				return true
			}
			// A connect within the pod (the inbound upstream) usually completes
			// during the connect call itself: check before parking in the poller,
			// which would cost a wake-up.
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
			if n, _ := unix.Poll(pfd, 0); n == 0 {
				return false // wait for writability
			}
		}
		soErr, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			connErr = err
		} else if soErr != 0 {
			connErr = unix.Errno(soErr)
		} else {
			connErr = nil
		}
		return true
	})
	if werr != nil {
		if ctx.Err() != nil {
			werr = ctx.Err()
		}
		return &net.OpError{Op: "dial", Net: "tcp", Err: werr}
	}
	if connErr != nil {
		return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", connErr)}
	}
	return nil
}

// DialTCP dials addr from inside the namespace with SO_MARK ProxyMark.
func (n *NetNS) DialTCP(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
	return n.Dial(ctx, "tcp", addr.String())
}

// OriginalDst is the package function OriginalDst (Network interface).
func (n *NetNS) OriginalDst(c net.Conn) (netip.AddrPort, bool, error) { return OriginalDst(c) }

func setsockopt(c syscall.RawConn, level, opt, value int) error {
	var serr error
	if err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), level, opt, value) }); err != nil {
		return err
	}
	return serr
}

// OriginalDst returns the destination a REDIRECTed connection was addressed to
// (SO_ORIGINAL_DST), or ok=false when the connection was not redirected.
func OriginalDst(c net.Conn) (addr netip.AddrPort, ok bool, err error) {
	tc, isTCP := c.(*net.TCPConn)
	if !isTCP {
		return netip.AddrPort{}, false, fmt.Errorf("original destination: %T is not a TCP connection", c)
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, false, err
	}
	local := tc.LocalAddr().(*net.TCPAddr).AddrPort()
	var serr error
	cerr := rc.Control(func(fd uintptr) {
		if local.Addr().Unmap().Is4() {
			addr, serr = originalDst4(int(fd))
		} else {
			addr, serr = originalDst6(int(fd))
		}
	})
	if cerr != nil {
		return netip.AddrPort{}, false, cerr
	}
	if errors.Is(serr, unix.ENOENT) {
		return netip.AddrPort{}, false, nil // no NAT entry: a direct connection
	}
	if serr != nil {
		return netip.AddrPort{}, false, fmt.Errorf("SO_ORIGINAL_DST: %w", serr)
	}
	return addr, true, nil
}

func originalDst4(fd int) (netip.AddrPort, error) {
	var sa unix.RawSockaddrInet4
	size := uint32(unsafe.Sizeof(sa))
	if err := getsockopt(fd, unix.SOL_IP, unix.SO_ORIGINAL_DST, unsafe.Pointer(&sa), &size); err != nil {
		return netip.AddrPort{}, err
	}
	port := sa.Port>>8 | sa.Port<<8
	return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), port), nil
}

func originalDst6(fd int) (netip.AddrPort, error) {
	var sa unix.RawSockaddrInet6
	size := uint32(unsafe.Sizeof(sa))
	if err := getsockopt(fd, unix.SOL_IPV6, ip6tSoOriginalDst, unsafe.Pointer(&sa), &size); err != nil {
		return netip.AddrPort{}, err
	}
	port := sa.Port>>8 | sa.Port<<8
	return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), port), nil
}

func getsockopt(fd, level, opt int, val unsafe.Pointer, size *uint32) error {
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(val), uintptr(unsafe.Pointer(size)), 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// ip6tSoOriginalDst is IP6T_SO_ORIGINAL_DST from linux/netfilter_ipv6/ip6_tables.h.
const ip6tSoOriginalDst = 80

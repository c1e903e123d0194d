package unixsock_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ambientmesh/ambient-operator/internal/testwait"
	"github.com/ambientmesh/ambient-operator/internal/unixsock"
	"github.com/ambientmesh/ambient-operator/internal/unixsock/unixsocktest"
)

const nobody = 65534

var networks = []string{"unix", "unixpacket"}

// watchDir reports the inotify events of dir (create, move in, attribute change) by name.
func watchDir(t *testing.T, dir string) func() map[string][]uint32 {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE|unix.IN_MOVED_TO|unix.IN_ATTRIB); err != nil {
		t.Fatal(err)
	}
	return func() map[string][]uint32 {
		events := map[string][]uint32{}
		buf := make([]byte, 64<<10)
		n, err := unix.Read(fd, buf)
		if err != nil {
			t.Fatalf("reading inotify events: %v", err)
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
			events[string(bytes.TrimRight(name, "\x00"))] = append(events[string(bytes.TrimRight(name, "\x00"))], ev.Mask)
			off += unix.SizeofInotifyEvent + int(ev.Len)
		}
		return events
	}
}

// The socket path appears once, by rename, already 0600 and listening: never created
// there with the default mode and fixed afterwards.
func TestListenSocketIsPrivateFromTheStart(t *testing.T) {
	for _, network := range networks {
		t.Run(network, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "agent.sock")
			events := watchDir(t, dir)
			ln, err := unixsock.Listen(network, path)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			if got := events()["agent.sock"]; len(got) != 1 || got[0] != unix.IN_MOVED_TO {
				t.Fatalf("inotify events on the socket path: %#x, want only IN_MOVED_TO (%#x)", got, unix.IN_MOVED_TO)
			}
			var st unix.Stat_t
			if err := unix.Stat(path, &st); err != nil {
				t.Fatal(err)
			}
			if st.Mode&unix.S_IFMT != unix.S_IFSOCK || st.Mode&0o7777 != unixsock.Mode || int(st.Uid) != os.Geteuid() {
				t.Fatalf("socket file mode %o owner %d, want a socket of mode 0600 owned by uid %d", st.Mode, st.Uid, os.Geteuid())
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 1 {
				t.Fatalf("directory holds %d entries, want only the socket (no temporary name left)", len(entries))
			}
		})
	}
}

// A stale socket file (its server gone) or a live predecessor's is replaced in one step,
// and new connections reach the new listener.
func TestListenReplacesTheSocketAtPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "zt.sock")
	old, err := unixsock.Listen("unixpacket", path)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	ln, err := unixsock.Listen("unixpacket", path)
	if err != nil {
		t.Fatalf("listening over a predecessor's socket: %v", err)
	}
	defer ln.Close()
	old.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("closing the predecessor's listener removed its successor's socket: %v", err)
	}
	c, err := net.Dial("unixpacket", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = ln.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := ln.Accept(); err != nil {
		t.Fatalf("the new listener did not get the connection: %v", err)
	}
}

func TestListenRefusesWhatCannotWork(t *testing.T) {
	dir := t.TempDir()
	for name, tc := range map[string]struct {
		network, path, want string
	}{
		"tcp":                  {"tcp", filepath.Join(dir, "a.sock"), "not unix or unixpacket"},
		"datagram":             {"unixgram", filepath.Join(dir, "a.sock"), "not unix or unixpacket"},
		"path too long":        {"unix", "/" + strings.Repeat("a", 107), "longer than 107"},
		"no room for tmp name": {"unix", "/tmp/" + strings.Repeat("a", 100), "no room for a temporary name"},
		"missing directory":    {"unix", filepath.Join(dir, "missing", "a.sock"), "no such file"},
	} {
		t.Run(name, func(t *testing.T) {
			ln, err := unixsock.Listen(tc.network, tc.path)
			if err == nil {
				ln.Close()
				t.Fatal("Listen succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want one saying %q", err, tc.want)
			}
		})
	}
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: connects as another user to a root-owned socket")
	}
}

// serve accepts through a unixsock.Listener and records what it accepted and refused.
type served struct {
	mu       sync.Mutex
	accepted []net.Conn
	refused  []error
}

func serve(t *testing.T, network string) (string, *served) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s.sock")
	ul, err := unixsock.Listen(network, path)
	if err != nil {
		t.Fatal(err)
	}
	s := &served{}
	ln := &unixsock.Listener{UnixListener: ul, Refused: func(err error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.refused = append(s.refused, err)
	}}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.accepted = append(s.accepted, c)
			s.mu.Unlock()
			_, _ = c.Write([]byte("hello"))
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, c := range s.accepted {
			c.Close()
		}
	})
	return path, s
}

func (s *served) counts() (accepted, refused int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.accepted), len(s.refused)
}

// readGreeting reads what the server says first: "hello" when it accepted the connection,
// an error (EOF or reset) when it refused it.
func readGreeting(c net.Conn) (string, error) {
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 16)
	n, err := c.Read(buf)
	return string(buf[:n]), err
}

func TestOnlyRootPeersAreAccepted(t *testing.T) {
	requireRoot(t)
	for _, network := range networks {
		t.Run(network, func(t *testing.T) {
			path, s := serve(t, network)

			// An ordinary process of another user is stopped by the file mode.
			if c, err := unixsocktest.DialAs(nobody, network, path); !errors.Is(err, unix.EACCES) {
				if c != nil {
					c.Close()
				}
				t.Fatalf("uid %d connecting to the 0600 socket: %v, want permission denied", nobody, err)
			}

			// One that gets past the mode is refused by the peer check.
			c, err := unixsocktest.DialAsPastMode(nobody, network, path)
			if err != nil {
				t.Fatalf("connecting past the file mode: %v", err)
			}
			defer c.Close()
			if got, err := readGreeting(c); err == nil {
				t.Fatalf("a uid %d peer was served (read %q)", nobody, got)
			} else if !errors.Is(err, io.EOF) && !errors.Is(err, unix.ECONNRESET) {
				t.Fatalf("a uid %d peer: read %v, want the connection closed", nobody, err)
			}
			testwait.For(t, "the refusal reported", 5*time.Second, func() bool { _, r := s.counts(); return r == 1 })
			s.mu.Lock()
			var perr *unixsock.PeerError
			if !errors.As(s.refused[0], &perr) || perr.UID != nobody || !strings.Contains(perr.Error(), "only root may connect") {
				t.Errorf("refusal %v, want a PeerError naming uid %d", s.refused[0], nobody)
			}
			s.mu.Unlock()

			// Root is served.
			rc, err := net.Dial(network, path)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			if got, err := readGreeting(rc); err != nil || got != "hello" {
				t.Fatalf("root peer: read %q, %v", got, err)
			}
			if a, _ := s.counts(); a != 1 {
				t.Fatalf("accepted %d connections, want only root's", a)
			}
		})
	}
}

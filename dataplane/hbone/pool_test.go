package hbone

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ambientmesh/ambient-operator/internal/spiffe"
	"github.com/ambientmesh/ambient-operator/internal/testwait"
)

func Test1000ConcurrentStreamsShareFewConnections(t *testing.T) {
	const streams, perConn = 1000, 100
	e := newEnv(t, envOpts{server: func(c *ServerConfig) { c.MaxConcurrentStreams = perConn }})
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		errs    []error
		opened  sync.WaitGroup // all streams open at once before any closes
		release = make(chan struct{})
	)
	opened.Add(streams)
	for i := 0; i < streams; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			c, err := e.pool.Dial(ctx, e.dialReq())
			opened.Done()
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				return
			}
			defer c.Close()
			msg := fmt.Sprintf("stream %d", i)
			_, _ = io.WriteString(c, msg) // a failed write shows in the echo check
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
				mu.Lock()
				errs = append(errs, fmt.Errorf("stream %d echo %q: %v", i, got, err))
				mu.Unlock()
			}
			<-release
		}(i)
	}
	opened.Wait()
	stats := e.pool.Stats()
	close(release)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d of %d streams failed, first: %v", len(errs), streams, errs[0])
	}
	if stats.Streams != streams {
		t.Errorf("pool counted %d active streams, want %d", stats.Streams, streams)
	}
	if n := len(stats.Conns); n > streams/perConn {
		t.Errorf("pool used %d connections for %d streams at %d per connection, want at most %d", n, streams, perConn, streams/perConn)
	}
	for _, c := range stats.Conns {
		if c.Streams > perConn {
			t.Errorf("connection %s carries %d streams, over the server's limit %d", c.LocalAddr, c.Streams, perConn)
		}
	}
}

func TestPoolOpensAnotherConnectionWhenFull(t *testing.T) {
	e := newEnv(t, envOpts{server: func(c *ServerConfig) { c.MaxConcurrentStreams = 2 }})
	a, b := e.dial(t), e.dial(t)
	if n := len(e.pool.Stats().Conns); n != 1 {
		t.Fatalf("2 streams use %d connections, want 1", n)
	}
	c := e.dial(t)
	if n := len(e.pool.Stats().Conns); n != 2 {
		t.Fatalf("3 streams with a limit of 2 use %d connections, want 2", n)
	}
	if a.LocalAddr().String() != b.LocalAddr().String() || c.LocalAddr().String() == a.LocalAddr().String() {
		t.Errorf("local addrs a=%s b=%s c=%s: want a and b to share, c apart", a.LocalAddr(), b.LocalAddr(), c.LocalAddr())
	}
	for _, x := range []*Conn{a, b, c} {
		echoCheck(t, x, "hi")
	}
	// A freed slot is reused rather than opening a third connection.
	a.Close()
	testwait.For(t, "a's stream to end", 10*time.Second, func() bool { return e.pool.Stats().Streams == 2 })
	d := e.dial(t)
	defer d.Close()
	if n := len(e.pool.Stats().Conns); n != 2 {
		t.Fatalf("after freeing a slot: %d connections, want 2", n)
	}
	b.Close()
	c.Close()
}

func TestPoolKeysSeparateIdentities(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.certs.Put(otherID, e.ca.Issue(t, otherID))
	a := e.dial(t)
	defer a.Close()
	d := e.dialReq()
	d.Source = otherID
	b, err := e.pool.Dial(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	stats := e.pool.Stats()
	if len(stats.Conns) != 2 {
		t.Fatalf("two source identities share %d connections, want 2", len(stats.Conns))
	}
	if a.LocalAddr().String() == b.LocalAddr().String() {
		t.Fatal("streams of different source identities share a connection")
	}
}

func TestIdleConnectionsExpire(t *testing.T) {
	e := newEnv(t, envOpts{pool: func(c *PoolConfig) { c.IdleTimeout = 200 * time.Millisecond }})
	c := e.dial(t)
	echoCheck(t, c, "x")
	time.Sleep(400 * time.Millisecond) // twice the idle timeout, with the stream open
	if n := len(e.pool.Stats().Conns); n != 1 {
		t.Fatalf("a connection with an open stream was expired (%d conns)", n)
	}
	c.Close()
	testwait.For(t, "idle connection to close", 10*time.Second, func() bool { return len(e.pool.Stats().Conns) == 0 })
	testwait.For(t, "server to see the connection gone", 10*time.Second, func() bool {
		e.srv.mu.Lock()
		defer e.srv.mu.Unlock()
		return len(e.srv.conns) == 0
	})
	// The pool dials afresh afterwards.
	c2 := e.dial(t)
	defer c2.Close()
	echoCheck(t, c2, "again")
}

func TestKeepalivePingsDetectDeadServer(t *testing.T) {
	// A server that completes TLS and HTTP/2 setup and then stops reading
	// (a hung peer): the pool's PINGs go unanswered and the connection is
	// dropped instead of hanging forever.
	e := newEnv(t, envOpts{pool: func(c *PoolConfig) {
		c.PingInterval = 100 * time.Millisecond
		c.PingTimeout = 200 * time.Millisecond
	}})
	var frozen sync.Map
	e.pool.cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		fc := &freezableConn{Conn: c}
		frozen.Store(fc, true)
		return fc, nil
	}
	c := e.dial(t)
	defer c.Close()
	echoCheck(t, c, "alive")
	frozen.Range(func(k, _ any) bool { k.(*freezableConn).freeze(); return true })
	testwait.For(t, "the silent connection to be dropped", 10*time.Second, func() bool { return len(e.pool.Stats().Conns) == 0 })
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("stream on the dead connection: read err %v, want a connection error", err)
	}
}

// freezableConn stops delivering received bytes once frozen, like a peer
// that went silent.
type freezableConn struct {
	net.Conn
	mu     sync.Mutex
	frozen chan struct{}
}

func (c *freezableConn) freeze() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.frozen == nil {
		c.frozen = make(chan struct{})
	}
}

func (c *freezableConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	f := c.frozen
	c.mu.Unlock()
	if f != nil {
		<-f // never closed: swallow everything from now on
	}
	return n, err
}

func (c *freezableConn) Close() error {
	c.mu.Lock()
	if c.frozen != nil {
		select {
		case <-c.frozen:
		default:
			close(c.frozen)
		}
	}
	c.mu.Unlock()
	return c.Conn.Close()
}

func TestCertificateRotationKeepsOpenStreams(t *testing.T) {
	streams := make(chan *Stream, 4)
	e := newEnv(t, envOpts{
		server:  func(c *ServerConfig) { c.MaxConcurrentStreams = 1 }, // each stream needs its own connection
		handler: streamRecorder(streams),
	})
	old := e.dial(t)
	defer old.Close()
	echoCheck(t, old, "before rotation")
	oldServerSerial := old.ConnectionState().PeerCertificates[0].SerialNumber
	oldClientSerial := (<-streams).req.TLS.PeerCertificates[0].SerialNumber

	newServer, newClient := e.ca.Issue(t, serverID), e.ca.Issue(t, clientID)
	e.certs.Put(serverID, newServer)
	e.certs.Put(clientID, newClient)

	fresh := e.dial(t)
	defer fresh.Close()
	echoCheck(t, fresh, "after rotation")
	if got := fresh.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(newServer.Leaf.SerialNumber) != 0 {
		t.Errorf("new connection saw server serial %s, want the rotated %s (old %s)", got, newServer.Leaf.SerialNumber, oldServerSerial)
	}
	if got := (<-streams).req.TLS.PeerCertificates[0].SerialNumber; got.Cmp(newClient.Leaf.SerialNumber) != 0 {
		t.Errorf("server saw client serial %s, want the rotated %s (old %s)", got, newClient.Leaf.SerialNumber, oldClientSerial)
	}
	// The stream opened before the rotation still works.
	echoCheck(t, old, "old stream still up")
	if got := old.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(oldServerSerial) != 0 {
		t.Errorf("old connection changed certificate")
	}
}

func TestReadDeadlineKeepsData(t *testing.T) {
	e := newEnv(t, envOpts{})
	c := e.dial(t)
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	buf := make([]byte, 16)
	if _, err := c.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read with nothing to read: %v, want deadline exceeded", err)
	}
	// Data that arrives after the timeout is not lost.
	_ = c.SetReadDeadline(time.Time{})
	echoCheck(t, c, "after a timeout")
	// A deadline set while a Read is blocked interrupts it.
	errc := make(chan error, 1)
	go func() { _, err := c.Read(buf); errc <- err }()
	testwait.For(t, "the Read to start", 5*time.Second, func() bool { return reading(c.st) })
	_ = c.SetReadDeadline(time.Now())
	select {
	case err := <-errc:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("interrupted Read: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("SetReadDeadline did not interrupt a blocked Read")
	}
}

func TestDialContextCancel(t *testing.T) {
	// The handler never answers: Dial must give up with the context.
	block := make(chan struct{})
	defer close(block)
	e := newEnv(t, envOpts{handler: HandlerFunc(func(ctx context.Context, _ *Request) error {
		select {
		case <-block:
		case <-ctx.Done():
		}
		return errors.New("gave up")
	})})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := e.pool.Dial(ctx, e.dialReq())
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Dial: %v, want deadline exceeded", err)
	}
}

func TestDialRequestValidation(t *testing.T) {
	e := newEnv(t, envOpts{})
	for name, mutate := range map[string]func(*DialRequest){
		"no source": func(d *DialRequest) { d.Source = spiffe.ID{} },
		"no peer":   func(d *DialRequest) { d.Peer = spiffe.ID{} },
		"no target": func(d *DialRequest) { d.Target = netip.AddrPort{} },
		"port 0":    func(d *DialRequest) { d.Target = netip.AddrPortFrom(d.Target.Addr(), 0) },
	} {
		d := e.dialReq()
		mutate(&d)
		if _, err := e.pool.Dial(context.Background(), d); err == nil || !strings.Contains(err.Error(), "DialRequest") {
			t.Errorf("%s: %v, want a DialRequest error", name, err)
		}
	}
}

func TestNoGoroutineOrFDLeakAfter2000Streams(t *testing.T) {
	if testing.Short() {
		t.Skip("long test")
	}
	e := newEnv(t, envOpts{})
	warm := e.dial(t) // the pooled connection exists in the baseline
	echoCheck(t, warm, "warm")
	warm.Close()
	testwait.For(t, "warm-up stream to end", 10*time.Second, func() bool { return e.pool.Stats().Streams == 0 })
	// The warm-up stream's goroutines (handler, echo) end a moment later: the baseline is
	// taken once the count stops falling from one poll to the next.
	baseG, baseFD := math.MaxInt, 0 // the first poll only takes a sample
	err := testwait.Until(10*time.Second, func() error {
		g := runtime.NumGoroutine()
		falling := g < baseG
		baseG, baseFD = g, openFDs(t)
		if falling {
			return errors.New("goroutines still ending")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	const total, workers = 2000, 40
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < total/workers; i++ {
				c, err := e.pool.Dial(context.Background(), e.dialReq())
				if err != nil {
					errc <- err
					return
				}
				msg := fmt.Sprintf("%d/%d", w, i)
				_, _ = io.WriteString(c, msg) // a failed write shows in the echo check
				got := make([]byte, len(msg))
				_, err = io.ReadFull(c, got)
				if i%2 == 0 {
					_ = c.CloseWrite() // half the streams end cleanly, half are reset
				}
				c.Close()
				if err != nil {
					errc <- err
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	if n := len(e.pool.Stats().Conns); n != 1 {
		t.Errorf("%d pooled connections after the run, want 1", n)
	}
	// Closed streams end asynchronously: what is still above the baseline after 10s is
	// reported below (the error only says that some is).
	var g, fd int
	_ = testwait.Until(10*time.Second, func() error {
		// Go's splice (io.Copy between TCP connections, as the echo server does)
		// caches its pipes in a sync.Pool that only a GC empties: collect, so
		// that those pipes are not counted as leaked descriptors.
		runtime.GC()
		if g, fd = runtime.NumGoroutine(), openFDs(t); g > baseG || fd > baseFD {
			return errors.New("above the baseline")
		}
		return nil
	})
	if g > baseG {
		buf := make([]byte, 1<<20)
		t.Errorf("goroutines: %d after, %d before\n%s", g, baseG, buf[:runtime.Stack(buf, true)])
	}
	if fd > baseFD {
		t.Errorf("open fds: %d after, %d before", fd, baseFD)
	}
}

func openFDs(t testing.TB) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func TestReadFromKeepsOrderAndCounts(t *testing.T) {
	e := newEnv(t, envOpts{})
	c := e.dial(t)
	defer c.Close()
	big := strings.Repeat("0123456789", 100_000) // 1 MB through the direct path
	n, err := io.Copy(c, strings.NewReader(big)) // uses Conn.ReadFrom
	if err != nil || n != int64(len(big)) {
		t.Fatalf("io.Copy = %d, %v", n, err)
	}
	if _, err := io.WriteString(c, "tail"); err != nil { // then the pipe again
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != big+"tail" {
		t.Fatalf("echo of %d bytes differs (got %d bytes)", len(big)+4, len(got))
	}
	if _, err := c.ReadFrom(strings.NewReader("x")); err == nil {
		t.Fatal("ReadFrom after CloseWrite succeeded")
	}
}

func TestJoinCountsBothDirections(t *testing.T) {
	e := newEnv(t, envOpts{})
	c := e.dial(t)
	app, proxy := net.Pipe() // the "application" side of an outbound proxy
	var stats JoinStats
	done := make(chan error, 1)
	go func() { done <- Join(proxy, c, &stats) }()
	if _, err := io.WriteString(app, "ping"); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(app, got); err != nil || string(got) != "ping" {
		t.Fatalf("echo %q, %v", got, err)
	}
	app.Close()
	if err := <-done; err != nil {
		t.Fatalf("Join: %v", err)
	}
	if stats.AToB.Load() != 4 || stats.BToA.Load() != 4 {
		t.Fatalf("stats AToB=%d BToA=%d, want 4 and 4", stats.AToB.Load(), stats.BToA.Load())
	}
}

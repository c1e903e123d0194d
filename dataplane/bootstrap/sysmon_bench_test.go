package bootstrap

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// echoServerEnv makes this test binary an echo server instead of running the tests:
// BenchmarkSysmonAwake starts two, with and without SysmonAwake.
const echoServerEnv = "BOOTSTRAP_BENCH_ECHO_SERVER"

func TestMain(m *testing.M) {
	if os.Getenv(echoServerEnv) != "" {
		serveEcho()
		return
	}
	os.Exit(m.Run())
}

// serveEcho prints the address of a loopback listener whose connections it echoes, then
// answers each line on stdin with the CPU time (ns) this process has used; it returns at
// stdin's EOF.
func serveEcho() {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(l.Addr())
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	for in := bufio.NewScanner(os.Stdin); in.Scan(); {
		fmt.Println(int64(cpuTime()))
	}
}

// cpuTime is the CPU time (user + system) of this process, all its threads.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// echoProcess is an echo server started by startEcho.
type echoProcess struct {
	addr  string
	stdin io.WriteCloser
	out   *bufio.Scanner
}

// startEcho runs this test binary as an echo server with env; it stops when the
// benchmark ends.
func startEcho(b *testing.B, env []string) *echoProcess {
	cmd := exec.Command(os.Args[0])
	cmd.Env = slices.Concat(env, []string{echoServerEnv + "=1"})
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close() // the server returns at EOF
		_ = cmd.Wait()
	})
	p := &echoProcess{stdin: stdin, out: bufio.NewScanner(stdout)}
	if !p.out.Scan() {
		b.Fatalf("echo server: no address (%v)", p.out.Err())
	}
	p.addr = p.out.Text()
	return p
}

// cpu asks the server for the CPU time it has used.
func (p *echoProcess) cpu(b *testing.B) time.Duration {
	if _, err := io.WriteString(p.stdin, "cpu\n"); err != nil {
		b.Fatal(err)
	}
	if !p.out.Scan() {
		b.Fatalf("echo server: no CPU time (%v)", p.out.Err())
	}
	ns, err := strconv.ParseInt(p.out.Text(), 10, 64)
	if err != nil {
		b.Fatal(err)
	}
	return time.Duration(ns)
}

// newConnEcho connects to the server, has 64 bytes echoed and closes; it returns the time
// from the connect to the echo.
func (p *echoProcess) newConnEcho(b *testing.B) time.Duration {
	msg := make([]byte, 64)
	start := time.Now()
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(msg); err != nil {
		b.Fatal(err)
	}
	if _, err := io.ReadFull(c, msg); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

// BenchmarkSysmonAwake measures a performance device, the Go runtime's monitor thread kept
// out of deep sleep (SysmonAwake; AMBIENT_PERF_SYSMON, docs/performance.md), under light
// load: two echo servers, this test binary re-executed with and without the setting (and
// GOMAXPROCS as ztunnel sets it by default, half the CPUs), take new connections
// alternately, each after a pause in which both are idle, as a node proxy is between
// bursts. It prints each server's p50 latency (connect to a 64-byte echo) and its CPU time
// per connection, the idle pauses included. It ignores b.N; run it once:
//
//	go test ./dataplane/bootstrap -run '^$' -bench '^BenchmarkSysmonAwake$' -benchtime 1x
func BenchmarkSysmonAwake(b *testing.B) {
	var base []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GODEBUG=") && !strings.HasPrefix(kv, "GOMAXPROCS=") {
			base = append(base, kv)
		}
	}
	base = append(base, "GOMAXPROCS="+strconv.Itoa(max(1, (runtime.NumCPU()+1)/2)))
	awakeEnv, _ := WithSysmonAwake(base)
	modes := []string{"on", "off"}
	servers := []*echoProcess{startEcho(b, awakeEnv), startEcho(b, base)}
	for _, s := range servers {
		s.newConnEcho(b) // warm up
	}
	const samples = 1000
	// The pause between connections: long enough for the runtime of both servers to find
	// every P idle (sysmon then deep-sleeps, unless kept awake).
	const pause = 2 * time.Millisecond
	lat := make([][]time.Duration, len(servers))
	cpu0 := []time.Duration{servers[0].cpu(b), servers[1].cpu(b)}
	for i := range samples * len(servers) {
		time.Sleep(pause) // pacing: the idle time is what is measured, not a wait for something
		s := i % len(servers)
		lat[s] = append(lat[s], servers[s].newConnEcho(b))
	}
	for s, mode := range modes {
		sort.Slice(lat[s], func(i, j int) bool { return lat[s][i] < lat[s][j] })
		fmt.Printf("sysmon_new_conn_p50_us_%s: %.0f\n", mode, float64(lat[s][samples/2])/float64(time.Microsecond))
	}
	for s, mode := range modes {
		perConn := (servers[s].cpu(b) - cpu0[s]) / samples
		fmt.Printf("sysmon_cpu_us_per_conn_%s: %.0f\n", mode, float64(perConn)/float64(time.Microsecond))
	}
}

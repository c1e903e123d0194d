package hbone

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/ambientmesh/ambient-operator/internal/workers"
)

// Benchmarks of one tunnel (client Conn → HBONE server → upstream) against
// plain loopback TCP, on the same machine in the same run.
//
//	go test ./dataplane/hbone -run '^$' -bench . -benchtime 3s
//
// Throughput benchmarks report MB/s (SetBytes) and ratio_vs_direct, the
// tunnel's MB/s over a direct TCP stream's measured just before.

const benchChunk = 256 << 10

// startSink runs a TCP server that reads and discards everything with a large
// buffer, then closes.
func startSink(tb testing.TB) netip.AddrPort {
	return startUpstream(tb, func(c *net.TCPConn) {
		buf := make([]byte, benchChunk)
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
		}
	})
}

// startSource runs a TCP server that writes chunks until the peer goes away.
func startSource(tb testing.TB) netip.AddrPort {
	return startUpstream(tb, func(c *net.TCPConn) {
		buf := make([]byte, benchChunk)
		for {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	})
}

// uploadMBps writes total bytes to c in benchChunk writes and returns MB/s.
func uploadMBps(c net.Conn, total int) float64 {
	buf := make([]byte, benchChunk)
	start := time.Now()
	for sent := 0; sent < total; sent += len(buf) {
		if _, err := c.Write(buf); err != nil {
			panic(err)
		}
	}
	return float64(total) / time.Since(start).Seconds() / 1e6
}

func downloadMBps(c net.Conn, total int) float64 {
	buf := make([]byte, benchChunk)
	start := time.Now()
	if _, err := io.ReadFull(c, make([]byte, 0)); err != nil {
		panic(err)
	}
	for got := 0; got < total; {
		n, err := c.Read(buf)
		if err != nil {
			panic(err)
		}
		got += n
	}
	return float64(total) / time.Since(start).Seconds() / 1e6
}

// cpuTime is the CPU time (user+system) this process has used: on a
// machine whose cores are shared, CPU per byte is the figure that decides
// throughput, and it does not depend on what else runs.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru) // cannot fail for RUSAGE_SELF
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// directMBps measures plain loopback TCP for the same transfer, returning
// MB/s and CPU ns per byte.
func directMBps(b *testing.B, upload bool) (float64, float64) {
	var addr netip.AddrPort
	if upload {
		addr = startSink(b)
	} else {
		addr = startSource(b)
	}
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	const total = 512 << 20
	cpu0 := cpuTime()
	var mbps float64
	if upload {
		mbps = uploadMBps(c, total)
	} else {
		mbps = downloadMBps(c, total)
	}
	return mbps, float64(cpuTime()-cpu0) / total
}

func benchThroughput(b *testing.B, upload bool) {
	e := newEnv(b, envOpts{})
	direct, directCPU := directMBps(b, upload)
	d := e.dialReq()
	if upload {
		d.Target = startSink(b)
	} else {
		d.Target = startSource(b)
	}
	c, err := e.pool.Dial(context.Background(), d)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, benchChunk)
	b.SetBytes(benchChunk)
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	if upload {
		for i := 0; i < b.N; i++ {
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
	} else {
		for i := 0; i < b.N; i++ {
			if _, err := io.ReadFull(c, buf); err != nil {
				b.Fatal(err)
			}
		}
	}
	mbps := float64(b.N) * benchChunk / time.Since(start).Seconds() / 1e6
	cpu := float64(cpuTime()-cpu0) / (float64(b.N) * benchChunk)
	b.StopTimer()
	b.ReportMetric(direct, "direct_MB/s")
	b.ReportMetric(mbps/direct, "ratio_vs_direct")
	b.ReportMetric(cpu, "cpu_ns/B")
	b.ReportMetric(directCPU, "direct_cpu_ns/B")
	b.ReportMetric(directCPU/cpu, "cpu_efficiency_vs_direct")
}

func BenchmarkThroughputUpload(b *testing.B)   { benchThroughput(b, true) }
func BenchmarkThroughputDownload(b *testing.B) { benchThroughput(b, false) }

// BenchmarkRoundTrip measures a 1-byte request/response on an open tunnel
// (ns/op) and reports the direct TCP round trip and the added p50.
func BenchmarkRoundTrip(b *testing.B) {
	e := newEnv(b, envOpts{})
	direct, err := net.Dial("tcp", e.upstream.String())
	if err != nil {
		b.Fatal(err)
	}
	defer direct.Close()
	directP50 := pingPongP50(b, direct, 2000)
	c := e.dial(b)
	defer c.Close()
	pingPongP50(b, c, 200) // warm up
	b.ResetTimer()
	lat := make([]time.Duration, b.N)
	one := []byte{1}
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if _, err := c.Write(one); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, one); err != nil {
			b.Fatal(err)
		}
		lat[i] = time.Since(start)
	}
	b.StopTimer()
	p50 := percentile(lat, 50)
	b.ReportMetric(float64(directP50.Microseconds()), "direct_p50_us")
	b.ReportMetric(float64(p50.Microseconds()), "p50_us")
	b.ReportMetric(float64((p50 - directP50).Microseconds()), "added_p50_us")
	b.ReportMetric(float64(percentile(lat, 99).Microseconds()), "p99_us")
}

func pingPongP50(b *testing.B, c net.Conn, n int) time.Duration {
	lat := make([]time.Duration, n)
	one := []byte{1}
	for i := range lat {
		start := time.Now()
		if _, err := c.Write(one); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, one); err != nil {
			b.Fatal(err)
		}
		lat[i] = time.Since(start)
	}
	return percentile(lat, 50)
}

// BenchmarkNewStream measures opening a tunnel on an already pooled
// connection, up to the first echoed byte, against a new direct TCP connection.
// The byte is written after Dial returned (after the 200).
func BenchmarkNewStream(b *testing.B) { benchNewStream(b, false) }

// BenchmarkNewStreamEarlyData is BenchmarkNewStream with the byte sent as
// DialRequest.EarlyData, as the ztunnel does when the app has written already.
func BenchmarkNewStreamEarlyData(b *testing.B) { benchNewStream(b, true) }

func benchNewStream(b *testing.B, early bool) {
	e := newEnv(b, envOpts{})
	warm := e.dial(b) // keeps the pooled connection open
	defer warm.Close()
	one := []byte{1}
	directLat := make([]time.Duration, 500)
	for i := range directLat {
		start := time.Now()
		c, err := net.Dial("tcp", e.upstream.String())
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Write(one); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, one); err != nil {
			b.Fatal(err)
		}
		directLat[i] = time.Since(start)
		c.Close()
	}
	lat := make([]time.Duration, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		lat[i] = newStreamEcho(b, e, early)
	}
	b.StopTimer()
	if n := len(e.pool.Stats().Conns); n != 1 {
		b.Fatalf("pool has %d connections, want the 1 reused", n)
	}
	dp50, p50 := percentile(directLat, 50), percentile(lat, 50)
	b.ReportMetric(float64(dp50.Microseconds()), "direct_p50_us")
	b.ReportMetric(float64(p50.Microseconds()), "p50_us")
	b.ReportMetric(float64(p50)/float64(dp50), "ratio_p50_vs_direct")
}

// newStreamEcho opens a stream on e's pooled connection, has one byte echoed
// (sent as early data or after the answer) and closes it; it returns the time
// from Dial to the echo.
func newStreamEcho(b *testing.B, e *env, early bool) time.Duration {
	one := []byte{1}
	start := time.Now()
	d := e.dialReq()
	if early {
		d.EarlyData = one
	}
	c, err := e.pool.Dial(context.Background(), d)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if !early {
		if _, err := c.Write(one); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := io.ReadFull(c, one); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

// BenchmarkNewStreamWorkers measures a performance device, the reused worker
// goroutines (internal/workers; AMBIENT_PERF_WORKERS, docs/performance.md):
// new streams on a pooled connection, as in BenchmarkNewStream, in blocks
// alternately with reuse on and off, so that both see the same load from
// whatever else runs. Here the server's request handler and Join's second
// direction run on workers. It prints each mode's p50 latency and this
// process's CPU time per stream (client, server and echo upstream are all in
// it). It ignores b.N; run it once:
//
//	go test ./dataplane/hbone -run '^$' -bench '^BenchmarkNewStreamWorkers$' -benchtime 1x
func BenchmarkNewStreamWorkers(b *testing.B) {
	e := newEnv(b, envOpts{})
	warm := e.dial(b) // keeps the pooled connection open
	defer warm.Close()
	defer workers.SetReuse(true)
	const blocks, perBlock = 40, 50
	modes := []string{"on", "off"}
	lat := make([][]time.Duration, len(modes))
	cpu := make([]time.Duration, len(modes))
	for i := range blocks * len(modes) {
		m := i % len(modes)
		workers.SetReuse(modes[m] == "on")
		cpu0 := cpuTime()
		for range perBlock {
			lat[m] = append(lat[m], newStreamEcho(b, e, false))
		}
		cpu[m] += cpuTime() - cpu0
	}
	for m, mode := range modes {
		fmt.Printf("workers_new_stream_p50_us_%s: %.0f\n", mode, micros(percentile(lat[m], 50)))
	}
	for m, mode := range modes {
		fmt.Printf("workers_new_stream_cpu_us_%s: %.0f\n", mode, micros(cpu[m])/float64(len(lat[m])))
	}
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func percentile(d []time.Duration, p int) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[(len(s)-1)*p/100]
}

// BenchmarkThroughputTwoProxies is the ztunnel data path in one process:
// client app → plain TCP → outbound proxy (Join with a pooled HBONE Conn) →
// mTLS HTTP/2 → HBONE server (Join with the upstream) → plain TCP → sink,
// against the client writing to the sink directly.
func BenchmarkThroughputTwoProxies(b *testing.B) {
	e := newEnv(b, envOpts{})
	direct, directCPU := directMBps(b, true)
	d := e.dialReq()
	d.Target = startSink(b)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	go func() { // the outbound proxy
		for {
			app, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				up, err := e.pool.Dial(context.Background(), d)
				if err != nil {
					app.Close()
					return
				}
				_ = Join(app, up, nil) // the relay's end: either side closing
			}()
		}
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, benchChunk)
	b.SetBytes(benchChunk)
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	for i := 0; i < b.N; i++ {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	mbps := float64(b.N) * benchChunk / time.Since(start).Seconds() / 1e6
	cpu := float64(cpuTime()-cpu0) / (float64(b.N) * benchChunk)
	b.StopTimer()
	b.ReportMetric(direct, "direct_MB/s")
	b.ReportMetric(mbps/direct, "ratio_vs_direct")
	b.ReportMetric(cpu, "cpu_ns/B")
	b.ReportMetric(directCPU/cpu, "cpu_efficiency_vs_direct")
}

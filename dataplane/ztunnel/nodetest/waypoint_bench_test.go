package nodetest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ambientmesh/ambient-operator/internal/testwait"
)

// BenchmarkWaypoint measures the L7 path (client pod → client ztunnel → waypoint → server
// ztunnel → server pod) against the L4-only path to the same pods (client pod → client
// ztunnel → server ztunnel → server pod) in the same run, and prints one line per figure
// (make bench-waypoint). Load comes from fortio (FORTIO: its binary, which the make target
// builds) inside the client pod: 1 KB HTTP/1.1 POSTs, echoed by `fortio server` processes in
// server-a and server-b, on 16 keep-alive connections, to Service echo (the waypoint's) or
// Service echo-l4 (no waypoint). A details line gives the floor: the same load to Service
// echo-tcp, whose waypoint listener only relays the connection's bytes (tcp_proxy), so that
// path has every hop and process wake-up of the waypoint path and none of its HTTP work.
// Another gives the figures at 1,000 rps again with the requests spread evenly over time
// (fortio -uniform) instead of sent by all 16 connections at once.
func BenchmarkWaypoint(b *testing.B) {
	bin := os.Getenv("FORTIO")
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("fortio"); err != nil {
			b.Skip("needs fortio (FORTIO=<binary> or on PATH): make bench-waypoint builds it")
		}
	}
	m := newWaypointMesh(b, false)
	for _, name := range []string{"server-a", "server-b"} {
		m.pods[name].serveFortio(b, m.dir, bin)
	}
	idleRSS := procStatusMB(b, m.wp.cmd.Process.Pid, "VmRSS") // configured, certificate issued, no traffic yet
	client := m.pods["client"]
	l4Target := fortioTarget{name: "l4", url: "http://" + echoL4VIP.String() + "/"}
	wpTarget := fortioTarget{name: "waypoint", url: "http://" + echoVIP.String() + "/"}
	tcpTarget := fortioTarget{name: "waypoint-tcp", url: "http://" + echoTCPVIP.String() + "/"}
	for _, target := range []fortioTarget{l4Target, wpTarget, tcpTarget} { // certificates, pooled connections
		client.fortioLoad(b, m.dir, bin, target, fortioRun{qps: 200, duration: 2 * time.Second})
	}

	// The paths are measured interleaved, run by run, so that all see the same load from
	// whatever else shares the two CPUs.
	const rounds = 3
	pid := m.wp.cmd.Process.Pid
	if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(comm)) != "waypoint" {
		b.Fatalf("pid %d is %q, not the waypoint: its CPU and RSS would be someone else's", pid, comm)
	}
	// Each path twice: with fortio's default schedule, where the 16 connections send at the
	// same instants (bursts of 16, the load of the printed figures), and with -uniform,
	// where their requests are spread evenly over time (details only).
	var l4, wp, tcp, l4Spread, wpSpread, tcpSpread atRate
	measure := func(a *atRate, target fortioTarget, spread bool) {
		zt0, cpu0, start := m.cpuUse(), cpuSeconds(pid), time.Now()
		r := client.fortioLoad(b, m.dir, bin, target, fortioRun{qps: 1000, duration: 10 * time.Second, spread: spread})
		a.cpu += cpuSeconds(pid) - cpu0
		a.wall += time.Since(start).Seconds()
		a.zt = a.zt.add(m.cpuUse().sub(zt0))
		a.qps += r.qps / rounds
		a.lat = append(a.lat, r.latencies...)
	}
	for range rounds {
		measure(&l4, l4Target, false)
		measure(&wp, wpTarget, false)
		measure(&tcp, tcpTarget, false)
		measure(&l4Spread, l4Target, true)
		measure(&wpSpread, wpTarget, true)
		measure(&tcpSpread, tcpTarget, true)
	}
	// The peak before the max-rps runs: what the waypoint needed at 1,000 rps.
	peakRSS, rss := procStatusMB(b, pid, "VmHWM"), procStatusMB(b, pid, "VmRSS")
	metrics := m.wp.scrape(b)
	heapMB := sumMetric(metrics, "go_memstats_heap_inuse_bytes") / (1 << 20)
	stackMB := sumMetric(metrics, "go_memstats_stack_inuse_bytes") / (1 << 20)
	var l4Max, wpMax []float64
	for range rounds {
		l4Max = append(l4Max, client.fortioLoad(b, m.dir, bin, l4Target, fortioRun{qps: 0, duration: 5 * time.Second}).qps)
		wpMax = append(wpMax, client.fortioLoad(b, m.dir, bin, wpTarget, fortioRun{qps: 0, duration: 5 * time.Second}).qps)
	}

	fmt.Printf("waypoint_added_latency_p50_us: %.0f\n", addedUS(wp, l4, 50))
	fmt.Printf("waypoint_added_latency_p99_us: %.0f\n", addedUS(wp, l4, 99))
	fmt.Printf("waypoint_cpu_cores_per_1k_rps: %.3f\n", wp.coresPer1k())
	fmt.Printf("waypoint_rss_mb_at_1k_rps: %.1f\n", peakRSS)
	fmt.Printf("waypoint_max_rps_ratio_vs_l4: %.2f\n", median(wpMax)/median(l4Max))
	b.Logf("details: at 1,000 rps (%d requests per path): p50 l4 %v waypoint %v, p99 l4 %v waypoint %v; waypoint CPU %.2f s over %.1f s at %.0f rps; RSS idle %.1f MB, peak %.1f MB, after the runs %.1f MB",
		len(wp.lat), pct(l4.lat, 50), pct(wp.lat, 50), pct(l4.lat, 99), pct(wp.lat, 99), wp.cpu, wp.wall, wp.qps, idleRSS, peakRSS, rss)
	b.Logf("details: the floor, through the waypoint's TCP listener (no HTTP) at 1,000 rps: added p50 %.0f µs, p99 %.0f µs (p50 %v, p99 %v); waypoint %.3f cores per 1,000 rps",
		addedUS(tcp, l4, 50), addedUS(tcp, l4, 99), pct(tcp.lat, 50), pct(tcp.lat, 99), tcp.coresPer1k())
	b.Logf("details: requests spread evenly (fortio -uniform) at 1,000 rps: added p50 %.0f µs, p99 %.0f µs (p50 l4 %v waypoint %v, p99 l4 %v waypoint %v); waypoint %.3f cores per 1,000 rps; the floor adds p50 %.0f µs, p99 %.0f µs, waypoint %.3f cores per 1,000 rps",
		addedUS(wpSpread, l4Spread, 50), addedUS(wpSpread, l4Spread, 99), pct(l4Spread.lat, 50), pct(wpSpread.lat, 50), pct(l4Spread.lat, 99), pct(wpSpread.lat, 99),
		wpSpread.coresPer1k(), addedUS(tcpSpread, l4Spread, 50), addedUS(tcpSpread, l4Spread, 99), tcpSpread.coresPer1k())
	b.Logf("details: after the 1,000 rps runs the waypoint's Go heap in use is %.1f MB, goroutine stacks %.1f MB", heapMB, stackMB)
	b.Logf("details: ztunnels' CPU at 1,000 rps (cores, node a + node b): l4 path %.3f + %.3f, waypoint path %.3f + %.3f",
		l4.zt.ztA/l4.wall, l4.zt.ztB/l4.wall, wp.zt.ztA/wp.wall, wp.zt.ztB/wp.wall)
	b.Logf("details: max rps with 16 connections (runs): l4 %.0f, waypoint %.0f", l4Max, wpMax)
}

// atRate is what the runs of one path at 1,000 rps measured.
type atRate struct {
	lat  []time.Duration // every request's
	cpu  float64         // the waypoint's CPU seconds
	wall float64         // seconds
	qps  float64         // the mean of the runs
	zt   cpuUse          // the ztunnels' CPU
}

func (a atRate) coresPer1k() float64 { return a.cpu / a.wall / (a.qps / 1000) }

// addedUS is how much later than base's the p-th percentile of a's latencies is, in µs.
func addedUS(a, base atRate, p int) float64 { return us(pct(a.lat, p) - pct(base.lat, p)) }

// serveFortio runs `fortio server` on :8080 inside the pod (its echo handler answers a POST
// with its body) until the benchmark ends.
func (p *pod) serveFortio(t testing.TB, dir, bin string) {
	logPath := filepath.Join(dir, "fortio-server-"+p.name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := p.ns.Cmd(bin, "server", "-http-port", "8080", "-grpc-port", "disabled", "-redirect-port", "disabled",
		"-tcp-port", "disabled", "-udp-port", "disabled", "-ui-path", "", "-loglevel", "Warning")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); logf.Close() })
	testwait.For(t, "fortio server in "+p.name+" listening", 10*time.Second, func() bool {
		b, _ := os.ReadFile(logPath)
		return strings.Contains(string(b), "http-echo server listening")
	})
}

type fortioTarget struct{ name, url string }

// fortioRun is one load run: qps 0 is as fast as the 16 connections go; spread staggers
// the connections' schedules evenly (-uniform) instead of fortio's default, where all 16
// send at the same instants.
type fortioRun struct {
	qps      int
	duration time.Duration
	spread   bool
}

type fortioResult struct {
	qps       float64
	latencies []time.Duration // of every request, from fortio's access log
}

// fortioLoad runs `fortio load` inside the pod (its connections are captured like any
// app's): 1 KB POSTs on 16 keep-alive HTTP/1.1 connections. Any answer but 200 fails the
// benchmark.
func (p *pod) fortioLoad(t testing.TB, dir, bin string, target fortioTarget, run fortioRun) fortioResult {
	t.Helper()
	base := filepath.Join(dir, fmt.Sprintf("fortio-%s-%d", target.name, time.Now().UnixNano()))
	cmd := p.ns.Cmd(bin, "load", "-qps", fmt.Sprint(run.qps), "-c", "16", "-t", run.duration.String(), "-uniform="+strconv.FormatBool(run.spread),
		"-payload-size", "1024", "-json", base+".json", "-access-log-file", base+".log", "-access-log-format", "json", "-quiet", target.url)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("fortio load %s: %v\n%s", target.url, err, out)
	}
	var summary struct {
		ActualQPS float64
		RetCodes  map[string]int64
	}
	b, err := os.ReadFile(base + ".json")
	if err == nil {
		err = json.Unmarshal(b, &summary)
	}
	if err != nil {
		t.Fatalf("fortio's result: %v", err)
	}
	var res fortioResult
	res.qps = summary.ActualQPS
	f, err := os.Open(base + ".log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for s := bufio.NewScanner(f); s.Scan(); {
		var entry struct {
			Latency float64 // seconds
			OK      bool
			Details string // the status code
		}
		if err := json.Unmarshal(s.Bytes(), &entry); err != nil {
			t.Fatalf("fortio's access log: %v", err)
		}
		if !entry.OK || entry.Details != "200" {
			t.Fatalf("fortio load %s: a request ended with %q (status codes: %v)", target.url, entry.Details, summary.RetCodes)
		}
		res.latencies = append(res.latencies, time.Duration(entry.Latency*float64(time.Second)))
	}
	if len(res.latencies) == 0 {
		t.Fatalf("fortio load %s: no requests logged", target.url)
	}
	return res
}

// procStatusMB reads a size field of /proc/<pid>/status ("VmRSS", "VmHWM": the peak RSS)
// in MB.
func procStatusMB(t testing.TB, pid int, field string) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1024
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

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
	l4 := fortioTarget{name: "l4", url: "http://" + echoL4VIP.String() + "/"}
	wp := fortioTarget{name: "waypoint", url: "http://" + echoVIP.String() + "/"}
	tcp := fortioTarget{name: "waypoint-tcp", url: "http://" + echoTCPVIP.String() + "/"}
	for _, target := range []fortioTarget{l4, wp, tcp} { // certificates, pooled connections
		client.fortioLoad(b, m.dir, bin, target, fortioRun{qps: 200, duration: 2 * time.Second})
	}

	// Both paths are measured interleaved, run by run, so that both see the same load from
	// whatever else shares the two CPUs.
	const rounds = 3
	pid := m.wp.cmd.Process.Pid
	if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(comm)) != "waypoint" {
		b.Fatalf("pid %d is %q, not the waypoint: its CPU and RSS would be someone else's", pid, comm)
	}
	var l4Lat, wpLat, tcpLat []time.Duration
	var wpCPU, wpWall, wpQPS, l4Wall, tcpCPU, tcpWall, tcpQPS float64
	var l4ZT, wpZT cpuUse // the ztunnels' CPU on each path, for the details line
	for range rounds {
		zt0, start := m.cpuUse(), time.Now()
		l4Lat = append(l4Lat, client.fortioLoad(b, m.dir, bin, l4, fortioRun{qps: 1000, duration: 10 * time.Second}).latencies...)
		l4ZT, l4Wall = l4ZT.add(m.cpuUse().sub(zt0)), l4Wall+time.Since(start).Seconds()
		zt0, cpu0, start := m.cpuUse(), cpuSeconds(pid), time.Now()
		r := client.fortioLoad(b, m.dir, bin, wp, fortioRun{qps: 1000, duration: 10 * time.Second})
		wpCPU += cpuSeconds(pid) - cpu0
		wpWall += time.Since(start).Seconds()
		wpZT = wpZT.add(m.cpuUse().sub(zt0))
		wpQPS += r.qps / rounds
		wpLat = append(wpLat, r.latencies...)
		cpu0, start = cpuSeconds(pid), time.Now()
		r = client.fortioLoad(b, m.dir, bin, tcp, fortioRun{qps: 1000, duration: 10 * time.Second})
		tcpCPU += cpuSeconds(pid) - cpu0
		tcpWall += time.Since(start).Seconds()
		tcpQPS += r.qps / rounds
		tcpLat = append(tcpLat, r.latencies...)
	}
	// The peak before the max-rps runs: what the waypoint needed at 1,000 rps.
	peakRSS, rss := procStatusMB(b, pid, "VmHWM"), procStatusMB(b, pid, "VmRSS")
	metrics := m.wp.scrape(b)
	heapMB := sumMetric(metrics, "go_memstats_heap_inuse_bytes") / (1 << 20)
	stackMB := sumMetric(metrics, "go_memstats_stack_inuse_bytes") / (1 << 20)
	var l4Max, wpMax []float64
	for range rounds {
		l4Max = append(l4Max, client.fortioLoad(b, m.dir, bin, l4, fortioRun{qps: 0, duration: 5 * time.Second}).qps)
		wpMax = append(wpMax, client.fortioLoad(b, m.dir, bin, wp, fortioRun{qps: 0, duration: 5 * time.Second}).qps)
	}

	fmt.Printf("waypoint_added_latency_p50_us: %.0f\n", us(pct(wpLat, 50)-pct(l4Lat, 50)))
	fmt.Printf("waypoint_added_latency_p99_us: %.0f\n", us(pct(wpLat, 99)-pct(l4Lat, 99)))
	fmt.Printf("waypoint_cpu_cores_per_1k_rps: %.3f\n", wpCPU/wpWall/(wpQPS/1000))
	fmt.Printf("waypoint_rss_mb_at_1k_rps: %.1f\n", peakRSS)
	fmt.Printf("waypoint_max_rps_ratio_vs_l4: %.2f\n", median(wpMax)/median(l4Max))
	b.Logf("details: at 1,000 rps (%d requests per path): p50 l4 %v waypoint %v, p99 l4 %v waypoint %v; waypoint CPU %.2f s over %.1f s at %.0f rps; RSS idle %.1f MB, peak %.1f MB, after the runs %.1f MB",
		len(wpLat), pct(l4Lat, 50), pct(wpLat, 50), pct(l4Lat, 99), pct(wpLat, 99), wpCPU, wpWall, wpQPS, idleRSS, peakRSS, rss)
	b.Logf("details: the floor, through the waypoint's TCP listener (no HTTP) at 1,000 rps: added p50 %.0f µs, p99 %.0f µs (p50 %v, p99 %v); waypoint %.3f cores per 1,000 rps",
		us(pct(tcpLat, 50)-pct(l4Lat, 50)), us(pct(tcpLat, 99)-pct(l4Lat, 99)), pct(tcpLat, 50), pct(tcpLat, 99), tcpCPU/tcpWall/(tcpQPS/1000))
	b.Logf("details: after the 1,000 rps runs the waypoint's Go heap in use is %.1f MB, goroutine stacks %.1f MB", heapMB, stackMB)
	b.Logf("details: ztunnels' CPU at 1,000 rps (cores, node a + node b): l4 path %.3f + %.3f, waypoint path %.3f + %.3f",
		l4ZT.ztA/l4Wall, l4ZT.ztB/l4Wall, wpZT.ztA/wpWall, wpZT.ztB/wpWall)
	b.Logf("details: max rps with 16 connections (runs): l4 %.0f, waypoint %.0f", l4Max, wpMax)
}

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

// fortioRun is one load run: qps 0 is as fast as the 16 connections go.
type fortioRun struct {
	qps      int
	duration time.Duration
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
	cmd := p.ns.Cmd(bin, "load", "-qps", fmt.Sprint(run.qps), "-c", "16", "-t", run.duration.String(),
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

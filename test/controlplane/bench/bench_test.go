// Package bench measures the control plane at scale: the real cmd/controlplane binary
// against the envtest API server with 10,000 pods (BENCH_PODS to change the count) created
// by the benchmark, and the ztunnel's xDS client connected to it; then a waypoint with
// 1,000 HTTPRoutes (the real waypoint's config store, on its own xDS stream). Run with
// `make bench-controlplane`.
package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/dataplane/xdsclient"
	"github.com/ambientmesh/ambient-operator/internal/testwait"
	"github.com/ambientmesh/ambient-operator/test/controlplane/meshenv"
	"github.com/ambientmesh/ambient-operator/test/testenv"
)

const (
	// pods is the number of pods the benchmarks create; BENCH_PODS overrides it for the
	// control-plane bench (see benchPods).
	pods     = 10000
	creators = 16 // concurrent pod (and route) creators
	benchNS  = "bench"
	// The mesh's trust domain and the cluster's DNS suffix, given to the control plane.
	trustDomain   = "cluster.local"
	clusterDomain = "cluster.local"
	serverName    = "ambientmesh-controlplane.ambient-system.svc"
)

// BenchmarkControlPlane10kPods creates 10,000 enrolled pods (BENCH_PODS pods when set, see
// benchPods) and reports, as the last lines of its output:
//
//	pod_to_client_p50_ms / pod_to_client_p99_ms: from just before the pod's Create call to
//	  the ztunnel's xDS client holding its Workload;
//	push_bytes_per_pod_change: bytes of Workload responses (protobuf size) per pod created;
//	controlplane_rss_mb_10k_pods: the control-plane process's peak resident set size;
//
// (with another pod count, the names carry it: pod_to_client_p99_ms_50k,
// push_bytes_per_pod_change_50k, controlplane_rss_mb_50k_pods for 50,000), then, with
// the 10,000 pods still there, adds a Waypoint with 1,000 HTTPRoutes on one Service and a
// waypoint connected to the control plane (see benchWaypointPush):
//
//	waypoint_push_ms_p50 / waypoint_push_ms_p99: from just before an HTTPRoute edit's API
//	  call to the waypoint ACKing the RouteConfiguration that carries it;
//	waypoint_push_bytes_per_edit: bytes of RouteConfiguration responses per edit.
//
// The waypoint figures are defined with 10,000 pods: another count skips them.
func BenchmarkControlPlane10kPods(b *testing.B) {
	count := benchPods(b)
	for range b.N {
		runBench(b, count)
	}
}

// benchPods is the number of pods the control-plane bench creates: BENCH_PODS, else pods.
func benchPods(b *testing.B) int {
	v := os.Getenv("BENCH_PODS")
	if v == "" {
		return pods
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		b.Fatalf("BENCH_PODS=%q: want a positive number of pods", v)
	}
	return n
}

// figureNames name the pod figures of a run with count pods: the names the 10,000-pod
// figures have always had, and for another count the same names carrying it.
type figureNames struct {
	latencyP50, latencyP99, pushBytes, rss string
}

func namesFor(count int) figureNames {
	if count == pods {
		return figureNames{"pod_to_client_p50_ms", "pod_to_client_p99_ms", "push_bytes_per_pod_change", "controlplane_rss_mb_10k_pods"}
	}
	n := strconv.Itoa(count)
	if count%1000 == 0 {
		n = strconv.Itoa(count/1000) + "k"
	}
	return figureNames{"pod_to_client_p50_ms_" + n, "pod_to_client_p99_ms_" + n, "push_bytes_per_pod_change_" + n, "controlplane_rss_mb_" + n + "_pods"}
}

func runBench(b *testing.B, count int) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs, err := os.CreateTemp("", "bench-controlplane-*.log")
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = logs.Close() }()
	b.Logf("cert-manager and control-plane logs: %s", logs.Name())

	env, err := meshenv.Start(ctx, logs)
	if err != nil {
		b.Fatal(err)
	}
	defer env.Stop()
	clientset, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		b.Fatal(err)
	}

	cpProc, xdsAddr := startControlPlane(ctx, b, env, logs)
	defer stopProcess(cpProc)
	stopRSS := sampleRSS(cpProc.Process.Pid)

	token := ztunnelToken(ctx, b, clientset)
	rootPEM, err := env.RootCAPEM(ctx)
	if err != nil {
		b.Fatal(err)
	}
	seen := &arrivals{at: map[string]time.Time{}}
	var workloadBytes atomic.Int64
	client := xdsclient.New(xdsAddr, seen, xdsclient.Options{
		TypeURLs:    pb.TypeURLs,
		Node:        &corev3.Node{Id: "ztunnel~bench-node"},
		DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(clientTLS(rootPEM)))},
		CallOptions: []grpc.CallOption{grpc.PerRPCCredentials(bearer(token))},
		Observe: func(resp *discoveryv3.DeltaDiscoveryResponse) {
			if resp.GetTypeUrl() == pb.WorkloadTypeURL {
				workloadBytes.Add(int64(proto.Size(resp)))
			}
		},
	})
	go func() { _ = client.Run(ctx) }()
	select {
	case <-client.Synced():
	case <-time.After(time.Minute):
		b.Fatal("xDS client did not sync")
	}

	if _, err := clientset.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: benchNS, Labels: map[string]string{meshv1.LabelDataplaneMode: meshv1.DataplaneModeAmbient}}}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	if _, err := clientset.CoreV1().Services(benchNS).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "app"},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "bench"}, Ports: []corev1.ServicePort{{Port: 80}}},
	}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	// The pods' Workloads name the Service: start the clock once the control plane has it.
	service := pb.ServiceResourceName(benchNS, "app."+benchNS+".svc."+clusterDomain)
	testwait.For(b, "the client to hold Service "+service, time.Minute, func() bool { return !seen.get(service).IsZero() })
	bytesBefore := workloadBytes.Load()

	b.ResetTimer()
	begin := time.Now()
	created := createPods(ctx, b, clientset, count)
	b.Logf("created %d pods in %s", len(created), time.Since(begin).Round(time.Second))
	// Allow 10 minutes per 10,000 pods for the last Workload to arrive.
	if err := seen.waitAll(created, time.Duration(max(1, count/pods))*10*time.Minute); err != nil {
		b.Fatal(err)
	}
	b.Logf("the client held every Workload %s after the first Create", time.Since(begin).Round(time.Second))
	b.StopTimer()
	rss := stopRSS()

	var lat []float64
	for uid, start := range created {
		lat = append(lat, float64(seen.get(uid).Sub(start).Microseconds())/1000)
	}
	sort.Float64s(lat)
	names := namesFor(count)
	fmt.Printf("%s: %.1f\n", names.latencyP50, percentile(lat, 0.50))
	fmt.Printf("%s: %.1f\n", names.latencyP99, percentile(lat, 0.99))
	fmt.Printf("%s: %d\n", names.pushBytes, (workloadBytes.Load()-bytesBefore)/int64(len(created)))
	fmt.Printf("%s: %.0f\n", names.rss, float64(rss)/1024/1024)
	if count != pods {
		return
	}

	wp := benchWaypointPush(ctx, b, env, clientset, xdsAddr, rootPEM)
	fmt.Printf("waypoint_push_ms_p50: %.1f\n", percentile(wp.pushMs, 0.50))
	fmt.Printf("waypoint_push_ms_p99: %.1f\n", percentile(wp.pushMs, 0.99))
	fmt.Printf("waypoint_push_bytes_per_edit: %d\n", wp.bytesPerEdit)
}

// startControlPlane builds and runs cmd/controlplane against the envtest API server.
func startControlPlane(ctx context.Context, b *testing.B, env *meshenv.Env, logs *os.File) (*exec.Cmd, string) {
	root, err := testenv.RepoRoot()
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	bin := filepath.Join(dir, "controlplane")
	build := exec.Command("go", "build", "-o", bin, "./cmd/controlplane")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build controlplane: %v\n%s", err, out)
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := testenv.WriteKubeconfig(env.Config, kubeconfig); err != nil {
		b.Fatal(err)
	}
	xdsAddr, caAddr, monPort := freeAddr(b), freeAddr(b), freePort(b)
	cmd := exec.CommandContext(ctx, bin,
		"--kubeconfig="+kubeconfig, "--mesh-config=", "--namespace="+meshenv.Namespace, "--trust-domain="+trustDomain, "--cluster-domain="+clusterDomain,
		"--xds-address="+xdsAddr, "--ca-address="+caAddr, "--monitoring-port="+strconv.Itoa(monPort),
		"--issuer-name="+meshenv.CAIssuer, "--issuer-kind=Issuer", "--issuer-group=cert-manager.io",
		"--leader-elect=false", "--log-level=info")
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	if err := testwait.Until(2*time.Minute, func() error { return httpOK("http://127.0.0.1:" + strconv.Itoa(monPort) + "/healthz/ready") }); err != nil {
		stopProcess(cmd)
		b.Fatalf("control plane not ready: %v; see %s", err, logs.Name())
	}
	return cmd, xdsAddr
}

// httpOK says why a GET of url did not answer 200 OK, if it did not.
func httpOK(url string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

func stopProcess(cmd *exec.Cmd) {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// sampleRSS polls the process's VmRSS and returns a func that stops and gives the peak.
func sampleRSS(pid int) func() int64 {
	var peak atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if v := vmRSS(pid); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	return func() int64 {
		close(stop)
		<-done
		if v := vmRSS(pid); v > peak.Load() {
			peak.Store(v)
		}
		return peak.Load()
	}
}

func vmRSS(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer func() { _ = f.Close() }()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// ztunnelToken creates a node, the ztunnel service account and pod, and a bound token.
func ztunnelToken(ctx context.Context, b *testing.B, cs *kubernetes.Clientset) string {
	if _, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "bench-node"}}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	if _, err := cs.CoreV1().ServiceAccounts(meshenv.Namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "ztunnel"}}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	pod, err := cs.CoreV1().Pods(meshenv.Namespace).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "ztunnel-bench"},
		Spec:       corev1.PodSpec{ServiceAccountName: "ztunnel", NodeName: "bench-node", Containers: []corev1.Container{{Name: "z", Image: "ztunnel"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		b.Fatal(err)
	}
	tok, err := cs.CoreV1().ServiceAccounts(meshenv.Namespace).CreateToken(ctx, "ztunnel", &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{
		Audiences: []string{pb.CATokenAudience}, ExpirationSeconds: ptr.To(int64(3600)),
		BoundObjectRef: &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}, metav1.CreateOptions{})
	if err != nil {
		b.Fatal(err)
	}
	return tok.Status.Token
}

// createPods creates count pods with several workers and returns each pod's uid with the
// time just before its Create call.
func createPods(ctx context.Context, b *testing.B, cs *kubernetes.Clientset, count int) map[string]time.Time {
	var mu sync.Mutex
	created := make(map[string]time.Time, count)
	next := atomic.Int64{}
	var wg sync.WaitGroup
	errs := make(chan error, creators)
	for range creators {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(count) {
					return
				}
				pod := &corev1.Pod{
					ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("app-%05d", i), Labels: map[string]string{"app": "bench"}},
					Spec: corev1.PodSpec{ServiceAccountName: "app", NodeName: fmt.Sprintf("node-%02d", i%50),
						Containers: []corev1.Container{{Name: "app", Image: "app", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 80}}}}},
				}
				start := time.Now()
				out, err := cs.CoreV1().Pods(benchNS).Create(ctx, pod, metav1.CreateOptions{})
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				created[string(out.UID)] = start
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	return created
}

// arrivals records when the client first held each Workload (by UID) and Service (by
// its resource name).
type arrivals struct {
	mu sync.Mutex
	at map[string]time.Time
}

func (a *arrivals) Apply(typeURL string, upserts map[string]*anypb.Any, _ []string) error {
	if typeURL != pb.WorkloadTypeURL && typeURL != pb.ServiceTypeURL {
		return nil
	}
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	for name := range upserts {
		if _, ok := a.at[name]; !ok {
			a.at[name] = now
		}
	}
	return nil
}

func (a *arrivals) get(uid string) time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.at[uid]
}

func (a *arrivals) waitAll(want map[string]time.Time, limit time.Duration) error {
	return testwait.Until(limit, func() error {
		if missing := a.missing(want); missing > 0 {
			return fmt.Errorf("%d of %d Workloads have not reached the client", missing, len(want))
		}
		return nil
	})
}

// missing counts the UIDs in want the client does not hold.
func (a *arrivals) missing(want map[string]time.Time) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for uid := range want {
		if _, ok := a.at[uid]; !ok {
			n++
		}
	}
	return n
}

func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))]
}

func clientTLS(rootPEM []byte) *tls.Config {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(rootPEM)
	return &tls.Config{RootCAs: pool, ServerName: serverName, MinVersion: tls.VersionTLS13}
}

type bearer string

func (t bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{pb.AuthorizationMetadataKey: pb.BearerPrefix + string(t)}, nil
}
func (bearer) RequireTransportSecurity() bool { return true }

func freeAddr(b *testing.B) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = lis.Close() }()
	return lis.Addr().String()
}

func freePort(b *testing.B) int {
	_, port, _ := net.SplitHostPort(freeAddr(b))
	p, _ := strconv.Atoi(port)
	return p
}

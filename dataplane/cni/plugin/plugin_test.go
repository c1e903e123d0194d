package plugin

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/ambientmesh/ambient-operator/dataplane/cni/wire"
)

// fakeAgent answers on a unix socket like the node agent; the plugin's
// decisions around it are what is under test.
func fakeAgent(t *testing.T, answer func(*wire.Request) (int, string)) (socket string, got chan *wire.Request) {
	dir, err := os.MkdirTemp("", "plg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	socket = filepath.Join(dir, "agent.sock")
	ln, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	got = make(chan *wire.Request, 4)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body [wire.MaxMessageSize]byte
		n, _ := r.Body.Read(body[:])
		req, err := wire.DecodeRequest(body[:n])
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		got <- req
		code, resp := answer(req)
		w.WriteHeader(code)
		_, _ = w.Write([]byte(resp))
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	return socket, got
}

const prevResult = `{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/var/run/netns/p"}],"ips":[{"address":"10.244.0.9/24","interface":0}]}`

func stdin(socket, state string) []byte {
	return []byte(`{"cniVersion":"1.0.0","name":"podnet","type":"ambient-cni","agentSocket":"` + socket +
		`","stateFile":"` + state + `","timeoutSeconds":1,"prevResult":` + prevResult + `}`)
}

func args(socket, state, pod string) *skel.CmdArgs {
	return &skel.CmdArgs{ContainerID: "c1", Netns: "/var/run/netns/p", IfName: "eth0",
		Args:      "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=" + pod + ";K8S_POD_UID=u1",
		StdinData: stdin(socket, state)}
}

func writeState(t *testing.T, s *wire.EnrollmentState) string {
	p := filepath.Join(t.TempDir(), "enrollment.json")
	if err := wire.WriteState(p, s); err != nil {
		t.Fatal(err)
	}
	return p
}

func addErr(t *testing.T, a *skel.CmdArgs) error {
	t.Helper()
	conf, err := parseConfig(a.StdinData)
	if err != nil {
		t.Fatal(err)
	}
	req, ok, err := request(wire.CommandAdd, a, conf.PrevResult)
	if err != nil || !ok {
		t.Fatalf("request = %v, %v", ok, err)
	}
	return add(conf, req)
}

func TestAddAsksTheAgentWithWhatTheRuntimeGave(t *testing.T) {
	socket, got := fakeAgent(t, func(*wire.Request) (int, string) { return 200, `{"enrolled":true}` })
	if err := addErr(t, args(socket, "/nonexistent", "web")); err != nil {
		t.Fatal(err)
	}
	req := <-got
	if req.PodName != "web" || req.PodNamespace != "shop" || req.PodUID != "u1" || req.Netns != "/var/run/netns/p" ||
		len(req.IPs) != 1 || req.IPs[0] != "10.244.0.9" {
		t.Fatalf("agent got %+v", req)
	}
}

func TestAddFailsWhenTheAgentCannotCaptureAnEnrolledPod(t *testing.T) {
	socket, _ := fakeAgent(t, func(*wire.Request) (int, string) {
		return 200, `{"enrolled":true,"error":"ztunnel is not connected to the node agent"}`
	})
	err := addErr(t, args(socket, "/nonexistent", "web"))
	if err == nil || !strings.Contains(err.Error(), "ztunnel is not connected") || !strings.Contains(err.Error(), "shop/web") {
		t.Fatalf("ADD = %v, want the agent's reason and the pod", err)
	}
}

func TestAgentUnreachableFallsBackToTheStateFile(t *testing.T) {
	state := writeState(t, &wire.EnrollmentState{Namespaces: []string{"shop"}, Pods: map[string]bool{"shop/legacy": false}})
	gone := filepath.Join(t.TempDir(), "no-agent.sock")
	if err := addErr(t, args(gone, state, "web")); err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("enrolled pod with the agent down: ADD = %v, want a refusal", err)
	}
	if err := addErr(t, args(gone, state, "legacy")); err != nil {
		t.Fatalf("opted-out pod with the agent down: ADD = %v, want pass-through", err)
	}
	if err := addErr(t, args(gone, filepath.Join(t.TempDir(), "missing.json"), "web")); err != nil {
		t.Fatalf("no state file (agent never ran): ADD = %v, want pass-through", err)
	}
	// An agent that answers with an HTTP error (e.g. apiserver down) counts as unreachable.
	socket, _ := fakeAgent(t, func(*wire.Request) (int, string) { return 503, "apiserver unreachable" })
	if err := addErr(t, args(socket, state, "web")); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("ADD with a failing agent = %v", err)
	}
}

// A netns path the agent would refuse is never sent: an enrolled pod fails ADD saying
// which paths are accepted; a pod outside the mesh starts as usual.
func TestAddWithAnUnacceptedNetnsPath(t *testing.T) {
	socket, got := fakeAgent(t, func(*wire.Request) (int, string) { return 200, `{"enrolled":true}` })
	state := writeState(t, &wire.EnrollmentState{Namespaces: []string{"shop"}, Pods: map[string]bool{"shop/legacy": false}})
	for _, netns := range []string{"/etc/shadow", "/var/run/netns/../../etc/shadow", "/proc/self/ns/net"} {
		a := args(socket, state, "web")
		a.Netns = netns
		err := addErr(t, a)
		if err == nil || !strings.Contains(err.Error(), "shop/web is enrolled") || !strings.Contains(err.Error(), "/var/run/netns/<name>") {
			t.Errorf("enrolled pod with netns %s: ADD = %v, want a refusal naming the accepted paths", netns, err)
		}
		a = args(socket, state, "legacy")
		a.Netns = netns
		if err := addErr(t, a); err != nil {
			t.Errorf("pod outside the mesh with netns %s: ADD = %v, want pass-through", netns, err)
		}
	}
	if len(got) != 0 {
		t.Fatalf("the agent was sent %d request(s) with a refused netns path", len(got))
	}
}

func TestAddIsBoundedInTime(t *testing.T) {
	socket, _ := fakeAgent(t, func(*wire.Request) (int, string) { time.Sleep(3 * time.Second); return 200, `{}` })
	state := writeState(t, &wire.EnrollmentState{})
	start := time.Now()
	if err := addErr(t, args(socket, state, "web")); err != nil {
		t.Fatalf("a slow agent and a non-enrolled pod: ADD = %v", err)
	}
	if took := time.Since(start); took > 2500*time.Millisecond {
		t.Fatalf("ADD waited %s for a slow agent, timeout is 1s", took)
	}
}

func TestRequestSkipsNonKubernetesSandboxes(t *testing.T) {
	a := args("/x", "/y", "web")
	a.Args = "IgnoreUnknown=1"
	if _, ok, err := request(wire.CommandAdd, a, nil); ok || err != nil {
		t.Fatalf("request for a non-pod sandbox = %v, %v", ok, err)
	}
}

func TestParseConfig(t *testing.T) {
	conf, err := parseConfig([]byte(`{"cniVersion":"1.0.0","name":"n","type":"ambient-cni"}`))
	if err != nil || conf.AgentSocket != DefaultAgentSocket || conf.StateFile != DefaultStateFile || conf.timeout() != DefaultTimeout {
		t.Fatalf("defaults: %+v, %v", conf, err)
	}
	if _, err := parseConfig([]byte(`{"cniVersion":"1.0.0","type":"ambient-cni","timeoutSeconds":-1}`)); err == nil || !strings.Contains(err.Error(), "timeoutSeconds") {
		t.Fatalf("negative timeout: %v", err)
	}
	if _, err := parseConfig([]byte(`{`)); err == nil {
		t.Fatal("broken JSON accepted")
	}
	if _, err := parseConfig(stdin("/s", "/f")); err != nil {
		t.Fatalf("config with prevResult: %v", err)
	}
}

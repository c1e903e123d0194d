package main

import (
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path"
	"slices"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/apimachinery/pkg/util/httpstream/spdy"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
)

const (
	testToken = "s3cret"
	testPod   = "ztunnel-x7k2p"
	testPath  = "/api/v1/namespaces/ambient-system/pods/" + testPod + "/portforward"
)

// fakeAPIServer answers a pod's portforward subresource as an API server without
// WebSocket tunnelling (before 1.31) and the kubelet do together: it checks the token
// and the pod, refuses the WebSocket upgrade, and serves the SPDY upgrade as the kubelet
// does (kubeletPortForward). It records the upgrades it was asked for.
func fakeAPIServer(t *testing.T, backend string) (*httptest.Server, *upgradeLog) {
	upgrades := &upgradeLog{}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		upgrades.add(r.Method + " " + r.Header.Get("Upgrade"))
		if r.Header.Get("Authorization") != "Bearer "+testToken {
			writeStatus(w, http.StatusForbidden, "Forbidden",
				`pods \"`+testPod+`\" is forbidden: User \"someone\" cannot create resource \"pods/portforward\"`)
			return
		}
		if r.URL.Path != testPath {
			writeStatus(w, http.StatusNotFound, "NotFound", `pods \"`+path.Base(path.Dir(r.URL.Path))+`\" not found`)
			return
		}
		if strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			http.Error(w, "this API server does not tunnel port-forwards in WebSockets", http.StatusBadRequest)
			return
		}
		kubeletPortForward(w, r, testPod, backend)
	}))
	t.Cleanup(srv.Close)
	return srv, upgrades
}

func writeStatus(w http.ResponseWriter, code int, reason, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":%q,"code":%d,"message":"%s"}`, reason, code, message)
}

// upgradeLog lists requests as "METHOD Upgrade-header".
type upgradeLog struct {
	mu       sync.Mutex
	requests []string
}

func (l *upgradeLog) add(request string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.requests = append(l.requests, request)
}

func (l *upgradeLog) list() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.requests)
}

// kubeletPortForward serves a port-forward as the kubelet does: an SPDY connection
// (protocol portforward.k8s.io) on which each forwarded connection is a pair of streams,
// error and data, with the same request ID. For each pair it connects to backend (port
// 15000 "in the pod") and copies both ways, or writes why not on the error stream and
// resets both. Problems go to the error stream, not to t: the handler outlives the test
// that started it (the connection is hijacked).
func kubeletPortForward(w http.ResponseWriter, r *http.Request, pod, backend string) {
	if _, err := httpstream.Handshake(r, w, []string{portforward.PortForwardProtocolV1Name}); err != nil {
		return // Handshake answered why
	}
	var (
		mu    sync.Mutex
		pairs = map[string]*streamPair{}
	)
	conn := spdy.NewResponseUpgrader().UpgradeResponse(w, r, func(stream httpstream.Stream, replySent <-chan struct{}) error {
		mu.Lock()
		defer mu.Unlock()
		id := stream.Headers().Get(corev1.PortForwardRequestIDHeader)
		pair := pairs[id]
		if pair == nil {
			pair = &streamPair{}
			pairs[id] = pair
		}
		switch stream.Headers().Get(corev1.StreamType) {
		case corev1.StreamTypeError:
			pair.error = stream
		case corev1.StreamTypeData:
			pair.data = stream
		default:
			return fmt.Errorf("unknown stream type %q", stream.Headers().Get(corev1.StreamType))
		}
		pair.replies = append(pair.replies, replySent)
		if pair.error != nil && pair.data != nil {
			delete(pairs, id)
			go pair.forward(pod, backend)
		}
		return nil
	})
	if conn == nil {
		return // the upgrade failed and was answered
	}
	defer conn.Close()
	<-conn.CloseChan()
}

type streamPair struct {
	error, data httpstream.Stream
	replies     []<-chan struct{}
}

func (p *streamPair) forward(pod, backend string) {
	for _, sent := range p.replies {
		<-sent
	}
	defer p.data.Close()
	defer p.error.Close()
	port := p.data.Headers().Get(corev1.PortHeader)
	if port != "15000" {
		fmt.Fprintf(p.error, "fake kubelet: port %q asked, only 15000 is forwarded", port)
		return
	}
	conn, err := net.Dial("tcp", backend)
	if err != nil {
		fmt.Fprintf(p.error, "error forwarding port %s to pod %s, uid : %v", port, pod, err)
		_ = p.data.Reset()
		_ = p.error.Reset()
		return
	}
	defer conn.Close()
	go func() {
		_, _ = io.Copy(conn, p.data)
		_ = conn.(*net.TCPConn).CloseWrite()
	}()
	_, _ = io.Copy(p.data, conn)
}

// restConfigFor is a kubeconfig's view of srv: its CA and a token.
func restConfigFor(srv *httptest.Server, token string) *rest.Config {
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	return &rest.Config{Host: srv.URL, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{CAData: ca}}
}

// echoAdmin answers every request with its method and path, as a JSON list.
func echoAdmin(t *testing.T) *httptest.Server {
	admin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `[{"method":%q,"path":%q}]`, r.Method, r.URL.Path)
	}))
	t.Cleanup(admin.Close)
	return admin
}

func TestPortForwardCarriesAdminRequests(t *testing.T) {
	admin := echoAdmin(t)
	srv, upgrades := fakeAPIServer(t, admin.Listener.Addr().String())

	dial, err := portForwardDialer(restConfigFor(srv, testToken), "ambient-system", testPod, 15000)
	if err != nil {
		t.Fatal(err)
	}
	for _, req := range []struct{ method, path string }{{http.MethodGet, "/workloads"}, {http.MethodPost, "/certs/renew"}} {
		body, err := adminRequest(dial, localAdmin, req.method, req.path)
		if err != nil {
			t.Fatalf("%s %s through the port-forward: %v", req.method, req.path, err)
		}
		if want := fmt.Sprintf(`[{"method":%q,"path":%q}]`, req.method, req.path); string(body) != want {
			t.Errorf("%s %s: got %s, want %s", req.method, req.path, body, want)
		}
	}
	// As kubectl: the WebSocket first, SPDY when the API server refuses it; one
	// port-forward per request.
	want := []string{"GET websocket", "POST SPDY/3.1", "GET websocket", "POST SPDY/3.1"}
	if got := upgrades.list(); !slices.Equal(got, want) {
		t.Errorf("upgrades asked of the API server: %q, want %q", got, want)
	}
}

func TestPortForwardStopsItsForwarderWhenTheConnectionCloses(t *testing.T) {
	admin := echoAdmin(t)
	srv, _ := fakeAPIServer(t, admin.Listener.Addr().String())
	dial, err := portForwardDialer(restConfigFor(srv, testToken), "ambient-system", testPod, 15000)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := dial(t.Context(), "tcp", localAdmin)
	if err != nil {
		t.Fatal(err)
	}
	local := conn.RemoteAddr().String() // the forwarder's port on 127.0.0.1
	if err := conn.Close(); err != nil {
		t.Fatal(err)
	}
	if c, err := net.Dial("tcp", local); err == nil {
		c.Close()
		t.Errorf("the forwarder still listens on %s after its connection closed", local)
	}
}

func TestPortForwardReportsWhyItFailed(t *testing.T) {
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nothingListens := closed.Addr().String()
	closed.Close()
	srv, _ := fakeAPIServer(t, nothingListens)

	cases := []struct {
		name, token, pod string
		want             []string
	}{
		{"the API server refuses", "wrong", testPod, []string{`cannot create resource "pods/portforward"`}},
		{"no such pod", testToken, "ztunnel-gone", []string{`pods "ztunnel-gone" not found`}},
		{"nothing listens in the pod", testToken, testPod, []string{"error forwarding port 15000 to pod " + testPod, "connection refused"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dial, err := portForwardDialer(restConfigFor(srv, tc.token), "ambient-system", tc.pod, 15000)
			if err != nil {
				t.Fatal(err)
			}
			_, err = adminRequest(dial, localAdmin, http.MethodGet, "/workloads")
			if err == nil {
				t.Fatal("the request succeeded")
			}
			for _, want := range append(tc.want, "pod ambient-system/"+tc.pod+" port 15000") {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
		})
	}
}

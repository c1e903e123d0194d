package main

import (
	"encoding/binary"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/httpstream/wsstream"
	"k8s.io/client-go/rest"
)

const (
	testToken = "s3cret"
	testPath  = "/api/v1/namespaces/ambient-system/pods/ztunnel-x7k2p/portforward"
)

// fakeAPIServer answers a pod's portforward subresource as the API server and the
// kubelet do together: it checks the token, the path and the port, then serves the
// WebSocket as the kubelet does (kubeletPortForward).
func fakeAPIServer(t *testing.T, backend string) *httptest.Server {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+testToken {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Forbidden","code":403,`+
				`"message":"pods \"ztunnel-x7k2p\" is forbidden: User \"someone\" cannot create resource \"pods/portforward\""}`)
			return
		}
		if r.URL.Path != testPath || r.URL.Query().Get("ports") != "15000" {
			http.Error(w, "unexpected "+r.URL.String(), http.StatusNotFound)
			return
		}
		kubeletPortForward(t, w, r, backend)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// kubeletPortForward serves a port-forward WebSocket for port 15000 as the kubelet
// does, with its own channel library (wsstream): it starts each channel with the port
// number, then connects to backend (the port "in the pod") and copies both ways, or
// writes the dial error on the error channel.
func kubeletPortForward(t *testing.T, w http.ResponseWriter, r *http.Request, backend string) {
	conn := wsstream.NewConn(map[string]wsstream.ChannelProtocolConfig{
		portForwardProtocol: {Binary: true, Channels: []wsstream.ChannelType{wsstream.ReadWriteChannel, wsstream.WriteChannel}},
	})
	_, streams, err := conn.Open(w, r)
	if err != nil {
		t.Errorf("fake kubelet: %v", err)
		return
	}
	defer conn.Close()
	port := binary.LittleEndian.AppendUint16(nil, 15000)
	_, _ = streams[dataChannel].Write(port)
	_, _ = streams[errorChannel].Write(port)
	pod, err := net.Dial("tcp", backend)
	if err != nil {
		fmt.Fprintf(streams[errorChannel], "error forwarding port 15000 to pod ztunnel-x7k2p: %v", err)
		return
	}
	defer pod.Close()
	go func() { _, _ = io.Copy(pod, streams[dataChannel]) }()
	_, _ = io.Copy(streams[dataChannel], pod)
}

// restConfigFor is a kubeconfig's view of srv: its CA and a token.
func restConfigFor(srv *httptest.Server, token string) *rest.Config {
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	return &rest.Config{Host: srv.URL, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{CAData: ca}}
}

func TestPortForwardCarriesAdminRequests(t *testing.T) {
	admin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `[{"method":%q,"path":%q}]`, r.Method, r.URL.Path)
	}))
	defer admin.Close()
	srv := fakeAPIServer(t, admin.Listener.Addr().String())

	dial, err := portForwardDialer(restConfigFor(srv, testToken), "ambient-system", "ztunnel-x7k2p", 15000)
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
}

func TestPortForwardReportsWhyItFailed(t *testing.T) {
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nothingListens := closed.Addr().String()
	closed.Close()
	srv := fakeAPIServer(t, nothingListens)

	cases := []struct {
		name, token string
		want        []string
	}{
		{"the API server refuses", "wrong", []string{"403 Forbidden", `cannot create resource "pods/portforward"`}},
		{"nothing listens in the pod", testToken, []string{"error forwarding port 15000 to pod ztunnel-x7k2p", "connection refused"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dial, err := portForwardDialer(restConfigFor(srv, tc.token), "ambient-system", "ztunnel-x7k2p", 15000)
			if err != nil {
				t.Fatal(err)
			}
			_, err = adminRequest(dial, localAdmin, http.MethodGet, "/workloads")
			if err == nil {
				t.Fatal("the request succeeded")
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
		})
	}
}

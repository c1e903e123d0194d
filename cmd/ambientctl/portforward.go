package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
)

// A port-forward reaches a port on a pod's loopback through the API server with
// client-go's port-forward and the dialers `kubectl port-forward` uses: SPDY tunnelled in
// a WebSocket first, plain SPDY when the API server (or a proxy on the way) refuses the
// WebSocket upgrade. The API server authorizes it as create on pods/portforward and
// passes it to the pod's kubelet.
//
// client-go's forwarder serves a local port. ambientctl starts one for each connection
// it makes, on 127.0.0.1 at a port the OS chooses, connects to it, and stops it when
// that connection is closed: the admin HTTP client closes its connections when its
// request is done, so no forwarder outlives the command.

// portForwardDialer dials port of the pod through the API server that cfg names; the
// address it is asked for is ignored.
func portForwardDialer(cfg *rest.Config, namespace, pod string, port int32) (dialFunc, error) {
	base, _, err := rest.DefaultServerUrlFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	location := *base
	location.Path = path.Join("/", base.Path, "api/v1/namespaces", namespace, "pods", pod, "portforward")
	target := fmt.Sprintf("port-forward to pod %s/%s port %d through the API server", namespace, pod, port)
	return func(ctx context.Context, _, _ string) (net.Conn, error) {
		// A dialer per connection: the WebSocket dialer keeps the connection it made in
		// itself, so two dials must not share one.
		dialer, err := podStreamDialer(cfg, &location)
		if err != nil {
			return nil, fmt.Errorf("%s: kubeconfig: %w", target, err)
		}
		c, err := forwardOneConnection(ctx, dialer, port, target)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", target, err)
		}
		return c, nil
	}, nil
}

// podStreamDialer opens the stream connection of a pod's portforward subresource at
// location as kubectl does: the WebSocket dialer (API servers from 1.31 on), falling
// back to SPDY when the upgrade fails.
func podStreamDialer(cfg *rest.Config, location *url.URL) (httpstream.Dialer, error) {
	transport, upgrader, err := spdy.RoundTripperFor(cfg)
	if err != nil {
		return nil, err
	}
	spdyDialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, location)
	websocketDialer, err := portforward.NewSPDYOverWebsocketDialer(location, cfg)
	if err != nil {
		return nil, err
	}
	return portforward.NewFallbackDialer(websocketDialer, spdyDialer, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	}), nil
}

// forwardOneConnection starts a forwarder from a local port to port of the pod and
// returns a connection to it; closing the connection stops the forwarder. target names
// the port-forward in the connection's errors.
func forwardOneConnection(ctx context.Context, dialer httpstream.Dialer, port int32, target string) (net.Conn, error) {
	podError := &podErrorRecorder{dialer: dialer}
	stop, ready := make(chan struct{}), make(chan struct{})
	var listenErrors bytes.Buffer
	forwarder, err := portforward.NewOnAddresses(podError, []string{"127.0.0.1"}, []string{fmt.Sprintf("0:%d", port)},
		stop, ready, io.Discard, &listenErrors)
	if err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- forwarder.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-done:
		if details := strings.TrimSpace(listenErrors.String()); details != "" {
			err = fmt.Errorf("%w: %s", err, details)
		}
		return nil, err
	case <-ctx.Done():
		close(stop) // the forwarder ends once its dial returns
		return nil, ctx.Err()
	}
	stopForwarder := func() {
		close(stop)
		<-done
	}
	ports, err := forwarder.GetPorts()
	if err != nil {
		stopForwarder()
		return nil, err
	}
	local := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(ports[0].Local)))
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", local)
	if err != nil {
		stopForwarder()
		return nil, err
	}
	return &forwardedConn{Conn: c, target: target, podError: podError, stop: sync.OnceFunc(stopForwarder)}, nil
}

// forwardedConn is a connection through a forwarder of its own. When it ends, what the
// kubelet said on the connection's error stream (nothing listens on the port in the pod,
// say) becomes the error of Read.
type forwardedConn struct {
	net.Conn
	target   string
	podError *podErrorRecorder
	stop     func()
}

func (c *forwardedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		if message := c.podError.message(); message != "" {
			return n, fmt.Errorf("%s: %s", c.target, message)
		}
	}
	return n, err
}

func (c *forwardedConn) Close() error {
	err := c.Conn.Close()
	c.stop()
	return err
}

// maxPodError bounds what is kept of an error stream.
const maxPodError = 4096

// podErrorRecorder dials as dialer does and keeps what the kubelet writes on the error
// streams of the connection. client-go's forwarder reads those streams to log what they
// say to stderr; it gets them empty instead, so the error is reported once, by the
// forwarded connection.
type podErrorRecorder struct {
	dialer httpstream.Dialer

	mu   sync.Mutex
	text []byte
}

func (r *podErrorRecorder) Dial(protocols ...string) (httpstream.Connection, string, error) {
	conn, protocol, err := r.dialer.Dial(protocols...)
	if err != nil {
		return nil, "", err
	}
	return &errorRecordingConnection{Connection: conn, recorder: r}, protocol, nil
}

func (r *podErrorRecorder) record(p []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.text = append(r.text, p[:min(len(p), maxPodError-len(r.text))]...)
}

func (r *podErrorRecorder) message() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.TrimSpace(string(r.text))
}

// errorRecordingConnection hands out error streams that record what they carry.
type errorRecordingConnection struct {
	httpstream.Connection
	recorder *podErrorRecorder
}

func (c *errorRecordingConnection) CreateStream(headers http.Header) (httpstream.Stream, error) {
	stream, err := c.Connection.CreateStream(headers)
	if err != nil || headers.Get(corev1.StreamType) != corev1.StreamTypeError {
		return stream, err
	}
	return &recordedErrorStream{Stream: stream, recorder: c.recorder}, nil
}

// recordedErrorStream reads its whole stream into the recorder and returns nothing of it.
type recordedErrorStream struct {
	httpstream.Stream
	recorder *podErrorRecorder
}

func (s *recordedErrorStream) Read(p []byte) (int, error) {
	for {
		n, err := s.Stream.Read(p)
		s.recorder.record(p[:n])
		if err != nil {
			return 0, err
		}
	}
}

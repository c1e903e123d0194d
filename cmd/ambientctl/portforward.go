package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/websocket"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
)

// A port-forward reaches a port on a pod's loopback through the API server, as
// `kubectl port-forward` does, but with the pod's portforward subresource spoken over a
// WebSocket (GET .../pods/NAME/portforward?ports=PORT, subprotocol v4.channel.k8s.io,
// served by the kubelet): client-go's SPDY port-forward needs modules this module does
// not require. The API server authorizes it as create on pods/portforward, kubectl
// port-forward's permission.
//
// The channel protocol: every binary message starts with its channel, 0 for the
// port's data and 1 for its errors; the server starts each channel with the port
// number (2 bytes, little-endian). One WebSocket carries one TCP connection, so the
// admin HTTP client opens one per connection and nothing listens on a local port.

const portForwardProtocol = "v4.channel.k8s.io"

const (
	dataChannel  = 0
	errorChannel = 1
)

// portForward opens connections to one port of one pod.
type portForward struct {
	location  *url.URL
	tlsConfig *tls.Config       // nil for a plain-HTTP API server
	auth      http.RoundTripper // adds the kubeconfig's credentials to a request
	pod       string            // namespace/name, for errors
	port      int32
}

// portForwardDialer dials port of the pod through the API server that cfg names; the
// address it is asked for is ignored.
func portForwardDialer(cfg *rest.Config, namespace, pod string, port int32) (dialFunc, error) {
	base, _, err := rest.DefaultServerUrlFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	location := *base
	location.Path = path.Join("/", base.Path, "api/v1/namespaces", namespace, "pods", pod, "portforward")
	location.RawQuery = url.Values{"ports": {strconv.Itoa(int(port))}}.Encode()
	pf := &portForward{location: &location, pod: namespace + "/" + pod, port: port}
	switch location.Scheme {
	case "https":
		location.Scheme = "wss"
		if pf.tlsConfig, err = rest.TLSConfigFor(cfg); err != nil {
			return nil, fmt.Errorf("kubeconfig: %w", err)
		}
		if pf.tlsConfig == nil {
			pf.tlsConfig = &tls.Config{} // the system's roots
		}
		pf.tlsConfig.NextProtos = []string{"http/1.1"} // the WebSocket handshake is HTTP/1.1
	case "http":
		location.Scheme = "ws"
	default:
		return nil, fmt.Errorf("kubeconfig: server %s: want https or http", base)
	}
	// The credentials (a token, an exec plugin's, impersonation) are what the kubeconfig's
	// transport wrappers add to a request; they are read per connection, so that a
	// plugin's refreshed token is used.
	if pf.auth, err = rest.HTTPWrappersForConfig(cfg, headerRecorder{}); err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	return func(ctx context.Context, _, _ string) (net.Conn, error) {
		c, err := pf.dial(ctx)
		if err != nil {
			return nil, fmt.Errorf("port-forward to pod %s port %d through the API server: %w", pf.pod, pf.port, err)
		}
		return c, nil
	}, nil
}

// headerRecorder answers every request with its own headers.
type headerRecorder struct{}

func (headerRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: http.StatusOK, Header: req.Header, Body: http.NoBody, Request: req}, nil
}

func (pf *portForward) header() (http.Header, error) {
	req, err := http.NewRequest(http.MethodGet, pf.location.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := pf.auth.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	return resp.Header, nil
}

func (pf *portForward) dial(ctx context.Context) (net.Conn, error) {
	header, err := pf.header()
	if err != nil {
		return nil, err
	}
	var raw net.Conn
	if pf.tlsConfig != nil {
		raw, err = (&tls.Dialer{Config: pf.tlsConfig}).DialContext(ctx, "tcp", hostPort(pf.location))
	} else {
		raw, err = (&net.Dialer{}).DialContext(ctx, "tcp", hostPort(pf.location))
	}
	if err != nil {
		return nil, err
	}
	deadline, _ := ctx.Deadline() // the handshake blocks: bound it by the request's deadline
	if err := raw.SetDeadline(deadline); err != nil {
		raw.Close()
		return nil, err
	}
	config, err := websocket.NewConfig(pf.location.String(), "http://localhost")
	if err != nil {
		raw.Close()
		return nil, err
	}
	config.Protocol = []string{portForwardProtocol}
	config.Header = header
	rec := &handshakeRecorder{Conn: raw}
	ws, err := websocket.NewClient(config, rec)
	if errors.Is(err, websocket.ErrBadStatus) {
		err = refusal(io.MultiReader(bytes.NewReader(rec.read), raw))
	}
	if err == nil {
		err = raw.SetDeadline(time.Time{})
	}
	if err != nil {
		raw.Close()
		return nil, err
	}
	rec.read = nil
	rec.done = true
	return &channelConn{Conn: raw, ws: ws, prefixLeft: [2]int{2, 2}}, nil
}

func hostPort(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	if u.Scheme == "wss" {
		return net.JoinHostPort(u.Hostname(), "443")
	}
	return net.JoinHostPort(u.Hostname(), "80")
}

// handshakeRecorder keeps what is read until the handshake is done, so that a refusal's
// status and message can be read again (the WebSocket library says only "bad status").
type handshakeRecorder struct {
	net.Conn
	read []byte
	done bool
}

func (r *handshakeRecorder) Read(p []byte) (int, error) {
	n, err := r.Conn.Read(p)
	if !r.done {
		r.read = append(r.read, p[:n]...)
	}
	return n, err
}

// refusal is the API server's answer when it did not switch to the WebSocket: its
// status and the message of its Status object (or the start of its body).
func refusal(answer io.Reader) error {
	resp, err := http.ReadResponse(bufio.NewReader(answer), nil)
	if err != nil {
		return fmt.Errorf("reading the API server's refusal: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	var status metav1.Status
	if json.Unmarshal(body, &status) == nil && status.Message != "" {
		return fmt.Errorf("%s: %s", resp.Status, status.Message)
	}
	return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
}

// channelConn is the data channel of a port-forward WebSocket as a connection: reads
// return the data channel's bytes, and what the error channel says becomes the error
// once the WebSocket ends; writes go to the data channel. Addresses and deadlines are
// those of the connection to the API server.
type channelConn struct {
	net.Conn
	ws         *websocket.Conn
	unread     []byte // received on the data channel, not read yet
	prefixLeft [2]int // bytes of each channel's port number still to skip
	errorText  []byte // received on the error channel
}

// maxErrorText bounds what is kept of the error channel.
const maxErrorText = 4096

func (c *channelConn) Read(p []byte) (int, error) {
	for len(c.unread) == 0 {
		var msg []byte
		if err := websocket.Message.Receive(c.ws, &msg); err != nil {
			if len(c.errorText) > 0 {
				return 0, errors.New(string(c.errorText))
			}
			return 0, err
		}
		if len(msg) == 0 {
			continue
		}
		channel, payload := msg[0], msg[1:]
		if channel != dataChannel && channel != errorChannel {
			return 0, fmt.Errorf("port-forward: a message on channel %d: only 0 and 1 exist for one port", channel)
		}
		skip := min(c.prefixLeft[channel], len(payload))
		c.prefixLeft[channel] -= skip
		payload = payload[skip:]
		if channel == errorChannel {
			c.errorText = append(c.errorText, payload[:min(len(payload), maxErrorText-len(c.errorText))]...)
			continue
		}
		c.unread = payload
	}
	n := copy(p, c.unread)
	c.unread = c.unread[n:]
	return n, nil
}

func (c *channelConn) Write(p []byte) (int, error) {
	msg := make([]byte, 1+len(p))
	msg[0] = dataChannel
	copy(msg[1:], p)
	if err := websocket.Message.Send(c.ws, msg); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *channelConn) Close() error { return c.ws.Close() }

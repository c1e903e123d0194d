package hbone

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"testing"
	"time"
)

func TestMTLSEchoAndPeerIdentity(t *testing.T) {
	seen := make(chan *Request, 1)
	e := newEnv(t, envOpts{handler: forwardHandler(seen)})
	c := e.dial(t)
	defer c.Close()

	req := <-seen
	if req.Peer != clientID {
		t.Errorf("handler saw peer %s, want %s", req.Peer, clientID)
	}
	if req.Target != e.upstream {
		t.Errorf("handler saw target %s, want %s", req.Target, e.upstream)
	}
	if c.PeerIdentity() != serverID {
		t.Errorf("client saw server %s, want %s", c.PeerIdentity(), serverID)
	}
	if c.RemoteAddr().String() != e.upstream.String() {
		t.Errorf("RemoteAddr = %s, want target %s", c.RemoteAddr(), e.upstream)
	}

	msg := []byte("hello through the tunnel")
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("echo = %q, want %q", got, msg)
	}
}

func TestHeadersReachHandler(t *testing.T) {
	seen := make(chan *Request, 1)
	e := newEnv(t, envOpts{handler: forwardHandler(seen)})
	d := e.dialReq()
	d.Header = http.Header{
		"Baggage":     {"k8s.namespace.name=shop"},
		"Traceparent": {"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
		"Forwarded":   {"for=10.0.0.9"},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := e.pool.Dial(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := <-seen
	for k, v := range d.Header {
		if got := req.Header.Get(k); got != v[0] {
			t.Errorf("header %s = %q, want %q", k, got, v[0])
		}
	}
}

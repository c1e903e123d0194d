package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// views are the admin endpoint paths ambientctl shows, with the columns of
// their tables.
var views = map[string][]string{
	"workloads":   {"name", "namespace", "addresses", "service_account", "node", "tunnel_protocol", "uid"},
	"services":    {"name", "namespace", "hostname", "addresses", "ports", "endpoints"},
	"policies":    {"name", "namespace", "scope", "action", "rules"},
	"certs":       {"identity", "state", "serial", "notBefore", "notAfter", "renewAt", "pods", "lastError"},
	"connections": {"direction", "pod", "source", "destination", "sourceIdentity", "destinationIdentity", "started", "bytesSent", "bytesReceived"},
	"renew-certs": {"identity", "previousSerial", "serial", "error"},
}

// actions are the views that change something: they POST to another path.
var actions = map[string]string{"renew-certs": "/certs/renew"}

func runZtunnel(args []string, out io.Writer) error {
	if len(args) == 0 || views[args[0]] == nil {
		return fmt.Errorf("ztunnel: want one of workloads, services, policies, certs, connections, renew-certs")
	}
	view := args[0]
	fs, c := newFlagSet("ztunnel "+view, "")
	node := fs.String("node", "", "node whose ztunnel to ask (required)")
	netnsDir := fs.String("netns-dir", "/var/run/netns", "where a node that is a network namespace (the local mesh) is found")
	admin := fs.String("admin-address", "127.0.0.1:15000", "ztunnel's admin address, as seen on the node")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *node == "" {
		return fmt.Errorf("ztunnel %s: --node is required", view)
	}
	method, path := http.MethodGet, "/"+view
	if p, ok := actions[view]; ok {
		method, path = http.MethodPost, p
	}
	body, err := fetchAdmin(*netnsDir, *node, *admin, method, path)
	if err != nil {
		return err
	}
	var items []map[string]any
	if err := json.Unmarshal(body, &items); err != nil {
		return fmt.Errorf("ztunnel on %s: %s is not a JSON list: %w", *node, path, err)
	}
	return write(out, c.output, items, objectTable(items, views[view]))
}

// fetchAdmin sends method path to the ztunnel admin endpoint of node. The admin
// endpoint listens on localhost only: when the node is a network namespace
// here (the local mesh), the connection is opened inside it; when it is
// this host, directly.
func fetchAdmin(netnsDir, node, admin, method, path string) ([]byte, error) {
	dial := dialHere
	nsPath := filepath.Join(netnsDir, node)
	if _, err := os.Stat(nsPath); err == nil {
		dial = dialerIn(nsPath)
	} else if host, _ := os.Hostname(); host != node {
		return nil, fmt.Errorf("node %s is neither a network namespace in %s nor this host (%s): run ambientctl on that node", node, netnsDir, host)
	}
	body, err := adminRequest(dial, admin, method, path)
	if err != nil {
		return nil, fmt.Errorf("ztunnel admin on %s: %w", node, err)
	}
	return body, nil
}

type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

func dialHere(ctx context.Context, network, addr string) (net.Conn, error) {
	return (&net.Dialer{}).DialContext(ctx, network, addr)
}

// dialerIn dials from inside the network namespace at nsPath.
func dialerIn(nsPath string) dialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := inNetns(nsPath, func() (err error) {
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}

// adminRequest sends method path to a proxy's admin endpoint at admin and
// returns the body of a 200 answer.
func adminRequest(dial dialFunc, admin, method, path string) ([]byte, error) {
	timeout := 5 * time.Second
	if method != http.MethodGet {
		timeout = time.Minute // an action waits for the certificate service, once per identity
	}
	c := &http.Client{Timeout: timeout, Transport: &http.Transport{DialContext: dial}}
	req, err := http.NewRequest(method, "http://"+admin+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w (is the proxy running there?)", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s %s: %s: %.500s", method, path, resp.Status, body)
	}
	return body, nil
}

// inNetns runs fn on a thread that entered the network namespace at nsPath;
// sockets fn opens stay in it. The thread returns to its own netns
// afterwards (or is discarded if it cannot).
func inNetns(nsPath string, fn func() error) error {
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			ch <- err
			return
		}
		defer orig.Close()
		target, err := os.Open(nsPath)
		if err != nil {
			ch <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- fmt.Errorf("entering %s: %w (needs root)", nsPath, err)
			return
		}
		ch <- fn()
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
	}()
	return <-ch
}

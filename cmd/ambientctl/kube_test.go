package main

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

const kubeconfigAB = `apiVersion: v1
kind: Config
current-context: a
clusters:
- name: a
  cluster: {server: "https://a.example:6443"}
- name: b
  cluster: {server: "https://b.example:6443"}
users:
- name: u
  user: {token: t}
contexts:
- name: a
  context: {cluster: a, user: u, namespace: shop}
- name: b
  context: {cluster: b, user: u}
`

const kubeconfigC = `apiVersion: v1
kind: Config
current-context: c
clusters:
- name: c
  cluster: {server: "https://c.example:6443"}
users:
- name: u
  user: {token: t}
contexts:
- name: c
  context: {cluster: c, user: u, namespace: ops}
`

// writeKubeconfigs writes the two kubeconfigs above and returns their paths.
func writeKubeconfigs(t *testing.T) (ab, c string) {
	dir := t.TempDir()
	ab, c = filepath.Join(dir, "ab"), filepath.Join(dir, "c")
	for path, text := range map[string]string{ab: kubeconfigAB, c: kubeconfigC} {
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return ab, c
}

// parse parses args as ambientctl would, without running the command.
func parse(t *testing.T, args ...string) (*cobra.Command, *globalFlags, error) {
	t.Helper()
	g := &globalFlags{}
	cmd, rest, err := newRootCommand(g).Find(args)
	if err != nil {
		return nil, nil, err
	}
	return cmd, g, cmd.ParseFlags(rest)
}

func TestKubeconfigFlags(t *testing.T) {
	ab, c := writeKubeconfigs(t)
	cases := []struct {
		name       string
		kubeconfig string // $KUBECONFIG
		args       []string
		server     string
		namespace  string
		err        string
	}{
		{name: "$KUBECONFIG's current context", kubeconfig: ab, args: []string{"status"},
			server: "https://a.example:6443", namespace: "shop"},
		{name: "--context, a context without a namespace", kubeconfig: ab, args: []string{"status", "--context", "b"},
			server: "https://b.example:6443", namespace: "default"},
		{name: "-n after the arguments", kubeconfig: ab, args: []string{"why", "client", "svc/reviews", "-n", "bookinfo"},
			server: "https://a.example:6443", namespace: "bookinfo"},
		{name: "global flags before the command", kubeconfig: ab, args: []string{"--context", "b", "--namespace", "l7", "waypoint", "routes", "waypoint"},
			server: "https://b.example:6443", namespace: "l7"},
		{name: "--kubeconfig wins over $KUBECONFIG", kubeconfig: ab, args: []string{"ztunnel", "certs", "--kubeconfig", c, "--node", "n1"},
			server: "https://c.example:6443", namespace: "ops"},
		{name: "$KUBECONFIG lists files, merged", kubeconfig: ab + string(os.PathListSeparator) + c, args: []string{"status", "--context", "c"},
			server: "https://c.example:6443", namespace: "ops"},
		{name: "an unknown context", kubeconfig: ab, args: []string{"status", "--context", "nope"},
			err: `kubeconfig: context "nope" does not exist`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("KUBECONFIG", tc.kubeconfig)
			_, g, err := parse(t, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := g.restConfig()
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			ns, err := g.currentNamespace()
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Host != tc.server || ns != tc.namespace {
				t.Errorf("server %s, namespace %s; want %s, %s", cfg.Host, ns, tc.server, tc.namespace)
			}
		})
	}
}

// TestZtunnelAdminPaths runs the ztunnel commands up to where they would need a
// cluster: --via address against a fake admin endpoint, and the flag errors.
func TestZtunnelAdminPaths(t *testing.T) {
	admin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/certs" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, `[{"identity":"spiffe://cluster.local/ns/shop/sa/client","state":"valid","serial":"0a1b"}]`)
	}))
	defer admin.Close()
	addr := admin.Listener.Addr().String()
	cases := []struct {
		args []string
		out  string // in the output, or
		err  string // the error
	}{
		{args: []string{"ztunnel", "certs", "--admin-address", addr, "-o", "json"}, out: `"serial": "0a1b"`},
		{args: []string{"ztunnel", "certs", "--via", "address", "--admin-address", addr}, out: "spiffe://cluster.local/ns/shop/sa/client   valid   0a1b"},
		{args: []string{"ztunnel", "certs", "--via", "ssh"}, err: `--via "ssh": want one of port-forward, netns, address`},
		{args: []string{"ztunnel", "certs", "--via", "netns", "--admin-address", addr}, err: "--admin-address is for --via address, not --via netns"},
		{args: []string{"ztunnel", "certs", "--via", "netns", "--node", "n9", "--netns-dir", t.TempDir()}, err: "node n9 is not a network namespace here"},
		{args: []string{"ztunnel", "certs", "--via", "netns", "--pod", "ztunnel-a"}, err: "--pod is for --via port-forward"},
		{args: []string{"ztunnel", "certs", "--admin-address", addr, "--node", "n1"}, err: "--node is not for --via address"},
		{args: []string{"ztunnel", "certs"}, err: "--node NODE or --pod POD is required"},
		{args: []string{"ztunnel", "cert", "--node", "n1"}, err: `unknown command "cert" for "ambientctl ztunnel"`},
		{args: []string{"ztunnel", "renew-certs", "--admin-address", addr, "-o", "xml"}, err: `-o "xml": want table, json, yaml`},
		{args: []string{"waypoint", "routes", "--via", "netns"}, err: `waypoint routes: want exactly one waypoint name, got []`},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var out bytes.Buffer
			err := run(tc.args, &out)
			if tc.err != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q...", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out.String(), tc.out) {
				t.Errorf("output lacks %q:\n%s", tc.out, out.String())
			}
		})
	}
}

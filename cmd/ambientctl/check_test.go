package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func fakeHost(t *testing.T, confs map[string]string, tools ...string) host {
	t.Helper()
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "proc/self/ns"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "proc/self/ns/net"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if confs != nil {
		dir := filepath.Join(root, "etc/cni/net.d")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, body := range confs {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return host{root: root, confDir: "/etc/cni/net.d", euid: 0, lookPath: func(name string) (string, error) {
		for _, tool := range tools {
			if tool == name {
				return "/usr/sbin/" + name, nil
			}
		}
		return "", errors.New("not found")
	}}
}

func byName(checks []Check) map[string]Check {
	out := map[string]Check{}
	for _, c := range checks {
		out[c.Name] = c
	}
	return out
}

func TestChecksHealthyNode(t *testing.T) {
	h := fakeHost(t, map[string]string{"10-bridge.conflist": `{"plugins":[{"type":"bridge"}]}`}, "iptables")
	for _, c := range runChecks(h) {
		if c.Status != statusOK {
			t.Errorf("%s: %s (%s), want ok", c.Name, c.Status, c.Detail)
		}
	}
}

func TestChecksFindProblems(t *testing.T) {
	cases := []struct {
		name       string
		confs      map[string]string
		tools      []string
		check      string
		status     string
		detailHint string
	}{
		{"no firewall tool", map[string]string{"10.conflist": "{}"}, nil, "redirection tools", statusFail, "neither iptables nor nft"},
		{"nft only is fine", map[string]string{"10.conflist": "{}"}, []string{"nft"}, "redirection tools", statusOK, "nft"},
		{"no conf dir", nil, []string{"iptables"}, "CNI conf dir", statusFail, "/etc/cni/net.d"},
		{"empty conf dir", map[string]string{}, []string{"iptables"}, "CNI conf dir", statusWarn, "no .conf/.conflist"},
		{"istio-cni by content", map[string]string{"10-calico.conflist": `{"plugins":[{"type":"calico"},{"type":"istio-cni"}]}`}, []string{"iptables"}, "conflicting meshes", statusFail, "Istio (istio-cni in 10-calico.conflist)"},
		{"cilium by name", map[string]string{"05-cilium.conflist": `{}`}, []string{"iptables"}, "conflicting meshes", statusFail, "Cilium"},
		{"linkerd", map[string]string{"10.conflist": `{"plugins":[{"type":"linkerd-cni"}]}`}, []string{"iptables"}, "conflicting meshes", statusFail, "Linkerd"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := byName(runChecks(fakeHost(t, tc.confs, tc.tools...)))[tc.check]
			if got.Status != tc.status || !strings.Contains(got.Detail, tc.detailHint) {
				t.Errorf("%s = %s (%q), want %s mentioning %q", tc.check, got.Status, got.Detail, tc.status, tc.detailHint)
			}
		})
	}
}

func TestCheckNotRootWarns(t *testing.T) {
	h := fakeHost(t, map[string]string{"10.conflist": "{}"}, "iptables")
	h.euid = 1000
	if c := checkRoot(h); c.Status != statusWarn {
		t.Errorf("not root: %s, want warn", c.Status)
	}
}

func TestCheckNoNetns(t *testing.T) {
	h := fakeHost(t, nil)
	_ = os.Remove(filepath.Join(h.root, "proc/self/ns/net"))
	if c := checkNetns(h); c.Status != statusFail {
		t.Errorf("no /proc/self/ns/net: %s, want fail", c.Status)
	}
}

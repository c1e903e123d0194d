package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestParseStat(t *testing.T) {
	tests := []struct {
		stat   string
		want   procStatus
		wantOK bool
	}{
		{"1234 (kubelet) S 1 1234 1234 0 -1", procStatus{state: "S", ppid: 1}, true},
		// The command name may hold spaces and parentheses.
		{"77 (a) b (c) Z 42 77 77 0 -1", procStatus{state: "Z", ppid: 42}, true},
		{"77 (truncated", procStatus{}, false},
		{"77 (x) R", procStatus{}, false},
		{"77 (x) R notanumber", procStatus{}, false},
	}
	for _, tt := range tests {
		got, ok := parseStat(tt.stat)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("parseStat(%q) = %+v, %v; want %+v, %v", tt.stat, got, ok, tt.want, tt.wantOK)
		}
	}
}

func TestParseMountinfo(t *testing.T) {
	tests := []struct {
		line             string
		mountPoint, kind string
		ok               bool
	}{
		{"35 25 0:30 / /sys/fs/cgroup/memory rw,relatime shared:12 - cgroup cgroup rw,memory", "/sys/fs/cgroup/memory", "cgroup", true},
		{"40 25 0:35 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw", "/sys/fs/cgroup/unified", "cgroup2", true},
		{"22 1 8:1 / / rw,relatime - ext4 /dev/vda rw", "/", "ext4", true},
		{"garbage", "", "", false},
		{"1 2 3 4 5 6 -", "", "", false},
	}
	for _, tt := range tests {
		mountPoint, kind, ok := parseMountinfo(tt.line)
		if mountPoint != tt.mountPoint || kind != tt.kind || ok != tt.ok {
			t.Errorf("parseMountinfo(%q) = %q %q %v; want %q %q %v", tt.line, mountPoint, kind, ok, tt.mountPoint, tt.kind, tt.ok)
		}
	}
}

func TestTopmostMissing(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := map[string]string{
		filepath.Join(dir, "etc"):                 "",
		filepath.Join(dir, "etc", "cni", "net.d"): filepath.Join(dir, "etc", "cni"),
		filepath.Join(dir, "opt", "cni", "bin"):   filepath.Join(dir, "opt"),
	}
	for p, want := range tests {
		if got := topmostMissing(p); got != want {
			t.Errorf("topmostMissing(%s) = %q, want %q", p, got, want)
		}
	}
}

// down removes the mount points it created, but never a file someone
// else put there.
func TestRemoveEmptyTree(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "cni")
	if err := os.MkdirAll(filepath.Join(empty, "net.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := removeEmptyTree(empty); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(empty); !os.IsNotExist(err) {
		t.Errorf("%s still exists: %v", empty, err)
	}

	used := filepath.Join(dir, "opt")
	if err := os.MkdirAll(filepath.Join(used, "cni", "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(used, "cni", "bin", "bridge"), []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := removeEmptyTree(used); err == nil {
		t.Error("removeEmptyTree removed a directory holding a file")
	}
	if _, err := os.Stat(filepath.Join(used, "cni", "bin", "bridge")); err != nil {
		t.Errorf("the file is gone: %v", err)
	}
	if err := removeEmptyTree(filepath.Join(dir, "never-created")); err != nil {
		t.Errorf("a missing directory: %v", err)
	}
}

func TestParsePodLines(t *testing.T) {
	pods, err := parsePodLines("smoke-a amc-node1 10.78.1.2\nsmoke-b amc-node2 10.78.2.2\n")
	if err != nil {
		t.Fatal(err)
	}
	if len(pods) != 2 || pods[1] != (smokePod{name: "smoke-b", node: "amc-node2", ip: "10.78.2.2"}) {
		t.Errorf("pods = %+v", pods)
	}
	if nodes := podNodes(append(pods, smokePod{"smoke-c", "amc-node1", "10.78.1.3"})); len(nodes) != 2 {
		t.Errorf("podNodes = %v, want the two nodes", nodes)
	}
	// A pod without an IP yet is a malformed line, not a pass.
	if _, err := parsePodLines("smoke-a amc-node1\n"); err == nil {
		t.Error("a line without an IP was accepted")
	}
}

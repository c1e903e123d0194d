package conflist

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/ambientmesh/ambient-operator/internal/testwait"
)

var update = flag.Bool("update", false, "rewrite golden files")

func entry() map[string]any {
	return map[string]any{"type": "ambient-cni", "agentSocket": "/var/run/ambientmesh/cni/agent.sock"}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("%s:\n%s\nwant:\n%s", name, got, want)
	}
}

func TestInsertAndRemoveGolden(t *testing.T) {
	for _, in := range []string{"10-bridge.conflist", "10-bridge.conf"} {
		t.Run(in, func(t *testing.T) {
			orig, err := os.ReadFile(filepath.Join("testdata", in))
			if err != nil {
				t.Fatal(err)
			}
			inserted, err := Insert(orig, entry())
			if err != nil {
				t.Fatal(err)
			}
			golden(t, in+".inserted.golden", inserted)
			again, err := Insert(inserted, entry())
			if err != nil || string(again) != string(inserted) {
				t.Fatalf("inserting twice changed the config:\n%s", again)
			}
			removed, err := Remove(inserted, "ambient-cni")
			if err != nil {
				t.Fatal(err)
			}
			golden(t, in+".removed.golden", removed)
			if Contains(removed, "ambient-cni") || !Contains(inserted, "ambient-cni") {
				t.Fatal("Contains disagrees with Insert/Remove")
			}
		})
	}
}

func TestInsertRejectsBadConfig(t *testing.T) {
	for name, cfg := range map[string]string{
		"not json":         `plugins:`,
		"plugins not list": `{"plugins": {"type": "bridge"}}`,
		"no type":          `{"name": "x"}`,
	} {
		if _, err := Insert([]byte(cfg), entry()); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := Insert([]byte(`{"type":"bridge"}`), map[string]any{}); err == nil {
		t.Error("entry without type accepted")
	}
}

func TestPrimaryIsFirstByName(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"99-other.conflist", "20-b.conf", "notes.txt", ".hidden.conflist"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("{}"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := Primary(dir)
	if err != nil || filepath.Base(got) != "20-b.conf" {
		t.Fatalf("Primary = %q, %v", got, err)
	}
}

func readJSONFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The installer must survive the primary CNI writing its config late and
// rewriting it (dropping our entry), convert a .conf, and uninstall cleanly.
func TestInstallerFollowsThePrimaryCNI(t *testing.T) {
	confDir, binDir := t.TempDir(), t.TempDir()
	src := filepath.Join(t.TempDir(), "ambient-cni")
	if err := os.WriteFile(src, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	inst := &Installer{BinarySource: src, BinDir: binDir, ConfDir: confDir, Entry: entry(), Log: testr.New(t)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- inst.Run(ctx) }()
	defer func() { cancel(); <-done }()

	testwait.For(t, "the binary", 5*time.Second, func() bool { _, err := os.Stat(filepath.Join(binDir, "ambient-cni")); return err == nil })
	if inst.Installed() {
		t.Fatal("Installed() before any primary config exists")
	}

	orig, _ := os.ReadFile("testdata/10-bridge.conf")
	if err := os.WriteFile(filepath.Join(confDir, "10-bridge.conf"), orig, 0o644); err != nil {
		t.Fatal(err)
	}
	list := filepath.Join(confDir, "10-bridge.conflist")
	testwait.For(t, "the .conf converted to a .conflist with our entry", 5*time.Second, func() bool {
		b, err := os.ReadFile(list)
		_, confErr := os.Stat(filepath.Join(confDir, "10-bridge.conf"))
		return err == nil && Contains(b, "ambient-cni") && os.IsNotExist(confErr) && inst.Installed()
	})

	// The primary CNI rewrites its config without us.
	plain, _ := os.ReadFile("testdata/10-bridge.conflist")
	if err := os.WriteFile(list, plain, 0o644); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "our entry re-inserted", 5*time.Second, func() bool { return Contains(readJSONFile(t, list), "ambient-cni") })

	cancel()
	<-done
	done <- nil
	if err := inst.Uninstall(); err != nil {
		t.Fatal(err)
	}
	if Contains(readJSONFile(t, list), "ambient-cni") {
		t.Fatal("entry still present after Uninstall")
	}
	if _, err := os.Stat(filepath.Join(binDir, "ambient-cni")); !os.IsNotExist(err) {
		t.Fatalf("binary still present after Uninstall: %v", err)
	}
	left, _ := filepath.Glob(filepath.Join(confDir, ".*"))
	if len(left) > 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

package main

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// layerFile is an entry of a layer as read back.
type layerFile struct {
	hdr  *tar.Header
	data []byte
}

// readLayer reads a layer's (uncompressed) entries by name.
func readLayer(t *testing.T, layer v1.Layer) map[string]layerFile {
	t.Helper()
	rc, err := layer.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	files := map[string]layerFile{}
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[hdr.Name] = layerFile{hdr: hdr, data: data}
	}
}

// readImageTarball reads a tarball writeImage wrote: its one image and the
// tags it is named by.
func readImageTarball(t *testing.T, opener tarball.Opener) (v1.Image, []string) {
	t.Helper()
	manifest, err := tarball.LoadManifest(opener)
	if err != nil {
		t.Fatal(err)
	}
	if len(manifest) != 1 {
		t.Fatalf("the tarball holds %d images, want 1", len(manifest))
	}
	img, err := tarball.Image(opener, nil)
	if err != nil {
		t.Fatal(err)
	}
	return img, manifest[0].RepoTags
}

func bytesOpener(data []byte) tarball.Opener {
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }
}

func writeFakeBinary(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o755); err != nil {
		t.Fatal(err)
	}
}

// The image is what a distroless static stage with a COPY, USER and
// ENTRYPOINT would be, named as `ctr images import` reads it, and the same
// inputs give the same bytes.
func TestWriteImage(t *testing.T) {
	binary := filepath.Join(t.TempDir(), "app")
	writeFakeBinary(t, binary, "\x7fELF pretend binary")
	spec := imageSpec{Ref: "localhost/ambient-cluster/smokeapp:v1", BinaryPath: binary, Entrypoint: "/smokeapp", User: "65532:65532"}
	var out bytes.Buffer
	if err := writeImage(&out, spec, "arm64"); err != nil {
		t.Fatal(err)
	}
	img, tags := readImageTarball(t, bytesOpener(out.Bytes()))
	if !slices.Equal(tags, []string{spec.Ref}) {
		t.Errorf("RepoTags %v, want [%s]", tags, spec.Ref)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.OS != "linux" || cfg.Architecture != "arm64" {
		t.Errorf("platform %s/%s, want linux/arm64", cfg.OS, cfg.Architecture)
	}
	if !slices.Equal(cfg.Config.Entrypoint, []string{"/smokeapp"}) || cfg.Config.User != "65532:65532" {
		t.Errorf("config: entrypoint %v user %q", cfg.Config.Entrypoint, cfg.Config.User)
	}
	if !slices.Equal(cfg.Config.Env, []string{distrolessPath}) {
		t.Errorf("env %v, want [%s]", cfg.Config.Env, distrolessPath)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 2 || len(cfg.RootFS.DiffIDs) != 2 {
		t.Fatalf("%d layers, %d diff IDs; want 2 and 2 (base, binaries)", len(layers), len(cfg.RootFS.DiffIDs))
	}
	checkBaseLayer(t, readLayer(t, layers[0]))
	top := readLayer(t, layers[1])
	app, ok := top["smokeapp"]
	if len(top) != 1 || !ok || string(app.data) != "\x7fELF pretend binary" {
		t.Errorf("binary layer holds %d entries, want only smokeapp with the binary", len(top))
	}
	if ok && (app.hdr.Mode != 0o755 || app.hdr.Uid != 0 || app.hdr.Gid != 0) {
		t.Errorf("smokeapp: mode %o owner %d:%d, want 755 0:0", app.hdr.Mode, app.hdr.Uid, app.hdr.Gid)
	}

	var again bytes.Buffer
	if err := writeImage(&again, spec, "arm64"); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), again.Bytes()) {
		t.Error("two writes of the same image differ")
	}
}

// checkBaseLayer checks the distroless-like base: the three users, their
// groups, their homes and a world-writable sticky /tmp.
func checkBaseLayer(t *testing.T, base map[string]layerFile) {
	t.Helper()
	passwd := strings.Split(string(base["etc/passwd"].data), "\n")
	for _, user := range []string{"root:x:0:0:", "nobody:x:65534:65534:", "nonroot:x:65532:65532:"} {
		if !slices.ContainsFunc(passwd, func(line string) bool { return strings.HasPrefix(line, user) }) {
			t.Errorf("/etc/passwd lacks %s", user)
		}
	}
	for _, group := range []string{"root:x:0:", "nobody:x:65534:", "nonroot:x:65532:"} {
		if !slices.Contains(strings.Split(string(base["etc/group"].data), "\n"), group) {
			t.Errorf("/etc/group lacks %s", group)
		}
	}
	dirs := map[string]struct {
		mode     int64
		uid, gid int
	}{
		"tmp/":          {0o1777, 0, 0},
		"home/nonroot/": {0o700, 65532, 65532},
		"root/":         {0o700, 0, 0},
	}
	for dir, want := range dirs {
		got, ok := base[dir]
		if !ok || got.hdr.Typeflag != tar.TypeDir || got.hdr.Mode != want.mode || got.hdr.Uid != want.uid || got.hdr.Gid != want.gid {
			t.Errorf("/%s missing or not a directory with mode %o owned by %d:%d", dir, want.mode, want.uid, want.gid)
		}
	}
}

// Files at nested paths get their directories; two files at one path and a
// relative entrypoint are refused.
func TestWriteImageFiles(t *testing.T) {
	dir := t.TempDir()
	agent, plugin := filepath.Join(dir, "agent"), filepath.Join(dir, "plugin")
	writeFakeBinary(t, agent, "agent")
	writeFakeBinary(t, plugin, "plugin")
	spec := imageSpec{
		Ref: "example.test/agent:1", BinaryPath: agent, Entrypoint: "/usr/bin/agent", EntrypointArgs: []string{"--flag"},
		Files: []imageFile{{Source: plugin, Path: "/opt/cni/bin/plugin"}},
	}
	var out bytes.Buffer
	if err := writeImage(&out, spec, "amd64"); err != nil {
		t.Fatal(err)
	}
	img, _ := readImageTarball(t, bytesOpener(out.Bytes()))
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.Config.Entrypoint, []string{"/usr/bin/agent", "--flag"}) || cfg.Config.User != "" {
		t.Errorf("config: entrypoint %v user %q; want [/usr/bin/agent --flag] and root", cfg.Config.Entrypoint, cfg.Config.User)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	top := readLayer(t, layers[len(layers)-1])
	var names []string
	for n := range top {
		names = append(names, n)
	}
	slices.Sort(names)
	want := []string{"opt/", "opt/cni/", "opt/cni/bin/", "opt/cni/bin/plugin", "usr/", "usr/bin/", "usr/bin/agent"}
	if !slices.Equal(names, want) {
		t.Errorf("binary layer %v, want %v", names, want)
	}

	for label, bad := range map[string]imageSpec{
		"relative entrypoint": {Ref: "example.test/a:1", BinaryPath: agent, Entrypoint: "agent"},
		"two files at a path": {Ref: "example.test/a:1", BinaryPath: agent, Entrypoint: "/a", Files: []imageFile{{Source: plugin, Path: "/a"}}},
		"missing binary":      {Ref: "example.test/a:1", BinaryPath: filepath.Join(dir, "none"), Entrypoint: "/a"},
		"bad reference":       {Ref: "Example.test/A B:1", BinaryPath: agent, Entrypoint: "/a"},
	} {
		if err := writeImage(io.Discard, bad, "amd64"); err == nil {
			t.Errorf("%s: no error", label)
		}
	}
}

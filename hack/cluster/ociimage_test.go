package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// readLayout reads an OCI layout tarball into a map of file name to content.
func readLayout(t *testing.T, data []byte) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Typeflag == tar.TypeReg {
			content, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			files[hdr.Name] = content
		}
	}
}

// blob returns the blob a descriptor names, checking its digest and size.
func blob(t *testing.T, files map[string][]byte, d descriptor) []byte {
	t.Helper()
	data, ok := files["blobs/sha256/"+strings.TrimPrefix(d.Digest, "sha256:")]
	if !ok {
		t.Fatalf("no blob %s", d.Digest)
	}
	if digestOf(data) != d.Digest || int64(len(data)) != d.Size {
		t.Fatalf("blob %s: digest %s size %d, descriptor says size %d", d.Digest, digestOf(data), len(data), d.Size)
	}
	return data
}

// The image is what a FROM scratch + COPY + ENTRYPOINT stage would be, and
// every reference in the layout resolves to a blob with that digest.
func TestWriteImage(t *testing.T) {
	binary := filepath.Join(t.TempDir(), "app")
	if err := os.WriteFile(binary, []byte("\x7fELF pretend binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	spec := imageSpec{Ref: "localhost/ambient-cluster/smokeapp:v1", BinaryPath: binary, Entrypoint: "/smokeapp", User: "65532:65532"}
	var out bytes.Buffer
	if err := writeImage(&out, spec, "amd64"); err != nil {
		t.Fatal(err)
	}
	files := readLayout(t, out.Bytes())
	if string(files["oci-layout"]) != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout = %q", files["oci-layout"])
	}
	var idx index
	if err := json.Unmarshal(files["index.json"], &idx); err != nil {
		t.Fatal(err)
	}
	if len(idx.Manifests) != 1 {
		t.Fatalf("index has %d manifests, want 1", len(idx.Manifests))
	}
	entry := idx.Manifests[0]
	if entry.Annotations[annotationContainerdName] != spec.Ref || entry.Annotations[annotationRefName] != "v1" {
		t.Errorf("index annotations %v: want the reference %s and tag v1", entry.Annotations, spec.Ref)
	}
	if entry.Platform == nil || *entry.Platform != (platform{Architecture: "amd64", OS: "linux"}) {
		t.Errorf("platform %v, want linux/amd64", entry.Platform)
	}
	var man manifest
	if err := json.Unmarshal(blob(t, files, entry), &man); err != nil {
		t.Fatal(err)
	}
	var cfg imageConfig
	if err := json.Unmarshal(blob(t, files, man.Config), &cfg); err != nil {
		t.Fatal(err)
	}
	if len(cfg.Config.Entrypoint) != 1 || cfg.Config.Entrypoint[0] != "/smokeapp" || cfg.Config.User != "65532:65532" {
		t.Errorf("config: entrypoint %v user %q", cfg.Config.Entrypoint, cfg.Config.User)
	}
	if len(man.Layers) != 1 || len(cfg.RootFS.DiffIDs) != 1 {
		t.Fatalf("%d layers, %d diff IDs; want 1 and 1", len(man.Layers), len(cfg.RootFS.DiffIDs))
	}
	layer := blob(t, files, man.Layers[0])
	if cfg.RootFS.DiffIDs[0] != digestOf(layer) {
		t.Errorf("diff ID %s is not the digest of the uncompressed layer %s", cfg.RootFS.DiffIDs[0], digestOf(layer))
	}
	layerFiles := readLayout(t, layer)
	if string(layerFiles["smokeapp"]) != "\x7fELF pretend binary" || len(layerFiles) != 1 {
		t.Errorf("layer holds %d files, want only smokeapp with the binary", len(layerFiles))
	}
	tr := tar.NewReader(bytes.NewReader(layer))
	if hdr, err := tr.Next(); err != nil || hdr.Mode != 0o755 {
		t.Errorf("smokeapp in the layer: %v, mode %o; want executable", err, hdr.Mode)
	}

	// The same inputs give the same bytes: no timestamps.
	var again bytes.Buffer
	if err := writeImage(&again, spec, "amd64"); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), again.Bytes()) {
		t.Error("two writes of the same image differ")
	}
}

func TestImageTag(t *testing.T) {
	tests := map[string]string{
		"localhost/ambient-cluster/pause:v1": "v1",
		"localhost:5000/app":                 "latest",
		"localhost:5000/app:1.2":             "1.2",
		"app":                                "latest",
		"app:":                               "latest",
	}
	for ref, want := range tests {
		if got := imageTag(ref); got != want {
			t.Errorf("imageTag(%q) = %q, want %q", ref, got, want)
		}
	}
}

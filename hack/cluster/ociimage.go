package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// imageSpec is an image like a Dockerfile stage FROM
// gcr.io/distroless/static that COPYs static binaries and has an
// ENTRYPOINT and a USER: a small distroless-like base layer (baseLayerFiles),
// then one layer with the binaries.
type imageSpec struct {
	Ref string // e.g. localhost/ambient-cluster/pause:v1
	// BinaryPath is the binary copied to Entrypoint; empty when Files
	// already hold every file (as for images derived from the Dockerfile).
	BinaryPath string
	Entrypoint string // the program the image runs, e.g. /pause
	User       string // e.g. 65532:65532; empty for root
	// EntrypointArgs follow Entrypoint in the config's Entrypoint.
	EntrypointArgs []string
	// Files are more files in the layer, e.g. a CNI plugin next to its agent.
	Files []imageFile
}

// imageFile is a file copied into an image, with its permissions.
type imageFile struct {
	Source string // on this machine
	Path   string // absolute, in the image
}

// distrolessPath is the PATH gcr.io/distroless/static sets.
const distrolessPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// The users and groups the distroless images have. A binary may look its
// user up (os/user reads /etc/passwd) or need a home directory.
const (
	etcPasswd = "root:x:0:0:root:/root:/sbin/nologin\n" +
		"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n" +
		"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
	etcGroup = "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n"
)

// layerEntry is a file or directory of a layer. Every entry has a zero
// timestamp so that the same inputs give the same image.
type layerEntry struct {
	path     string // relative to /; directories end in /
	mode     int64
	uid, gid int
	data     []byte
}

// baseLayerFiles stands in for gcr.io/distroless/static, which cannot be
// pulled here: the users, root's and nonroot's homes, and a /tmp anyone may
// write to (sticky, like the real one).
func baseLayerFiles() []layerEntry {
	return []layerEntry{
		{path: "etc/", mode: 0o755},
		{path: "etc/group", mode: 0o644, data: []byte(etcGroup)},
		{path: "etc/passwd", mode: 0o644, data: []byte(etcPasswd)},
		{path: "home/", mode: 0o755},
		{path: "home/nonroot/", mode: 0o700, uid: 65532, gid: 65532},
		{path: "root/", mode: 0o700},
		{path: "tmp/", mode: 0o1777},
	}
}

// writeImage writes spec as a docker image tarball (`docker save` format)
// for linux on the CPU architecture arch (a GOARCH, which is also OCI's name
// for it). `ctr images import` (containerd 1.6) names the image by the
// tarball's RepoTags, normalized, and takes its platform from the config;
// writeImageFile writes one for this machine. The output depends only on
// the inputs: every timestamp is zero.
func writeImage(w io.Writer, spec imageSpec, arch string) error {
	tag, err := name.NewTag(spec.Ref)
	if err != nil {
		return err
	}
	img, err := buildImage(spec, arch)
	if err != nil {
		return fmt.Errorf("%s: %w", spec.Ref, err)
	}
	return tarball.Write(tag, img, w)
}

// buildImage is spec's image: the base layer, then the binaries' layer.
func buildImage(spec imageSpec, arch string) (v1.Image, error) {
	if !path.IsAbs(spec.Entrypoint) {
		return nil, fmt.Errorf("entrypoint %q is not an absolute path", spec.Entrypoint)
	}
	base, err := layerOf(baseLayerFiles())
	if err != nil {
		return nil, err
	}
	binaries, err := binaryEntries(spec)
	if err != nil {
		return nil, err
	}
	top, err := layerOf(binaries)
	if err != nil {
		return nil, err
	}
	cfg, err := empty.Image.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.Architecture, cfg.OS = arch, "linux"
	img, err := mutate.ConfigFile(empty.Image, cfg)
	if err != nil {
		return nil, err
	}
	img, err = mutate.Config(img, v1.Config{
		Entrypoint: append([]string{spec.Entrypoint}, spec.EntrypointArgs...),
		User:       spec.User,
		Env:        []string{distrolessPath},
	})
	if err != nil {
		return nil, err
	}
	return mutate.AppendLayers(img, base, top)
}

// binaryEntries are the files of spec's binary layer, each executable and
// owned by root, with the directories above them.
func binaryEntries(spec imageSpec) ([]layerEntry, error) {
	files := spec.Files
	if spec.BinaryPath != "" {
		files = append([]imageFile{{Source: spec.BinaryPath, Path: spec.Entrypoint}}, files...)
	}
	dirs := map[string]bool{}
	var entries []layerEntry
	for _, f := range files {
		if !path.IsAbs(f.Path) || path.Clean(f.Path) != f.Path {
			return nil, fmt.Errorf("image path %q is not a clean absolute path", f.Path)
		}
		data, err := os.ReadFile(f.Source)
		if err != nil {
			return nil, err
		}
		// The source's permissions, as a Dockerfile's COPY keeps them.
		info, err := os.Stat(f.Source)
		if err != nil {
			return nil, err
		}
		rel := strings.TrimPrefix(f.Path, "/")
		if slices.ContainsFunc(entries, func(e layerEntry) bool { return e.path == rel }) {
			return nil, fmt.Errorf("two files at %s", f.Path)
		}
		for dir := path.Dir(rel); dir != "."; dir = path.Dir(dir) {
			dirs[dir+"/"] = true
		}
		entries = append(entries, layerEntry{path: rel, mode: int64(info.Mode().Perm()), data: data})
	}
	for dir := range dirs {
		entries = append(entries, layerEntry{path: dir, mode: 0o755})
	}
	// Sorted, a directory comes before what it holds, and the order is stable.
	slices.SortFunc(entries, func(a, b layerEntry) int { return strings.Compare(a.path, b.path) })
	return entries, nil
}

// layerOf builds a layer in memory from entries (in their order).
func layerOf(entries []layerEntry) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.path, Mode: e.mode, Uid: e.uid, Gid: e.gid, Typeflag: tar.TypeReg, Size: int64(len(e.data))}
		if strings.HasSuffix(e.path, "/") {
			hdr.Typeflag, hdr.Size = tar.TypeDir, 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithCompressedCaching) // compress once, not for the digest and again for the tarball
}

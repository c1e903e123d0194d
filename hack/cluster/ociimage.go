package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
)

// OCI media types and annotations (image-spec v1.1).
const (
	mediaTypeIndex    = "application/vnd.oci.image.index.v1+json"
	mediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaTypeConfig   = "application/vnd.oci.image.config.v1+json"
	mediaTypeLayer    = "application/vnd.oci.image.layer.v1.tar"
	// annotationRefName is the tag of an image in an OCI layout;
	// annotationContainerdName is the full reference `ctr images import` names it by.
	annotationRefName        = "org.opencontainers.image.ref.name"
	annotationContainerdName = "io.containerd.image.name"
)

// imageSpec is a single-layer image of one static binary, like a
// FROM scratch Dockerfile stage with a COPY and an ENTRYPOINT.
type imageSpec struct {
	Ref        string // e.g. localhost/ambient-cluster/pause:v1
	BinaryPath string // where the binary is read from on this machine
	Entrypoint string // where it lives in the image, e.g. /pause
	User       string // e.g. 65532:65532; empty for root
}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *platform         `json:"platform,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

type imageConfig struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	Config       struct {
		Entrypoint []string `json:"Entrypoint"`
		User       string   `json:"User,omitempty"`
		Env        []string `json:"Env"`
	} `json:"config"`
	RootFS struct {
		Type    string   `json:"type"`
		DiffIDs []string `json:"diff_ids"`
	} `json:"rootfs"`
}

type manifest struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Config        descriptor   `json:"config"`
	Layers        []descriptor `json:"layers"`
}

type index struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Manifests     []descriptor `json:"manifests"`
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// imageTag is the tag of a reference (host/path:tag); "latest" without one.
func imageTag(ref string) string {
	lastPart := ref[strings.LastIndex(ref, "/")+1:]
	if _, tag, ok := strings.Cut(lastPart, ":"); ok && tag != "" {
		return tag
	}
	return "latest"
}

// writeImage writes spec as an OCI image layout in a tar stream (what
// `ctr images import` reads) for linux on the CPU architecture arch (a
// GOARCH, which is also OCI's name for it). The output depends only on the
// inputs: every timestamp is zero.
func writeImage(w io.Writer, spec imageSpec, arch string) error {
	binary, err := os.ReadFile(spec.BinaryPath)
	if err != nil {
		return err
	}
	layer, err := layerTar(strings.TrimPrefix(spec.Entrypoint, "/"), binary)
	if err != nil {
		return err
	}
	var cfg imageConfig
	cfg.Architecture, cfg.OS = arch, "linux"
	cfg.Config.Entrypoint = []string{spec.Entrypoint}
	cfg.Config.User = spec.User
	cfg.Config.Env = []string{"PATH=/"}
	cfg.RootFS.Type = "layers"
	// The layer is not compressed, so its digest is also its diff ID.
	cfg.RootFS.DiffIDs = []string{digestOf(layer)}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	man := manifest{
		SchemaVersion: 2,
		MediaType:     mediaTypeManifest,
		Config:        descriptor{MediaType: mediaTypeConfig, Digest: digestOf(cfgJSON), Size: int64(len(cfgJSON))},
		Layers:        []descriptor{{MediaType: mediaTypeLayer, Digest: digestOf(layer), Size: int64(len(layer))}},
	}
	manJSON, err := json.Marshal(man)
	if err != nil {
		return err
	}
	idx := index{SchemaVersion: 2, MediaType: mediaTypeIndex, Manifests: []descriptor{{
		MediaType: mediaTypeManifest, Digest: digestOf(manJSON), Size: int64(len(manJSON)),
		Annotations: map[string]string{annotationContainerdName: spec.Ref, annotationRefName: imageTag(spec.Ref)},
		Platform:    &platform{Architecture: arch, OS: "linux"},
	}}}
	idxJSON, err := json.Marshal(idx)
	if err != nil {
		return err
	}

	files := []layoutFile{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{"index.json", idxJSON},
	}
	for _, blob := range [][]byte{layer, cfgJSON, manJSON} {
		files = append(files, layoutFile{"blobs/sha256/" + strings.TrimPrefix(digestOf(blob), "sha256:"), blob})
	}
	tw := tar.NewWriter(w)
	for _, dir := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755}); err != nil {
			return err
		}
	}
	for _, f := range files {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: 0o644, Size: int64(len(f.data))}); err != nil {
			return err
		}
		if _, err := tw.Write(f.data); err != nil {
			return err
		}
	}
	return tw.Close()
}

// layoutFile is a file of the OCI layout tarball.
type layoutFile struct {
	name string
	data []byte
}

// layerTar is a layer holding one executable at path (relative to /).
func layerTar(path string, binary []byte) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: path, Mode: 0o755, Size: int64(len(binary))}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(binary); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	return buf.Bytes(), nil
}

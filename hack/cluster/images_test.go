package main

import (
	"archive/tar"
	"bufio"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ambientmesh/ambient-operator/internal/versions"
)

const repoDockerfile = "../../Dockerfile"

// declaredStage is what a Dockerfile image stage says, read line by line by
// the test itself (the way the Makefile finds the stages), not by
// parseDockerfile: the oracle the images are checked against.
type declaredStage struct {
	base       string
	files      map[string]string // path in the image → binary name under /out
	user       string
	entrypoint []string
}

var (
	fromLine       = regexp.MustCompile(`^FROM (.* )?(\S+) AS ([a-z0-9-]+)$`)
	copyLine       = regexp.MustCompile(`^COPY --from=build /out/(\S+) (\S+)$`)
	userLine       = regexp.MustCompile(`^USER (\S+)$`)
	entrypointLine = regexp.MustCompile(`^ENTRYPOINT (\[.*\])$`)
)

func declaredStages(t *testing.T, dockerfile string) map[string]*declaredStage {
	t.Helper()
	f, err := os.Open(dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	stages := map[string]*declaredStage{}
	var current *declaredStage
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		line := scanner.Text()
		if m := fromLine.FindStringSubmatch(line); m != nil {
			current = &declaredStage{base: m[2], files: map[string]string{}}
			stages[m[3]] = current
		} else if m := copyLine.FindStringSubmatch(line); m != nil {
			current.files[m[2]] = m[1]
		} else if m := userLine.FindStringSubmatch(line); m != nil {
			current.user = m[1]
		} else if m := entrypointLine.FindStringSubmatch(line); m != nil {
			if err := json.Unmarshal([]byte(m[1]), &current.entrypoint); err != nil {
				t.Fatalf("%s: %v", line, err)
			}
		}
	}
	if err := scanner.Err(); err != nil {
		t.Fatal(err)
	}
	delete(stages, buildStage)
	return stages
}

// expectedRef is the name the rest of the project gives a stage's image:
// the Makefile's IMG for the operator, internal/versions' for a component.
func expectedRef(t *testing.T, stage, tag string) string {
	t.Helper()
	if stage != "operator" {
		return versions.Image(versions.Component(stage), tag)
	}
	makefile, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^IMG\s*\?=\s*(\S+)$`).FindSubmatch(makefile)
	if m == nil {
		t.Fatal("no IMG in the Makefile")
	}
	return strings.NewReplacer("$(REGISTRY)", versions.Registry, "$(IMAGE_TAG)", tag).Replace(string(m[1]))
}

// Every image stage of the repository's Dockerfile becomes an image named
// as the Makefile and internal/versions name it, whose entrypoint, user
// and binaries (paths and content) are exactly what the stage declares.
func TestDockerfileImages(t *testing.T) {
	const tag = "0.1.0"
	declared := declaredStages(t, repoDockerfile)
	binDir := t.TempDir()
	for _, stage := range declared {
		for _, binary := range stage.files {
			writeFakeBinary(t, filepath.Join(binDir, binary), "fake "+binary)
		}
	}
	specs, err := dockerfileImagesFromFile(repoDockerfile, binDir, versions.Registry, tag)
	if err != nil {
		t.Fatal(err)
	}
	built := map[string]v1.Image{}
	outDir := t.TempDir()
	for _, spec := range specs {
		path := filepath.Join(outDir, imageFileName(spec.Ref))
		if err := writeImageFile(path, spec); err != nil {
			t.Fatal(err)
		}
		img, tags := readImageTarball(t, func() (io.ReadCloser, error) { return os.Open(path) })
		if !slices.Equal(tags, []string{spec.Ref}) {
			t.Errorf("%s: RepoTags %v", spec.Ref, tags)
		}
		built[spec.Ref] = img
	}
	if len(built) != len(declared) {
		t.Errorf("%d images for %d image stages", len(built), len(declared))
	}
	for _, c := range []versions.Component{versions.ControlPlane, versions.ZTunnel, versions.CNIAgent, versions.Waypoint} {
		if _, ok := built[versions.Image(c, tag)]; !ok {
			t.Errorf("no image %s for component %s", versions.Image(c, tag), c)
		}
	}
	for name, stage := range declared {
		img, ok := built[expectedRef(t, name, tag)]
		if !ok {
			t.Errorf("stage %s: no image %s", name, expectedRef(t, name, tag))
			continue
		}
		checkStageImage(t, name, stage, img)
	}
}

func checkStageImage(t *testing.T, name string, stage *declaredStage, img v1.Image) {
	t.Helper()
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.Config.Entrypoint, stage.entrypoint) || len(stage.entrypoint) == 0 {
		t.Errorf("%s: entrypoint %v, the stage declares %v", name, cfg.Config.Entrypoint, stage.entrypoint)
	}
	wantUser := stage.user
	if wantUser == "" && strings.HasSuffix(stage.base, ":nonroot") {
		wantUser = "65532" // the base image's own USER
	}
	if cfg.Config.User != wantUser {
		t.Errorf("%s: user %q, the stage declares %q on %s", name, cfg.Config.User, stage.user, stage.base)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	checkBaseLayer(t, readLayer(t, layers[0]))
	got := map[string]string{}
	for path, f := range readLayer(t, layers[len(layers)-1]) {
		if f.hdr.Typeflag == tar.TypeReg {
			got["/"+path] = string(f.data)
		}
	}
	want := map[string]string{}
	for path, binary := range stage.files {
		want[path] = "fake " + binary
	}
	if len(got) != len(want) || len(want) == 0 {
		t.Errorf("%s: files %v, the stage copies %v", name, got, want)
	}
	for path, content := range want {
		if got[path] != content {
			t.Errorf("%s: %s holds %q, want %q", name, path, got[path], content)
		}
	}
}

const testDockerfile = `# syntax=docker/dockerfile:1
ARG GO_VERSION=1
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
RUN go build \
      -o /out/ ./cmd/app ./cmd/tool

# app: continued lines and a default user.
FROM gcr.io/distroless/static:nonroot AS app
COPY --from=build /out/app \
     /usr/bin/app
ENTRYPOINT ["/usr/bin/app", "serve"]

FROM gcr.io/distroless/static:latest AS tool
copy --from=build /out/tool /tool
COPY --from=build /out/app /app
USER 0:0
ENTRYPOINT ["/tool"]
`

func TestParseDockerfile(t *testing.T) {
	specs, err := dockerfileImages(strings.NewReader(testDockerfile), "/bin-dir", "example.test/r", "2")
	if err != nil {
		t.Fatal(err)
	}
	want := []imageSpec{
		{
			Ref: "example.test/r/app:2", Entrypoint: "/usr/bin/app", EntrypointArgs: []string{"serve"}, User: "65532",
			Files: []imageFile{{Source: "/bin-dir/app", Path: "/usr/bin/app"}},
		},
		{
			Ref: "example.test/r/tool:2", Entrypoint: "/tool", EntrypointArgs: []string{}, User: "0:0",
			Files: []imageFile{{Source: "/bin-dir/tool", Path: "/tool"}, {Source: "/bin-dir/app", Path: "/app"}},
		},
	}
	if len(specs) != len(want) {
		t.Fatalf("%d images, want %d: %+v", len(specs), len(want), specs)
	}
	for i := range want {
		got := specs[i]
		if got.Ref != want[i].Ref || got.Entrypoint != want[i].Entrypoint || got.User != want[i].User ||
			!slices.Equal(got.EntrypointArgs, want[i].EntrypointArgs) || !slices.Equal(got.Files, want[i].Files) || got.BinaryPath != "" {
			t.Errorf("image %d:\n got %+v\nwant %+v", i, got, want[i])
		}
	}
}

// What the Dockerfile asks for and an image here could not give is an error.
func TestParseDockerfileRefuses(t *testing.T) {
	const build = "FROM golang AS build\nRUN go build -o /out/ ./...\n"
	const base = "FROM gcr.io/distroless/static AS app\n"
	tests := map[string]string{
		"RUN in an image stage":   base + "RUN true\nENTRYPOINT [\"/a\"]\n",
		"COPY from another stage": base + "COPY --from=other /out/a /a\nENTRYPOINT [\"/a\"]\n",
		"COPY --chown":            base + "COPY --chown=1 --from=build /out/a /a\nENTRYPOINT [\"/a\"]\n",
		"COPY of a directory":     base + "COPY --from=build /out/ /\nENTRYPOINT [\"/a\"]\n",
		"COPY to a relative path": base + "COPY --from=build /out/a a\nENTRYPOINT [\"/a\"]\n",
		"shell-form ENTRYPOINT":   base + "COPY --from=build /out/a /a\nENTRYPOINT /a\n",
		"no ENTRYPOINT":           base + "COPY --from=build /out/a /a\n",
		"another base":            "FROM alpine AS app\nENTRYPOINT [\"/a\"]\n",
		"a stage without a name":  "FROM gcr.io/distroless/static\nENTRYPOINT [\"/a\"]\n",
		"no image stage":          "",
	}
	for label, dockerfile := range tests {
		if _, err := dockerfileImages(strings.NewReader(build+dockerfile), "/bin", "r", "1"); err == nil {
			t.Errorf("%s: no error", label)
		}
	}
}

func TestParseExtraImage(t *testing.T) {
	tests := map[string]imageSpec{
		"localhost/app:v1=/b/app":                     {Ref: "localhost/app:v1", BinaryPath: "/b/app", Entrypoint: "/app"},
		"localhost/app:v1=/b/app:/usr/bin/app":        {Ref: "localhost/app:v1", BinaryPath: "/b/app", Entrypoint: "/usr/bin/app"},
		"localhost/app:v1=/b/app:/app:65532:65532":    {Ref: "localhost/app:v1", BinaryPath: "/b/app", Entrypoint: "/app", User: "65532:65532"},
		"localhost:5000/app:v1=/b/coredns::0:0":       {Ref: "localhost:5000/app:v1", BinaryPath: "/b/coredns", Entrypoint: "/coredns", User: "0:0"},
		"quay.io/jetstack/cert-manager-webhook:v1=/w": {Ref: "quay.io/jetstack/cert-manager-webhook:v1", BinaryPath: "/w", Entrypoint: "/w"},
	}
	for flag, want := range tests {
		got, err := parseExtraImage(flag)
		if err != nil || got.Ref != want.Ref || got.BinaryPath != want.BinaryPath || got.Entrypoint != want.Entrypoint || got.User != want.User {
			t.Errorf("%s: %+v, %v; want %+v", flag, got, err, want)
		}
	}
	for _, bad := range []string{"localhost/app:v1", "=/b/app", "localhost/app:v1="} {
		if _, err := parseExtraImage(bad); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

// Without importing, `cluster images` writes one tarball per Dockerfile
// stage and per --extra into the state directory's images/.
func TestImagesWritesTarballs(t *testing.T) {
	declared := declaredStages(t, repoDockerfile)
	binDir, stateDir := t.TempDir(), t.TempDir()
	for _, stage := range declared {
		for _, binary := range stage.files {
			writeFakeBinary(t, filepath.Join(binDir, binary), "fake "+binary)
		}
	}
	extra := filepath.Join(binDir, "smokeapp")
	writeFakeBinary(t, extra, "smokeapp")
	opts := imagesOptions{
		stateDir: stateDir, binDir: binDir, registry: "example.test/mesh", tag: "9.9.9", dockerfile: repoDockerfile,
		extras: stringList{"localhost/extra/app:v1=" + extra + ":/app:65532:65532"},
	}
	if err := images(opts); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(filepath.Join(stateDir, "images"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	want := []string{imageFileName("localhost/extra/app:v1")}
	for name := range declared {
		imageName := name
		if name == "operator" {
			imageName = "ambient-operator"
		}
		want = append(want, imageFileName("example.test/mesh/"+imageName+":9.9.9"))
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("images/ holds %v, want %v", got, want)
	}
}

func TestImageFileName(t *testing.T) {
	if got := imageFileName("ghcr.io/ambientmesh/ztunnel:0.1.0"); got != "ghcr.io_ambientmesh_ztunnel_0.1.0.tar" {
		t.Errorf("imageFileName = %s", got)
	}
}

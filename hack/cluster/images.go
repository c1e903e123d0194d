package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// buildStage is the Dockerfile stage that compiles every binary into
// buildOutputDir; every other stage is an image.
const (
	buildStage     = "build"
	buildOutputDir = "/out/"
)

// stageImageNames are the image names that differ from their stage's: the
// operator's image is the Makefile's IMG, <registry>/ambient-operator.
var stageImageNames = map[string]string{"operator": "ambient-operator"}

// distrolessBase is the base every image stage must have: baseLayerFiles
// stands in for it, and nothing else.
const distrolessBase = "gcr.io/distroless/static"

// dockerfileStage is what an image stage of the Dockerfile declares.
type dockerfileStage struct {
	Name       string
	Base       string // the FROM image
	Copies     []stageCopy
	User       string // empty when the stage has no USER
	Entrypoint []string
}

// stageCopy is a `COPY --from=build /out/<Binary> <Dest>`.
type stageCopy struct {
	Binary string
	Dest   string
}

type imagesOptions struct {
	stateDir, binDir, registry, tag, dockerfile string
	// extras are --extra flags: ref=binary[:entrypoint[:user]].
	extras stringList
	// importImages imports each image into every node; without it the
	// tarballs are only written.
	importImages bool
}

// images writes an image tarball for every image stage of the Dockerfile
// and every extra image into stateDir/images, and imports each into every
// node of the cluster in stateDir.
func images(opts imagesOptions) error {
	specs, err := dockerfileImagesFromFile(opts.dockerfile, opts.binDir, opts.registry, opts.tag)
	if err != nil {
		return err
	}
	for _, extra := range opts.extras {
		spec, err := parseExtraImage(extra)
		if err != nil {
			return err
		}
		specs = append(specs, spec)
	}
	var nodes []Node
	if opts.importImages {
		if nodes, err = runningNodes(opts.stateDir); err != nil {
			return err
		}
	}
	dir := filepath.Join(opts.stateDir, "images")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, spec := range specs {
		if err := writeAndImport(filepath.Join(dir, imageFileName(spec.Ref)), spec, nodes); err != nil {
			return err
		}
	}
	return nil
}

// runningNodes are the nodes of the cluster in stateDir.
func runningNodes(stateDir string) ([]Node, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("importing into the nodes' containerd needs root (--import=false only writes the tarballs)")
	}
	s, err := loadState(stateDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no cluster in %s: run `make cluster-up` first", stateDir)
	}
	if err != nil {
		return nil, err
	}
	var nodes []Node
	for i := range s.Nodes {
		nodes = append(nodes, newNode(stateDir, i+1))
	}
	return nodes, nil
}

func writeAndImport(tarballPath string, spec imageSpec, nodes []Node) error {
	if err := writeImageFile(tarballPath, spec); err != nil {
		return err
	}
	info, err := os.Stat(tarballPath)
	if err != nil {
		return err
	}
	for _, n := range nodes {
		if err := importImage(n, tarballPath); err != nil {
			return fmt.Errorf("%s into %s: %w", spec.Ref, n.Name, err)
		}
	}
	done := fmt.Sprintf("imported into %d node(s)", len(nodes))
	if len(nodes) == 0 {
		done = "not imported"
	}
	fmt.Printf("%s: %s (%.1f MB), %s\n", spec.Ref, tarballPath, float64(info.Size())/1e6, done)
	return nil
}

// imageFileName is the tarball's name for ref: the whole reference, so that
// two registries' images never share a file.
func imageFileName(ref string) string {
	return strings.NewReplacer("/", "_", ":", "_", "@", "_").Replace(ref) + ".tar"
}

// parseExtraImage reads ref=binary[:entrypoint[:user]]. The entrypoint is
// /<binary's name> unless given; without a user the image runs as root, as
// a Dockerfile stage without USER on gcr.io/distroless/static does.
func parseExtraImage(s string) (imageSpec, error) {
	ref, rest, ok := strings.Cut(s, "=")
	if !ok || ref == "" || rest == "" {
		return imageSpec{}, fmt.Errorf("--extra %q: want ref=binary[:entrypoint[:user]]", s)
	}
	parts := strings.SplitN(rest, ":", 3)
	spec := imageSpec{Ref: ref, BinaryPath: absolute(parts[0]), Entrypoint: "/" + filepath.Base(parts[0])}
	if len(parts) > 1 && parts[1] != "" {
		spec.Entrypoint = parts[1]
	}
	if len(parts) > 2 {
		spec.User = parts[2]
	}
	return spec, nil
}

func dockerfileImagesFromFile(dockerfile, binDir, registry, tag string) ([]imageSpec, error) {
	f, err := os.Open(dockerfile)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	specs, err := dockerfileImages(f, binDir, registry, tag)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dockerfile, err)
	}
	return specs, nil
}

// dockerfileImages is the image of every image stage of a Dockerfile, named
// <registry>/<stage>:<tag> (stageImageNames aside), with the binaries of
// binDir, which holds what the build stage writes to /out.
func dockerfileImages(dockerfile io.Reader, binDir, registry, tag string) ([]imageSpec, error) {
	stages, err := parseDockerfile(dockerfile)
	if err != nil {
		return nil, err
	}
	var specs []imageSpec
	for _, s := range stages {
		spec, err := s.imageSpec(binDir, registry, tag)
		if err != nil {
			return nil, fmt.Errorf("stage %s: %w", s.Name, err)
		}
		specs = append(specs, spec)
	}
	return specs, nil
}

func (s dockerfileStage) imageSpec(binDir, registry, tag string) (imageSpec, error) {
	if len(s.Entrypoint) == 0 {
		return imageSpec{}, errors.New("no ENTRYPOINT")
	}
	imageName := s.Name
	if n, ok := stageImageNames[s.Name]; ok {
		imageName = n
	}
	spec := imageSpec{
		Ref:            registry + "/" + imageName + ":" + tag,
		Entrypoint:     s.Entrypoint[0],
		EntrypointArgs: s.Entrypoint[1:],
		User:           s.User,
	}
	if spec.User == "" && strings.HasSuffix(s.Base, ":nonroot") {
		// The user gcr.io/distroless/static:nonroot's config sets.
		spec.User = "65532"
	}
	for _, c := range s.Copies {
		spec.Files = append(spec.Files, imageFile{Source: filepath.Join(binDir, c.Binary), Path: c.Dest})
	}
	return spec, nil
}

// parseDockerfile reads the image stages of a Dockerfile: every stage but
// the build stage, whose instructions it does not read. An image stage may
// hold only what an image made of static binaries needs (COPY from the
// build stage's output, USER, ENTRYPOINT in exec form) on the distroless
// static base; anything else is an error rather than an image that differs
// from what the Dockerfile builds.
func parseDockerfile(r io.Reader) ([]dockerfileStage, error) {
	lines, err := logicalLines(r)
	if err != nil {
		return nil, err
	}
	var stages []dockerfileStage
	var current *dockerfileStage // nil before the first FROM and in the build stage
	for _, line := range lines {
		keyword, args, _ := strings.Cut(line, " ")
		keyword, args = strings.ToUpper(keyword), strings.TrimSpace(args)
		if keyword == "FROM" {
			stage, err := parseFrom(args)
			if err != nil {
				return nil, err
			}
			current = nil
			if stage.Name != buildStage {
				stages = append(stages, stage)
				current = &stages[len(stages)-1]
			}
			continue
		}
		if current == nil {
			continue
		}
		if err := current.apply(keyword, args); err != nil {
			return nil, fmt.Errorf("stage %s: %s: %w", current.Name, line, err)
		}
	}
	if len(stages) == 0 {
		return nil, errors.New("no image stage")
	}
	return stages, nil
}

// logicalLines joins continued lines (ending in \) and drops comments and
// blank lines.
func logicalLines(r io.Reader) ([]string, error) {
	var lines []string
	var pending strings.Builder
	scanner := bufio.NewScanner(r)
	for scanner.Scan() {
		line := strings.TrimSpace(scanner.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if cont, ok := strings.CutSuffix(line, `\`); ok {
			pending.WriteString(cont + " ")
			continue
		}
		pending.WriteString(line)
		lines = append(lines, pending.String())
		pending.Reset()
	}
	if pending.Len() > 0 {
		lines = append(lines, strings.TrimSpace(pending.String()))
	}
	return lines, scanner.Err()
}

// parseFrom reads `FROM [--platform=...] image [AS name]`.
func parseFrom(args string) (dockerfileStage, error) {
	fields := strings.Fields(args)
	for len(fields) > 0 && strings.HasPrefix(fields[0], "--") {
		fields = fields[1:]
	}
	switch {
	case len(fields) == 3 && strings.EqualFold(fields[1], "AS"):
		stage := dockerfileStage{Base: fields[0], Name: fields[2]}
		if stage.Name != buildStage && !strings.HasPrefix(stage.Base, distrolessBase) {
			return stage, fmt.Errorf("stage %s: FROM %s: only %s is supported as a base", stage.Name, stage.Base, distrolessBase)
		}
		return stage, nil
	default:
		return dockerfileStage{}, fmt.Errorf("FROM %s: every stage needs a name (AS name)", args)
	}
}

// apply records an instruction of an image stage.
func (s *dockerfileStage) apply(keyword, args string) error {
	switch keyword {
	case "COPY":
		c, err := parseCopy(args)
		if err != nil {
			return err
		}
		s.Copies = append(s.Copies, c)
	case "USER":
		s.User = args
	case "ENTRYPOINT":
		s.Entrypoint = nil
		if err := json.Unmarshal([]byte(args), &s.Entrypoint); err != nil || len(s.Entrypoint) == 0 {
			return errors.New("only the exec form with a program is supported")
		}
	default:
		return fmt.Errorf("%s is not supported in an image stage", keyword)
	}
	return nil
}

// parseCopy reads `COPY --from=build /out/<file> <dest>`.
func parseCopy(args string) (stageCopy, error) {
	fields := strings.Fields(args)
	if len(fields) != 3 || fields[0] != "--from="+buildStage {
		return stageCopy{}, fmt.Errorf("only COPY --from=%s <one file> <absolute path> is supported", buildStage)
	}
	binary, ok := strings.CutPrefix(fields[1], buildOutputDir)
	if !ok || binary == "" || strings.Contains(binary, "/") {
		return stageCopy{}, fmt.Errorf("%s: only a file of %s is supported", fields[1], buildOutputDir)
	}
	dest := fields[2]
	if !path.IsAbs(dest) || strings.HasSuffix(dest, "/") {
		return stageCopy{}, fmt.Errorf("%s: the destination must be an absolute file path", dest)
	}
	return stageCopy{Binary: binary, Dest: dest}, nil
}

// stringList is a repeatable flag.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(v string) error {
	*l = append(*l, v)
	return nil
}

package deploy

import (
	"bufio"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// dockerfile is the parsed Dockerfile: enough of it to check what a linter
// would (hadolint is not available here) and to rerun its build command.
type dockerfile struct {
	args   map[string]string // ARG defaults, global and build stage
	stages []stage
}

type stage struct {
	name, base string
	copies     []copyInstr
	user       string
	entrypoint string
	runs       []string
}

type copyInstr struct {
	from string // --from stage, "" for the build context
	srcs []string
	dest string
}

// parseDockerfile joins continuation lines and reads the instructions the
// tests need.
func parseDockerfile(t *testing.T, path string) *dockerfile {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	df := &dockerfile{args: map[string]string{}}
	var logical []string
	var cur strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			cur.WriteString(strings.TrimSuffix(line, "\\") + " ")
			continue
		}
		cur.WriteString(line)
		logical = append(logical, cur.String())
		cur.Reset()
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	argRe := regexp.MustCompile(`^ARG ([A-Z_]+)(?:=(.*))?$`)
	for _, l := range logical {
		instr, rest, _ := strings.Cut(l, " ")
		switch strings.ToUpper(instr) {
		case "FROM":
			fields := strings.Fields(rest)
			fields = slices.DeleteFunc(fields, func(s string) bool { return strings.HasPrefix(s, "--") })
			st := stage{base: fields[0]}
			if len(fields) == 3 && strings.EqualFold(fields[1], "AS") {
				st.name = fields[2]
			}
			df.stages = append(df.stages, st)
		case "ARG":
			if m := argRe.FindStringSubmatch(l); m != nil {
				df.args[m[1]] = strings.Trim(m[2], `"`)
			}
		case "COPY":
			var c copyInstr
			fields := strings.Fields(rest)
			for len(fields) > 0 && strings.HasPrefix(fields[0], "--") {
				if v, ok := strings.CutPrefix(fields[0], "--from="); ok {
					c.from = v
				}
				fields = fields[1:]
			}
			c.srcs, c.dest = fields[:len(fields)-1], fields[len(fields)-1]
			df.last(t).copies = append(df.last(t).copies, c)
		case "USER":
			df.last(t).user = rest
		case "ENTRYPOINT":
			df.last(t).entrypoint = rest
		case "RUN":
			df.last(t).runs = append(df.last(t).runs, rest)
		}
	}
	return df
}

func (df *dockerfile) last(t *testing.T) *stage {
	t.Helper()
	if len(df.stages) == 0 {
		t.Fatal("instruction before the first FROM")
	}
	return &df.stages[len(df.stages)-1]
}

func (df *dockerfile) stage(name string) *stage {
	for i := range df.stages {
		if df.stages[i].name == name {
			return &df.stages[i]
		}
	}
	return nil
}

// binaries are the packages the build stage compiles (ARG BINARIES).
func (df *dockerfile) binaries() []string { return strings.Fields(df.args["BINARIES"]) }

// componentTargets are the images the project ships: the operator and each
// long-running mesh component (cmd/waypoint once it exists).
func componentTargets(root string) []string {
	targets := []string{"operator", "controlplane", "ztunnel", "cni-agent"}
	if _, err := os.Stat(filepath.Join(root, "cmd", "waypoint")); err == nil {
		targets = append(targets, "waypoint")
	}
	return targets
}

func TestDockerfileCopiesAndTargets(t *testing.T) {
	root := repoRoot(t)
	df := parseDockerfile(t, filepath.Join(root, "Dockerfile"))
	build := df.stage("build")
	if build == nil {
		t.Fatal("no build stage named 'build'")
	}
	for _, bin := range df.binaries() {
		if _, err := os.Stat(filepath.Join(root, bin, "main.go")); err != nil {
			t.Errorf("ARG BINARIES names %s, which has no main.go", bin)
		}
	}
	built := map[string]bool{}
	for _, bin := range df.binaries() {
		built["/out/"+filepath.Base(bin)] = true
	}
	seen := map[string]bool{}
	for _, st := range df.stages {
		for _, c := range st.copies {
			for _, src := range c.srcs {
				switch {
				case c.from == "":
					if _, err := os.Stat(filepath.Join(root, src)); err != nil {
						t.Errorf("stage %s: COPY %s: not in the build context", st.name, src)
					}
				case !seen[c.from]:
					t.Errorf("stage %s: COPY --from=%s: no earlier stage of that name", st.name, c.from)
				case c.from == "build" && !built[src]:
					t.Errorf("stage %s: COPY --from=build %s: the build stage does not produce it (BINARIES: %v)", st.name, src, df.binaries())
				}
			}
		}
		seen[st.name] = true
	}
	for _, target := range componentTargets(root) {
		st := df.stage(target)
		if st == nil {
			t.Errorf("no image target %q", target)
			continue
		}
		if !strings.HasPrefix(st.base, "gcr.io/distroless/static") {
			t.Errorf("target %s: base %s, want distroless/static", target, st.base)
		}
		if st.entrypoint == "" || st.user == "" {
			t.Errorf("target %s: needs ENTRYPOINT and USER, got %q and %q", target, st.entrypoint, st.user)
		}
	}
	// Components that need no privilege run as the distroless nonroot user.
	for _, target := range []string{"operator", "controlplane", "waypoint"} {
		if st := df.stage(target); st != nil && (st.user != "65532:65532" || !strings.Contains(st.base, ":nonroot")) {
			t.Errorf("target %s must run as nonroot (65532 on distroless:nonroot), got USER %q FROM %s", target, st.user, st.base)
		}
	}
	if last := df.stages[len(df.stages)-1].name; last != "operator" {
		t.Errorf("the default (last) target is %q, want operator", last)
	}
	if cni := df.stage("cni-agent"); cni != nil && !copiesFrom(cni, "/out/cni-plugin") {
		t.Error("the cni-agent image must carry the cni-plugin binary")
	}
}

func copiesFrom(st *stage, src string) bool {
	for _, c := range st.copies {
		if slices.Contains(c.srcs, src) {
			return true
		}
	}
	return false
}

// TestDockerfileCopiesEverySourceTheBuildNeeds compares the directories
// COPY'd into the build stage with the packages the binaries import.
func TestDockerfileCopiesEverySourceTheBuildNeeds(t *testing.T) {
	root := repoRoot(t)
	df := parseDockerfile(t, filepath.Join(root, "Dockerfile"))
	copied := map[string]bool{}
	for _, c := range df.stage("build").copies {
		if c.from == "" {
			for _, src := range c.srcs {
				copied[strings.Trim(src, "/")] = true
			}
		}
	}
	args := append([]string{"list", "-deps", "-f", "{{if .Module}}{{if .Module.Main}}{{.Dir}}{{end}}{{end}}"}, df.binaries()...)
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dir := range strings.Fields(string(out)) {
		rel, err := filepath.Rel(root, dir)
		if err != nil {
			t.Fatal(err)
		}
		top := strings.Split(filepath.ToSlash(rel), "/")[0]
		if !copied[top] {
			t.Errorf("the binaries import %s, but the Dockerfile does not COPY %s/ into the build stage", rel, top)
		}
	}
	for _, f := range []string{"go.mod", "go.sum"} {
		if !copied[f] {
			t.Errorf("the build stage does not COPY %s", f)
		}
	}

	// .dockerignore must not drop a file the build compiles or embeds.
	ignore := readDockerignore(t, root)
	args = append([]string{"list", "-deps", "-f", `{{if .Module}}{{if .Module.Main}}{{.Dir}}|{{join .GoFiles ","}},{{join .EmbedFiles ","}}{{end}}{{end}}`}, df.binaries()...)
	cmd = exec.Command("go", args...)
	cmd.Dir = root
	out, err = cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, line := range strings.Fields(string(out)) {
		dir, files, _ := strings.Cut(line, "|")
		for _, f := range strings.Split(files, ",") {
			if f == "" {
				continue
			}
			rel, _ := filepath.Rel(root, filepath.Join(dir, f))
			if pattern := ignore.match(filepath.ToSlash(rel)); pattern != "" {
				t.Errorf(".dockerignore pattern %q drops %s, which the build needs", pattern, rel)
			}
		}
	}
}

// dockerignore holds .dockerignore's patterns (the subset of the syntax
// this repository uses: "dir/", "**/dir/", "**/glob", "path/glob").
type dockerignore []string

func readDockerignore(t *testing.T, root string) dockerignore {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatalf(".dockerignore: %v (without it the build context carries bin/)", err)
	}
	var patterns dockerignore
	for _, line := range strings.Split(string(data), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			patterns = append(patterns, line)
		}
	}
	return patterns
}

// match returns the pattern that excludes path, or "".
func (d dockerignore) match(path string) string {
	segments := strings.Split(path, "/")
	for _, p := range d {
		anyDepth := strings.HasPrefix(p, "**/")
		p := strings.TrimPrefix(p, "**/")
		if dir, isDir := strings.CutSuffix(p, "/"); isDir {
			for i, seg := range segments[:len(segments)-1] {
				if seg == dir && (anyDepth || i == 0) {
					return p
				}
			}
			continue
		}
		if ok, _ := filepath.Match(p, path); ok {
			return p
		}
		if ok, _ := filepath.Match(p, segments[len(segments)-1]); ok && anyDepth {
			return p
		}
	}
	return ""
}

// TestDockerfileBuildCommand runs the build stage's `go build` exactly as
// written (same flags, same ldflags, CGO off), then checks what users see:
// static binaries that print the stamped version.
func TestDockerfileBuildCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles every binary: skipped in -short mode, run by make test")
	}
	root := repoRoot(t)
	df := parseDockerfile(t, filepath.Join(root, "Dockerfile"))
	var build string
	for _, run := range df.stage("build").runs {
		if strings.Contains(run, "go build") {
			build = run
		}
	}
	if build == "" {
		t.Fatal("no RUN with go build in the build stage")
	}
	// Drop RUN's own options (cache mounts); the rest is shell.
	fields := strings.Fields(build)
	for len(fields) > 0 && strings.HasPrefix(fields[0], "--mount") {
		fields = fields[1:]
	}
	out := t.TempDir()
	script := strings.ReplaceAll(strings.Join(fields, " "), "/out/", out+"/")
	const version, commit = "v9.8.7-test", "abc1234"
	cmd := exec.Command("sh", "-c", script)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "TARGETOS=linux", "TARGETARCH="+goarch(), "VERSION="+version, "GIT_COMMIT="+commit,
		"MODULE="+df.args["MODULE"], "BINARIES="+df.args["BINARIES"])
	if outb, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s\n%v\n%s", script, err, outb)
	}
	for _, bin := range df.binaries() {
		path := filepath.Join(out, filepath.Base(bin))
		assertStatic(t, path)
	}
	for _, target := range componentTargets(root) {
		ep := strings.Trim(df.stage(target).entrypoint, `[]" `)
		path := filepath.Join(out, filepath.Base(ep))
		got, err := exec.Command(path, "--version").CombinedOutput()
		if err != nil || !strings.Contains(string(got), version) || !strings.Contains(string(got), commit) {
			t.Errorf("%s --version: want %s (commit %s), got %q (%v)", filepath.Base(ep), version, commit, got, err)
		}
	}
}

// assertStatic: a static binary has no program interpreter (dynamic loader).
func assertStatic(t *testing.T, path string) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Errorf("%s: %v", path, err)
		return
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s is dynamically linked (build with CGO_ENABLED=0)", filepath.Base(path))
		}
	}
}

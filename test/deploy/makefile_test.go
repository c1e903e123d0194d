package deploy

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// runMake runs make with args in the repository and returns what it printed.
// It runs as a top-level make even under `make test`, so its output has no
// "Entering directory" lines.
func runMake(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("make", args...)
	cmd.Dir = repoRoot(t)
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool {
		name, _, _ := strings.Cut(kv, "=")
		return name == "MAKEFLAGS" || name == "MFLAGS" || name == "MAKELEVEL"
	})
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("make %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// TestMakeHelpListsREADMETargets: every `make <target>` the README's tables
// name is a target that `make help` lists, so the documented commands exist
// and can be found.
func TestMakeHelpListsREADMETargets(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(repoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	makeCommand := regexp.MustCompile("`make ([^`]+)`")
	var documented []string
	for line := range strings.SplitSeq(string(readme), "\n") {
		if !strings.HasPrefix(line, "|") {
			continue
		}
		for _, m := range makeCommand.FindAllStringSubmatch(line, -1) {
			for _, word := range strings.Fields(m[1]) {
				if !strings.Contains(word, "=") { // VAR=value, not a target
					documented = append(documented, word)
				}
			}
		}
	}
	if len(documented) < 10 {
		t.Fatalf("found only %d make targets in README.md's tables (%v): is the target table gone?", len(documented), documented)
	}

	ansi := regexp.MustCompile("\x1b\\[[0-9;]*m")
	helpLine := regexp.MustCompile(`^  ([a-zA-Z0-9_-]+) +\S`) // "  target   description"
	listed := map[string]bool{}
	for line := range strings.SplitSeq(ansi.ReplaceAllString(runMake(t, "help"), ""), "\n") {
		if m := helpLine.FindStringSubmatch(line); m != nil {
			listed[m[1]] = true
		}
	}
	for _, target := range documented {
		if !listed[target] {
			t.Errorf("README.md names `make %s`, which make help does not list", target)
		}
	}
}

// TestMakeInstallRendersOnlyCRDs: `make install` and `make uninstall` (as
// `make -n` prints them) render exactly the CRDs of config/crd/bases, nothing
// of the operator's deployment, and apply them server-side or delete them.
func TestMakeInstallRendersOnlyCRDs(t *testing.T) {
	kustomize(t)
	root := repoRoot(t)
	var wantCRDs []string // config/crd/bases/<group>_<plural>.yaml holds CRD <plural>.<group>
	bases, err := filepath.Glob(filepath.Join(root, "config", "crd", "bases", "*.yaml"))
	if err != nil || len(bases) == 0 {
		t.Fatalf("no CRDs in config/crd/bases (%v)", err)
	}
	for _, path := range bases {
		group, plural, _ := strings.Cut(strings.TrimSuffix(filepath.Base(path), ".yaml"), "_")
		wantCRDs = append(wantCRDs, plural+"."+group)
	}
	slices.Sort(wantCRDs)

	for _, tc := range []struct{ target, kubectl string }{
		{"install", "kubectl apply --server-side "},
		{"uninstall", "kubectl delete "},
	} {
		t.Run(tc.target, func(t *testing.T) {
			printed := runMake(t, "-n", tc.target, "CLUSTER_KUBECTL=kubectl")
			var render string
			for line := range strings.SplitSeq(printed, "\n") {
				if before, after, ok := strings.Cut(line, " | "); ok && strings.HasPrefix(after, "kubectl ") {
					if !strings.HasPrefix(after, tc.kubectl) {
						t.Errorf("make %s pipes into %q, want %q...", tc.target, after, tc.kubectl)
					}
					render = before
				}
			}
			if render == "" {
				t.Fatalf("make -n %s prints no `<render> | kubectl ...` line:\n%s", tc.target, printed)
			}
			cmd := exec.Command("bash", "-c", render)
			cmd.Dir = root
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("%s: %v", render, err)
			}
			var got []string
			for _, obj := range decodeAll(t, bytes.NewReader(out)) {
				if obj.GetKind() != "CustomResourceDefinition" {
					t.Errorf("make %s renders %s %s: it must install the CRDs only", tc.target, obj.GetKind(), obj.GetName())
					continue
				}
				got = append(got, obj.GetName())
			}
			slices.Sort(got)
			if !slices.Equal(got, wantCRDs) {
				t.Errorf("make %s renders CRDs %v, want %v", tc.target, got, wantCRDs)
			}
		})
	}
}

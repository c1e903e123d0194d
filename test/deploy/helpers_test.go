// Package deploy tests what users install: the Dockerfile, the kustomize
// deploy (config/default, rendered by the real kustomize and checked by a
// real apiserver) and the OLM bundle (validated by operator-framework/api).
package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"bytes"
	"io"

	"github.com/ambientmesh/ambient-operator/test/testenv"
)

// tb is what the helpers need from *testing.T and from GinkgoT().
type tb interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}

func repoRoot(t tb) string {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func goarch() string { return runtime.GOARCH }

// kustomize is the binary `make tools` builds from the module proxy.
func kustomize(t tb) string {
	t.Helper()
	path := filepath.Join(repoRoot(t), "bin", "kustomize")
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("bin/kustomize missing: run `make tools` (%v)", err)
	}
	return path
}

// render runs `kustomize build dir` (dir relative to the repository).
func render(t tb, dir string) []*unstructured.Unstructured {
	t.Helper()
	cmd := exec.Command(kustomize(t), "build", dir)
	cmd.Dir = repoRoot(t)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kustomize build %s: %v\n%s", dir, err, stderr.String())
	}
	return decodeAll(t, bytes.NewReader(out))
}

func decodeAll(t tb, r io.Reader) []*unstructured.Unstructured {
	t.Helper()
	objs, err := testenv.DecodeObjects(r)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func find(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && (name == "" || o.GetName() == name) {
			return o
		}
	}
	return nil
}

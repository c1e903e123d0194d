// Package e2e is the end-to-end suite on the local mesh (see localmesh):
// the mesh is brought up once, from the binaries of this checkout, and each
// test asserts what a user of the mesh would check.
package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ambientmesh/ambient-operator/internal/testwait"
	"github.com/ambientmesh/ambient-operator/test/e2e/localmesh"
	"github.com/ambientmesh/ambient-operator/test/testenv"
)

var (
	mesh     *localmesh.Mesh
	w        *localmesh.Workloads
	binDir   string
	setupErr error
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	flag.Parse()
	if os.Geteuid() != 0 || testing.Short() {
		return m.Run() // every test skips with its reason
	}
	root, err := testenv.RepoRoot()
	if err != nil {
		setupErr = err
		return m.Run()
	}
	tmp, err := os.MkdirTemp("", "am-e2e-")
	if err != nil {
		setupErr = err
		return m.Run()
	}
	defer os.RemoveAll(tmp)
	binDir = filepath.Join(tmp, "bin")
	if setupErr = buildBinaries(root, binDir); setupErr != nil {
		return m.Run()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	start := time.Now()
	mesh, setupErr = localmesh.Up(ctx, localmesh.Options{RepoRoot: root, StateDir: filepath.Join(tmp, "state"), BinDir: binDir, Log: os.Stderr})
	if setupErr != nil {
		return m.Run()
	}
	w, setupErr = mesh.Deploy(ctx)
	fmt.Fprintf(os.Stderr, "local mesh up with workloads in %s\n", time.Since(start).Round(time.Second))
	code := m.Run()
	// Teardown is part of the contract (make demo-down, Ctrl-C): nothing may remain.
	mesh.Down()
	if left := localmesh.Leftovers(mesh.StateDir); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: the local mesh's teardown left behind:\n  %s\n", strings.Join(left, "\n  "))
		return 1
	}
	return code
}

// buildBinaries builds the components of this checkout, so the suite never
// runs stale binaries.
func buildBinaries(root, dir string) error {
	for _, b := range append([]string{"ambientctl"}, localmesh.ComponentBinaries...) {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, b), "./cmd/"+b)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("building %s: %v\n%s", b, err, out)
		}
	}
	return nil
}

// requireMesh skips without root and fails when the mesh could not start.
func requireMesh(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the local mesh creates network namespaces, veths and iptables rules")
	}
	if testing.Short() {
		t.Skip("the local mesh takes minutes: not in -short")
	}
	if setupErr != nil {
		t.Fatalf("the local mesh did not come up: %v", setupErr)
	}
}

// ambientctl runs the CLI built from this checkout.
func ambientctl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	full := append([]string{"--kubeconfig", mesh.Kubeconfig}, args...)
	out, err := exec.Command(filepath.Join(binDir, "ambientctl"), full...).CombinedOutput()
	return string(out), err
}

// eventually fails t unless fn succeeds within timeout; the failure carries
// fn's last error, which says more about the mesh than a false condition would.
func eventually(t *testing.T, timeout time.Duration, what string, fn func() error) {
	t.Helper()
	if err := testwait.Until(timeout, fn); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func ztunnelMetric(t *testing.T, node *localmesh.Node, name string, fragments ...string) []string {
	t.Helper()
	text, err := localmesh.Metrics(node)
	if err != nil {
		t.Fatalf("reading ztunnel metrics on %s: %v", node.Name, err)
	}
	return localmesh.MetricLines(text, name, fragments...)
}

// request retries until the connection works (configuration reaches
// ztunnel asynchronously).
func mustReach(t *testing.T, from *localmesh.AppPod, addr string) string {
	t.Helper()
	var who string
	eventually(t, 30*time.Second, fmt.Sprintf("%s (on %s) reaching %s", from, from.Node.Name, addr), func() (err error) {
		who, err = from.Request(addr, 3*time.Second)
		return err
	})
	return who
}

func mustBeRefused(t *testing.T, from *localmesh.AppPod, addr, why string) {
	t.Helper()
	eventually(t, 30*time.Second, fmt.Sprintf("%s → %s should be refused (%s) but still works", from, addr, why), func() error {
		if _, err := from.Request(addr, 2*time.Second); err == nil {
			return fmt.Errorf("connection succeeded")
		}
		return nil
	})
}

func contains(t *testing.T, what, text string, wants ...string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(text, want) {
			t.Errorf("%s: expected %q in:\n%s", what, want, text)
		}
	}
}

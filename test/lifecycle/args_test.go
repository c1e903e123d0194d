package lifecycle

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controllers/ambientmesh/manifests"
	"github.com/ambientmesh/ambient-operator/test/testenv"
)

// TestRenderedArgsParseInTheComponentBinaries builds the real component
// binaries and runs each with exactly the args (and env) the operator's
// manifests declare, plus --version: a flag the binary does not know makes
// it exit non-zero before printing the version. The manifests are the
// single source of truth for the command lines; this keeps the mains in step.
func TestRenderedArgsParseInTheComponentBinaries(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the controlplane, ztunnel and cni-agent binaries: skipped in -short mode, run by make test")
	}
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	mesh := &meshv1alpha1.AmbientMesh{}
	mesh.Name = meshv1alpha1.MeshName
	objs, err := manifests.Render(manifests.Input{Mesh: mesh, Versions: manifests.Uniform("0.1.0")})
	if err != nil {
		t.Fatal(err)
	}
	containers := map[string]corev1.Container{}
	for _, o := range objs {
		switch w := o.(type) {
		case *appsv1.Deployment:
			containers[w.Name] = w.Spec.Template.Spec.Containers[0]
		case *appsv1.DaemonSet:
			containers[w.Name] = w.Spec.Template.Spec.Containers[0]
		}
	}
	binDir := t.TempDir()
	for workload, pkg := range map[string]string{
		manifests.ControlPlaneName: "./cmd/controlplane",
		manifests.ZTunnelName:      "./cmd/ztunnel",
		manifests.CNIName:          "./cmd/cni-agent",
	} {
		t.Run(workload, func(t *testing.T) {
			c, ok := containers[workload]
			if !ok {
				t.Fatalf("no workload %s rendered", workload)
			}
			bin := filepath.Join(binDir, filepath.Base(pkg))
			build := exec.Command("go", "build", "-o", bin, pkg)
			build.Dir = root
			if out, err := build.CombinedOutput(); err != nil {
				t.Fatalf("go build %s: %v\n%s", pkg, err, out)
			}
			cmd := exec.Command(bin, append(append([]string{}, c.Args...), "--version")...)
			cmd.Env = append(os.Environ(), "NODE_NAME=node-1", "POD_NAME=p", "POD_NAMESPACE=ambient-system", "SERVICE_ACCOUNT="+workload)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s %s --version: %v\n%s", bin, strings.Join(c.Args, " "), err, out)
			}
		})
	}
}

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/dataplane/cni/plugin"
)

// TestAmbientMeshDeletionLeavesNothing runs last (the file sorts last): it
// uninstalls the mesh.
func TestAmbientMeshDeletionLeavesNothing(t *testing.T) {
	requireMesh(t)
	ctx := context.Background()
	am, err := mesh.AmbientMesh(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := mesh.Client.Delete(ctx, am); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Minute, "the AmbientMesh should be deleted (its finalizer done)", func() error {
		if _, err := mesh.AmbientMesh(ctx); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there (%v)", err)
		}
		return nil
	})
	eventually(t, time.Minute, "no ztunnel, CNI agent or control-plane process should remain", func() error {
		if pids := mesh.ComponentPIDs(); len(pids) > 0 {
			return fmt.Errorf("still running: %v", pids)
		}
		return nil
	})
	for _, n := range mesh.Nodes {
		confDir := n.HostPath(meshv1alpha1.DefaultCNIConfDir)
		entries, _ := os.ReadDir(confDir)
		for _, e := range entries {
			data, _ := os.ReadFile(filepath.Join(confDir, e.Name()))
			if strings.Contains(string(data), plugin.Type) {
				t.Errorf("node %s: after the AmbientMesh was deleted, %s still chains the %s plugin (the CNI agent should remove it on uninstall); new pods would call a plugin whose agent is gone:\n%s", n.Name, e.Name(), plugin.Type, data)
			}
		}
		if _, err := os.Stat(filepath.Join(n.HostPath(meshv1alpha1.DefaultCNIBinDir), plugin.Type)); err == nil {
			t.Errorf("node %s: after the AmbientMesh was deleted, the plugin binary %s is still in the CNI bin dir (the CNI agent should remove it on uninstall)", n.Name, plugin.Type)
		}
	}
	for _, p := range []*struct{ netns, name string }{{w.Client.Netns, "shop/client"}, {w.ServerA.Netns, "shop/server-a"}, {w.ServerB.Netns, "shop/server-b"}} {
		ipt, _ := exec.Command("ip", "netns", "exec", p.netns, "iptables-save").CombinedOutput()
		nft, _ := exec.Command("ip", "netns", "exec", p.netns, "nft", "list", "ruleset").CombinedOutput()
		if strings.Contains(string(ipt), "AMBIENT-") || strings.Contains(string(nft), "ambientmesh") {
			t.Errorf("pod %s: after the AmbientMesh was deleted its traffic is still redirected to ztunnel ports (the CNI agent should remove the rules on uninstall):\n%s\n%s", p.name, ipt, nft)
		}
	}
	// The pods keep working, outside the mesh.
	if _, err := w.Client.Request(w.ServerB.Addr(), 3*time.Second); err != nil {
		t.Errorf("after the AmbientMesh was deleted, shop/client cannot reach server-b any more (pods must keep working outside the mesh): %v", err)
	}
}

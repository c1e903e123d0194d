package localmesh

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ambientmesh/ambient-operator/internal/meshconfig"
)

// A node's agent must find its own pods' namespaces only: the machine's
// netns dir and /proc hold other tests' and clusters' namespaces.
func TestNodeSeesOnlyItsPodNetns(t *testing.T) {
	state := t.TempDir()
	n := newNode(state, 1)
	for _, p := range []string{meshconfig.NetNSDir, "/proc", "/proc/1/ns/net"} {
		if got := n.HostPath(p); !strings.HasPrefix(got, n.HostDir+"/") {
			t.Errorf("HostPath(%q) = %q: outside the node's own dir %s", p, got, n.HostDir)
		}
	}
	const pod = "am-p-shop-client"
	for range 2 { // a sandbox set up again keeps one link
		if err := n.linkPodNetns(pod); err != nil {
			t.Fatal(err)
		}
	}
	link := filepath.Join(n.HostPath(meshconfig.NetNSDir), pod)
	if target, err := os.Readlink(link); err != nil || target != NetnsPath(pod) {
		t.Errorf("link %s → %q (%v), want %s", link, target, err, NetnsPath(pod))
	}
	if views := podNetnsViews(state); !slices.Equal(views, []string{n.HostPath(meshconfig.NetNSDir)}) {
		t.Errorf("podNetnsViews = %v", views)
	}
	for range 2 { // removing a sandbox twice is no error
		if err := n.unlinkPodNetns(pod); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Lstat(link); !os.IsNotExist(err) {
		t.Errorf("link %s still there after unlink (%v)", link, err)
	}
}

package testenv

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/rest"
)

func TestRepoRootFindsOurModule(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if got := modulePath(data); got != repoModule {
		t.Fatalf("RepoRoot() = %s, whose go.mod declares %q", root, got)
	}
}

func TestAssetsDirTellsUserToRunMakeTools(t *testing.T) {
	t.Setenv("KUBEBUILDER_ASSETS", t.TempDir())
	_, err := AssetsDir()
	if err == nil || !strings.Contains(err.Error(), "make tools") {
		t.Fatalf("AssetsDir() with an empty assets dir: err = %v, want advice to run make tools", err)
	}
}

func TestAssetsDirHonoursKubebuilderAssets(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"kube-apiserver", "etcd", "kubectl"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("KUBEBUILDER_ASSETS", dir)
	got, err := AssetsDir()
	if err != nil || got != dir {
		t.Fatalf("AssetsDir() = %q, %v; want %q", got, err, dir)
	}
}

func TestModuleDirFindsCRDsOfTheBuildListVersion(t *testing.T) {
	dir, err := ModuleDir(certManagerModule)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(dir, "cert-manager@v") {
		t.Errorf("ModuleDir(%s) = %s, want a versioned module cache dir", certManagerModule, dir)
	}
	if _, err := os.Stat(filepath.Join(dir, "deploy", "crds", "cert-manager.io_certificates.yaml")); err != nil {
		t.Errorf("cert-manager CRDs not found: %v", err)
	}
	if _, err := ModuleDir("example.com/not-a-dependency"); err == nil {
		t.Error("ModuleDir of a module outside the build list: want an error")
	}
}

func TestServerURLAddsSchemeToBareHosts(t *testing.T) {
	for _, tc := range []struct {
		cfg  rest.Config
		want string
	}{
		{rest.Config{Host: "https://127.0.0.1:6443"}, "https://127.0.0.1:6443"},
		{rest.Config{Host: "127.0.0.1:6443", TLSClientConfig: rest.TLSClientConfig{CAData: []byte("x")}}, "https://127.0.0.1:6443"},
		{rest.Config{Host: "127.0.0.1:8080"}, "http://127.0.0.1:8080"},
	} {
		if got := serverURL(&tc.cfg); got != tc.want {
			t.Errorf("serverURL(%q) = %q, want %q", tc.cfg.Host, got, tc.want)
		}
	}
}

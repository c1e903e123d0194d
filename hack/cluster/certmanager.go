package main

import (
	"bytes"
	"context"
	"debug/buildinfo"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
)

// certManagerModule is the module hack/cert-manager builds the controller
// and the CA injector from; its version, read from the binaries, tags the
// images and picks the CRDs.
const certManagerModule = "github.com/cert-manager/cert-manager"

// certManagerNamespace is upstream's namespace for cert-manager.
const certManagerNamespace = "cert-manager"

// The addon: namespace, service accounts, RBAC and the two Deployments.
//
//go:embed addons/cert-manager.yaml
var certManagerManifestText string

var certManagerManifestTemplate = template.Must(template.New("cert-manager.yaml").Option("missingkey=error").Parse(certManagerManifestText))

// certManagerComponent is one Deployment of the addon and the binary its
// image is made of; the binary keeps its name in the image.
type certManagerComponent struct {
	deployment string
	binary     string
}

func (c certManagerComponent) name() string { return filepath.Base(c.binary) }

func certManagerImageRef(name, version string) string {
	return "localhost/ambient-cluster/" + name + ":" + version
}

// certManagerManifest renders the addon with the images of version.
func certManagerManifest(version string) (string, error) {
	var b strings.Builder
	err := certManagerManifestTemplate.Execute(&b, map[string]string{
		"Namespace":       certManagerNamespace,
		"ControllerImage": certManagerImageRef("cert-manager-controller", version),
		"CAInjectorImage": certManagerImageRef("cert-manager-cainjector", version),
	})
	return b.String(), err
}

type certManagerOptions struct {
	stateDir   string
	k8sBinDir  string
	controller string // bin/cert-manager-controller (hack/tools.sh cert-manager)
	cainjector string // bin/cert-manager-cainjector
	timeout    time.Duration
}

// certManager installs cert-manager on the cluster in stateDir: the CRDs of
// the module version the binaries were built from, their images imported
// into every node, then the addon, and waits until both Deployments are
// Available.
func certManager(ctx context.Context, opts certManagerOptions) error {
	c, err := existingCluster(opts.stateDir, opts.k8sBinDir)
	if err != nil {
		return err
	}
	components := []certManagerComponent{
		{deployment: "cert-manager", binary: opts.controller},
		{deployment: "cert-manager-cainjector", binary: opts.cainjector},
	}
	version, err := certManagerVersion(components)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, opts.timeout)
	defer cancel()
	k := kubectl{binary: c.bin("kubectl"), kubeconfig: c.pki.Kubeconfig("admin")}

	steps := []struct {
		name string
		fn   func() error
	}{
		{"CRDs of " + certManagerModule + " " + version, func() error { return applyCertManagerCRDs(ctx, k, version) }},
		{"images", func() error { return c.importCertManagerImages(components, version) }},
		{"namespace, RBAC and Deployments", func() error { return applyCertManager(ctx, k, version) }},
		{"Deployments Available", func() error { return c.waitAvailable(ctx, certManagerNamespace, components) }},
	}
	for _, step := range steps {
		if err := step.fn(); err != nil {
			return fmt.Errorf("cert-manager: %s: %w", step.name, err)
		}
		c.logf("cert-manager: %s: done", step.name)
	}
	return nil
}

// existingCluster is the cluster `up` made in stateDir, with an admin client.
func existingCluster(stateDir, k8sBinDir string) (*cluster, error) {
	s, err := loadState(stateDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no cluster in %s: run `make cluster-up` first", stateDir)
	}
	if err != nil {
		return nil, err
	}
	c := newCluster(stateDir, len(s.Nodes))
	c.k8sBinDir = k8sBinDir
	cfg, err := clientcmd.BuildConfigFromFlags("", c.pki.Kubeconfig("admin"))
	if err != nil {
		return nil, err
	}
	if c.kube, err = kubernetes.NewForConfig(cfg); err != nil {
		return nil, err
	}
	return c, nil
}

// certManagerVersion is the cert-manager module version every binary was
// built from; they must agree, as they share the CRDs.
func certManagerVersion(components []certManagerComponent) (string, error) {
	var version string
	for _, comp := range components {
		info, err := buildinfo.ReadFile(comp.binary)
		if err != nil {
			return "", fmt.Errorf("%s: %w (hack/tools.sh cert-manager builds it)", comp.binary, err)
		}
		v := moduleVersion(info, certManagerModule)
		switch {
		case v == "":
			return "", fmt.Errorf("%s was not built from %s (hack/tools.sh cert-manager builds it)", comp.binary, certManagerModule)
		case version != "" && v != version:
			return "", fmt.Errorf("%s is built from %s %s, the others from %s", comp.binary, certManagerModule, v, version)
		}
		version = v
	}
	return version, nil
}

// applyCertManagerCRDs applies deploy/crds of the module at version, from
// the module cache (downloaded through the module proxy if missing), and
// waits until the API server serves them.
func applyCertManagerCRDs(ctx context.Context, k kubectl, version string) error {
	dir, err := moduleSourceDir(ctx, certManagerModule+"@"+version)
	if err != nil {
		return err
	}
	crds := filepath.Join(dir, "deploy", "crds")
	// Server-side: the CRDs are too large for the last-applied annotation
	// of a client-side apply.
	if _, err := k.run(ctx, "", "apply", "--server-side", "--field-manager=cluster-cert-manager", "-f", crds); err != nil {
		return err
	}
	_, err = k.run(ctx, "", "wait", "--for=condition=Established", "--timeout=2m", "-f", crds)
	return err
}

// moduleSourceDir is the module cache directory of module@version.
func moduleSourceDir(ctx context.Context, moduleAtVersion string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", moduleAtVersion)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go mod download %s: %w: %s", moduleAtVersion, err, strings.TrimSpace(stderr.String()))
	}
	var out struct{ Dir, Error string }
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		return "", fmt.Errorf("go mod download %s: %w", moduleAtVersion, err)
	}
	if out.Error != "" || out.Dir == "" {
		return "", fmt.Errorf("go mod download %s: no directory: %s", moduleAtVersion, out.Error)
	}
	return out.Dir, nil
}

// importCertManagerImages writes an image of each binary, run as upstream's
// images run (65532, not root), and imports it into every node.
func (c *cluster) importCertManagerImages(components []certManagerComponent, version string) error {
	dir := filepath.Join(c.dir, "images")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, comp := range components {
		tarball := filepath.Join(dir, comp.name()+".tar")
		spec := imageSpec{
			Ref:        certManagerImageRef(comp.name(), version),
			BinaryPath: comp.binary,
			Entrypoint: "/" + comp.name(),
			User:       "65532:65532",
		}
		if err := writeImageFile(tarball, spec); err != nil {
			return err
		}
		for _, n := range c.nodes {
			if err := importImage(n, tarball); err != nil {
				return fmt.Errorf("%s into %s: %w", spec.Ref, n.Name, err)
			}
		}
		c.logf("imported %s into %d node(s)", spec.Ref, len(c.nodes))
	}
	return nil
}

func applyCertManager(ctx context.Context, k kubectl, version string) error {
	manifest, err := certManagerManifest(version)
	if err != nil {
		return err
	}
	_, err = k.run(ctx, manifest, "apply", "-f", "-")
	return err
}

// waitAvailable waits until every component's Deployment has rolled out
// its current generation and is Available, and gives up early when one of
// the namespace's pods cannot start, naming why.
func (c *cluster) waitAvailable(ctx context.Context, namespace string, components []certManagerComponent) error {
	return poll(ctx, "Deployments Available in "+namespace, func() (bool, error) {
		pods, err := c.kube.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		for _, p := range pods.Items {
			if reason := podStuck(p); reason != "" {
				return false, fmt.Errorf("pod %s: %s (kubectl -n %s describe pod %s)", p.Name, reason, namespace, p.Name)
			}
		}
		for _, comp := range components {
			d, err := c.kube.AppsV1().Deployments(namespace).Get(ctx, comp.deployment, metav1.GetOptions{})
			if err != nil || !deploymentAvailable(d) {
				return false, nil
			}
		}
		return true, nil
	})
}

func deploymentAvailable(d *appsv1.Deployment) bool {
	if d.Status.ObservedGeneration < d.Generation || d.Status.UpdatedReplicas < ptr.Deref(d.Spec.Replicas, 1) {
		return false
	}
	for _, cond := range d.Status.Conditions {
		if cond.Type == appsv1.DeploymentAvailable {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

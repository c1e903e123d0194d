package main

import (
	"context"
	"debug/buildinfo"
	_ "embed"
	"fmt"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"text/template"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// clusterDNSIP is the kube-dns Service's fixed ClusterIP in serviceCIDR.
// Kubelets write it into every pod's resolv.conf, so it must be known
// before any node starts: the Service asks for it, it is not allocated.
const clusterDNSIP = "10.79.0.10"

// corednsModule is the module hack/coredns builds CoreDNS from; its
// version, read from the binary, tags the image.
const corednsModule = "github.com/coredns/coredns"

// The addon: RBAC, the Corefile, the Deployment and the kube-dns Service.
//
//go:embed addons/coredns.yaml
var corednsManifestText string

var corednsManifestTemplate = template.Must(template.New("coredns.yaml").Option("missingkey=error").Parse(corednsManifestText))

// corednsManifest renders the addon for image, at clusterDNSIP, serving clusterDomain.
func corednsManifest(image string) (string, error) {
	var b strings.Builder
	err := corednsManifestTemplate.Execute(&b, map[string]string{
		"Image":         image,
		"ClusterIP":     clusterDNSIP,
		"ClusterDomain": clusterDomain,
	})
	return b.String(), err
}

func corednsImageRef(version string) string { return "localhost/ambient-cluster/coredns:" + version }

// corednsVersion is the CoreDNS module version binary was built from.
func corednsVersion(binary string) (string, error) {
	info, err := buildinfo.ReadFile(binary)
	if err != nil {
		return "", fmt.Errorf("%s: %w", binary, err)
	}
	version := moduleVersion(info, corednsModule)
	if version == "" {
		return "", fmt.Errorf("%s was not built from %s (build it with hack/tools.sh coredns)", binary, corednsModule)
	}
	return version, nil
}

// moduleVersion is the version of dependency module in info ("" if absent),
// following a replace.
func moduleVersion(info *debug.BuildInfo, module string) string {
	i := slices.IndexFunc(info.Deps, func(m *debug.Module) bool { return m.Path == module })
	if i < 0 {
		return ""
	}
	if r := info.Deps[i].Replace; r != nil && r.Version != "" {
		return r.Version
	}
	return info.Deps[i].Version
}

// startDNS imports the CoreDNS image into every node, applies the addon
// and waits until CoreDNS is Ready.
func (c *cluster) startDNS(ctx context.Context, binary string) error {
	version, err := corednsVersion(binary)
	if err != nil {
		return err
	}
	image := corednsImageRef(version)
	tarball := filepath.Join(c.dir, "images", "coredns.tar")
	if err := writeImageFile(tarball, imageSpec{Ref: image, BinaryPath: binary, Entrypoint: "/coredns", User: "65532:65532"}); err != nil {
		return err
	}
	for _, n := range c.nodes {
		if err := importImage(n, tarball); err != nil {
			return fmt.Errorf("%s: %w", n.Name, err)
		}
	}
	manifest, err := corednsManifest(image)
	if err != nil {
		return err
	}
	k := kubectl{binary: c.bin("kubectl"), kubeconfig: c.pki.Kubeconfig("admin")}
	if _, err := k.run(ctx, manifest, "apply", "-f", "-"); err != nil {
		return err
	}
	return c.waitDNSReady(ctx)
}

// waitDNSReady waits for the CoreDNS Deployment to be available, and
// gives up early when its pod cannot start, naming why.
func (c *cluster) waitDNSReady(ctx context.Context) error {
	return poll(ctx, "CoreDNS Ready", func() (bool, error) {
		pods, err := c.kube.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "k8s-app=kube-dns"})
		if err != nil {
			return false, nil
		}
		for _, p := range pods.Items {
			if reason := podStuck(p); reason != "" {
				return false, fmt.Errorf("pod %s: %s (kubectl -n kube-system describe pod %s)", p.Name, reason, p.Name)
			}
		}
		d, err := c.kube.AppsV1().Deployments("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		return d.Status.ObservedGeneration >= d.Generation && d.Status.AvailableReplicas >= 1, nil
	})
}

// podStuck says why a pod will not become Ready without a change to it
// (rejected by the kubelet, image not on the node, crashing), or "".
func podStuck(p corev1.Pod) string {
	if p.Status.Phase == corev1.PodFailed {
		return fmt.Sprintf("failed: %s %s", p.Status.Reason, p.Status.Message)
	}
	for _, s := range p.Status.ContainerStatuses {
		if w := s.State.Waiting; w != nil && slices.Contains([]string{"CrashLoopBackOff", "ErrImageNeverPull", "CreateContainerError", "CreateContainerConfigError"}, w.Reason) {
			return fmt.Sprintf("%s: %s", w.Reason, w.Message)
		}
	}
	return ""
}

// Package cluster checks the operator on a real cluster (hack/cluster): the
// scheduler places its pods, containerd runs them from imported images and
// the kubelet probes them. It installs the operator as a user would, with
// `make deploy`, then applies the AmbientMesh sample and checks the mesh from
// the outside: pods' traffic, metrics, policy, restarts, the uninstall.
//
// `make test-cluster` brings the cluster up (with CoreDNS and cert-manager),
// imports the images and runs this suite with CLUSTER_STATE set; without it
// the suite skips.
package cluster

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ambientmesh/ambient-operator/internal/meshscheme"
)

// env describes the running cluster and what was built for it.
type env struct {
	stateDir   string // hack/cluster's state directory
	kubeconfig string
	kubectl    string // the kubectl built with the Kubernetes binaries
	repo       string // the repository root, where make runs
	operator   string // the operator image make deploy installs
	appImage   string // the app pods' image: Istio's echo server and client (hack/echo)
	version    string // the mesh version the images carry
	nextVer    string // the second version, for the upgrade
}

var (
	e         env
	k8s       client.Client
	clientset *kubernetes.Clientset
)

func TestCluster(t *testing.T) {
	e.stateDir = os.Getenv("CLUSTER_STATE")
	if e.stateDir == "" {
		t.Skip("needs a running hack/cluster cluster with its images: run by make test-cluster (root), which sets CLUSTER_STATE")
	}
	RegisterFailHandler(Fail)
	SetDefaultEventuallyTimeout(3 * time.Minute)
	SetDefaultEventuallyPollingInterval(time.Second)
	RunSpecs(t, "Real cluster suite")
}

var _ = BeforeSuite(func() {
	repo, err := filepath.Abs("../..")
	Expect(err).NotTo(HaveOccurred())
	e.repo = repo
	e.kubeconfig = filepath.Join(e.stateDir, "kubeconfig", "admin.kubeconfig")
	e.kubectl = mustEnv("CLUSTER_KUBECTL")
	e.operator = mustEnv("CLUSTER_OPERATOR_IMAGE")
	e.appImage = mustEnv("CLUSTER_APP_IMAGE")
	e.version = mustEnv("CLUSTER_MESH_VERSION")
	e.nextVer = mustEnv("CLUSTER_NEXT_MESH_VERSION")

	cfg, err := clientcmd.BuildConfigFromFlags("", e.kubeconfig)
	Expect(err).NotTo(HaveOccurred())
	k8s, err = client.New(cfg, client.Options{Scheme: meshscheme.New()})
	Expect(err).NotTo(HaveOccurred())
	clientset, err = kubernetes.NewForConfig(cfg)
	Expect(err).NotTo(HaveOccurred())
})

func mustEnv(name string) string {
	v := os.Getenv(name)
	Expect(v).NotTo(BeEmpty(), "make test-cluster sets %s", name)
	return v
}

// kubectl runs the cluster's kubectl with stdin (may be empty) and returns
// its stdout; stderr goes into the error.
func kubectl(ctx context.Context, stdin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, e.kubectl, append([]string{"--kubeconfig", e.kubeconfig}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// makeTarget runs `make target vars...` in the repository, as a user would,
// against the cluster.
func makeTarget(ctx context.Context, target string, vars ...string) {
	args := append([]string{"-C", e.repo, target, "CLUSTER_KUBECTL=" + e.kubectl}, vars...)
	cmd := exec.CommandContext(ctx, "make", args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+e.kubeconfig)
	out, err := cmd.CombinedOutput()
	GinkgoWriter.Printf("make %s:\n%s\n", target, out)
	Expect(err).NotTo(HaveOccurred(), "make %s: %s", target, out)
}

// nodeExec runs argv in a node's network and mount namespaces, where its
// kubelet, containerd and pods' host sides live.
func nodeExec(ctx context.Context, node string, argv ...string) (string, error) {
	args := append([]string{"--net=/run/netns/" + node, "--mount=" + filepath.Join(e.stateDir, "ns", node+".mnt"), "--"}, argv...)
	out, err := exec.CommandContext(ctx, "nsenter", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s on %s: %w: %s", strings.Join(argv, " "), node, err, out)
	}
	return string(out), nil
}

// nodeFile is the path on this machine of host path p on node (hack/cluster
// bind-mounts each node's own copy over the host paths a node owns).
func nodeFile(node, p string) string {
	return filepath.Join(e.stateDir, "nodes", node, "host", p)
}

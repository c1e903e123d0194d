package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controllers/ambientmesh/manifests"
	"github.com/ambientmesh/ambient-operator/internal/meshscheme"
	"github.com/ambientmesh/ambient-operator/test/testenv"
)

// TestPortForwardThroughARealAPIServer runs `ambientctl ztunnel certs --node n1` and
// `ambientctl waypoint clusters` against a real kube-apiserver (envtest): ambientctl
// reads the AmbientMesh, finds the ztunnel pod on n1 by the DaemonSet's labels (the
// waypoint's by its label), and the API server authorizes each port-forward, takes it
// over a WebSocket (SPDY tunnelled in it), finds node n1's kubelet and passes it on as
// SPDY. There is no kubelet in envtest: node n1's kubelet endpoint is a fake that
// serves the port-forward as the kubelet does (kubeletPortForward), to a fake admin
// endpoint. What a real kubelet and container runtime do (enter the pod's network
// namespace, dial its loopback) is not exercised. It then checks what ambientctl says
// when the API server refuses the user, when the pod does not exist, and when nothing
// listens on the port in the pod.
func TestPortForwardThroughARealAPIServer(t *testing.T) {
	if testing.Short() {
		t.Skip("envtest (real kube-apiserver and etcd): skipped in -short mode, run by make test")
	}
	env, err := testenv.New()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Error(err)
		}
	})

	admin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/certs":
			fmt.Fprint(w, `[{"identity":"spiffe://cluster.local/ns/shop/sa/client","state":"valid","serial":"0a1b"}]`)
		case "/clusters":
			fmt.Fprint(w, `[{"name":"outbound|8080||reviews.bookinfo.svc.cluster.local","rq_total":7,"hosts":[{"address":"10.0.2.3:8080","health":"HEALTHY"}]}]`)
		default:
			http.NotFound(w, r)
		}
	}))
	defer admin.Close()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nothingListens := closed.Addr().String()
	closed.Close()
	const namespace, podName, stoppedPodName = "ambient-system", "ztunnel-x7k2p", "ztunnel-stopped"
	backends := map[string]string{ // the kubelet's port-forward path of each pod: where port 15000 "in the pod" is
		"/portForward/" + namespace + "/" + podName:        admin.Listener.Addr().String(),
		"/portForward/bookinfo/waypoint-5d9c":              admin.Listener.Addr().String(),
		"/portForward/" + namespace + "/" + stoppedPodName: nothingListens,
	}
	kubelet := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		backend, ok := backends[r.URL.Path]
		if !ok {
			http.Error(w, "unexpected "+r.URL.String(), http.StatusNotFound)
			return
		}
		kubeletPortForward(w, r, path.Base(r.URL.Path), backend)
	}))
	defer kubelet.Close()
	kubeletURL, _ := url.Parse(kubelet.URL)
	kubeletPort, _ := strconv.Atoi(kubeletURL.Port())

	ctx := context.Background()
	cl, err := client.New(cfg, client.Options{Scheme: meshscheme.New()})
	if err != nil {
		t.Fatal(err)
	}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}
	mesh := &meshv1alpha1.AmbientMesh{ObjectMeta: metav1.ObjectMeta{Name: "default"}}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: podName, Namespace: namespace,
			Labels: labels.Merge(manifests.MeshLabels("default"), labels.Set{manifests.LabelName: manifests.ZTunnelName})},
		Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "ztunnel", Image: "ztunnel"}}},
	}
	waypointPod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "waypoint-5d9c", Namespace: "bookinfo", Labels: map[string]string{meshv1alpha1.LabelWaypoint: "waypoint"}},
		Spec:       corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "waypoint", Image: "waypoint"}}},
	}
	bookinfo := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bookinfo"}}
	stoppedPod := &corev1.Pod{ // not the ztunnel's: ambientctl is not to pick it
		ObjectMeta: metav1.ObjectMeta{Name: stoppedPodName, Namespace: namespace},
		Spec:       corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "stopped", Image: "stopped"}}},
	}
	for _, o := range []client.Object{node, mesh, ns, pod, stoppedPod, bookinfo, waypointPod} {
		if err := cl.Create(ctx, o); err != nil {
			t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
		}
	}
	node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}}
	node.Status.DaemonEndpoints.KubeletEndpoint.Port = int32(kubeletPort)
	if err := cl.Status().Update(ctx, node); err != nil {
		t.Fatal(err)
	}

	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := testenv.WriteKubeconfig(cfg, kubeconfig); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"ztunnel", "certs", "--node", "n1"}, "spiffe://cluster.local/ns/shop/sa/client   valid   0a1b"},
		{[]string{"waypoint", "clusters", "-n", "bookinfo", "waypoint"}, "outbound|8080||reviews.bookinfo.svc.cluster.local   10.0.2.3:8080"},
	} {
		var out bytes.Buffer
		if err := run(append([]string{"--kubeconfig", kubeconfig}, tc.args...), &out); err != nil {
			t.Fatalf("ambientctl %s: %v", strings.Join(tc.args, " "), err)
		}
		if !strings.Contains(out.String(), tc.want) {
			t.Errorf("ambientctl %s: output lacks %q:\n%s", strings.Join(tc.args, " "), tc.want, out.String())
		}
	}

	someone, err := env.AddUser(envtest.User{Name: "someone"}, nil) // no RBAC binding: may do nothing
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cfg  *rest.Config
		pod  string
		want []string
	}{
		{"the API server refuses the user", someone.Config(), podName,
			[]string{`User "someone" cannot create resource "pods/portforward"`}},
		{"no such pod", cfg, "ztunnel-gone", []string{`pods "ztunnel-gone" not found`}},
		{"nothing listens in the pod", cfg, stoppedPodName,
			[]string{"error forwarding port 15000 to pod " + stoppedPodName, "connection refused"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dial, err := portForwardDialer(tc.cfg, namespace, tc.pod, 15000)
			if err != nil {
				t.Fatal(err)
			}
			_, err = adminRequest(dial, localAdmin, http.MethodGet, "/certs")
			if err == nil {
				t.Fatal("the request succeeded")
			}
			for _, want := range append(tc.want, "port-forward to pod "+namespace+"/"+tc.pod+" port 15000") {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
		})
	}
}

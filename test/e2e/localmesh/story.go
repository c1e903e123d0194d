package localmesh

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/internal/testwait"
)

// EnrollLabel enrolls a namespace (or a pod) in the mesh.
const EnrollLabel = "ambientmesh.dev/dataplane-mode"

// Story prints the demo: headings, what is done, what is seen.
type Story struct {
	Out   io.Writer
	Pause time.Duration
	step  int
}

// Heading prints a numbered heading and pauses.
func (s *Story) Heading(title string) {
	if s.step > 0 {
		time.Sleep(s.Pause)
	}
	s.step++
	fmt.Fprintf(s.Out, "\n\033[1m== %d. %s\033[0m\n", s.step, title)
}

// Say prints one line of narration.
func (s *Story) Say(format string, args ...any) { fmt.Fprintf(s.Out, "   "+format+"\n", args...) }

// Show prints indented output (a command's, a metric line).
func (s *Story) Show(text string) {
	for _, line := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		fmt.Fprintf(s.Out, "     | %s\n", line)
	}
}

// Workloads of the story.
type Workloads struct {
	ServerA, ServerB, Client, Legacy, LegacyServer *AppPod
	ServiceAddr                                    string
}

// Deploy creates the story's workloads: namespace shop (enrolled) with two
// echo servers (one per node) behind Service echo and a client; namespace
// legacy (not enrolled) with a client and a server.
func (m *Mesh) Deploy(ctx context.Context) (*Workloads, error) {
	n1, n2 := m.Nodes[0], m.Nodes[1]
	if err := m.EnsureNamespace(ctx, "shop", map[string]string{EnrollLabel: "ambient"}); err != nil {
		return nil, err
	}
	if err := m.EnsureNamespace(ctx, "legacy", nil); err != nil {
		return nil, err
	}
	w := &Workloads{}
	var err error
	steps := []struct {
		p                 **AppPod
		ns, name, sa, app string
		node              *Node
	}{
		{&w.ServerA, "shop", "server-a", "server", "echo", n1},
		{&w.ServerB, "shop", "server-b", "server", "echo", n2},
		{&w.Client, "shop", "client", "client", "client", n1},
		{&w.Legacy, "legacy", "client", "client", "client", n2},
		{&w.LegacyServer, "legacy", "server", "server", "echo", n2},
	}
	for _, s := range steps {
		if *s.p, err = m.AddPod(ctx, s.ns, s.name, s.sa, s.node, map[string]string{"app": s.app}); err != nil {
			return nil, err
		}
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: "shop"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "echo"}, Ports: []corev1.ServicePort{{
			Name: "tcp-echo", Port: EchoPort, TargetPort: intstr.FromInt32(EchoPort), Protocol: corev1.ProtocolTCP,
		}}},
	}
	created, err := m.Clientset.CoreV1().Services("shop").Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		return nil, err
	}
	w.ServiceAddr = fmt.Sprintf("%s:%d", created.Spec.ClusterIP, EchoPort)
	return w, nil
}

// Principal is the SPIFFE identity of a pod's service account.
func Principal(p *AppPod) string {
	return fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", meshv1alpha1.DefaultTrustDomain, p.Namespace, p.ServiceAccount)
}

// Run walks the story on a running mesh; it returns an error when the mesh
// does not behave as the story says.
func (s *Story) Run(ctx context.Context, m *Mesh) error {
	s.Heading("Two namespaces: shop is in the mesh (label " + EnrollLabel + "=ambient), legacy is not")
	w, err := m.Deploy(ctx)
	if err != nil {
		return err
	}
	out, _ := m.Kubectl("get", "pods", "-n", "shop", "-o", "wide")
	s.Show(out)
	out, _ = m.Kubectl("get", "pods", "-n", "legacy", "-o", "wide")
	s.Show(out)
	s.Say("Service shop/echo → %s selects server-a (%s) and server-b (%s)", w.ServiceAddr, w.ServerA.Node.Name, w.ServerB.Node.Name)

	s.Heading("shop/client → servers: across nodes, on one node, and through the Service VIP")
	for _, target := range []*AppPod{w.ServerB, w.ServerA} {
		var who string
		err := testwait.Until(30*time.Second, func() (err error) { who, err = w.Client.Request(target.Addr(), 3*time.Second); return err })
		if err != nil {
			return fmt.Errorf("shop/client (%s) could not reach %s (%s): %w", w.Client.Node.Name, target, target.Node.Name, err)
		}
		s.Say("client on %s → %s on %s: answered by %s", w.Client.Node.Name, target.Addr(), target.Node.Name, who)
	}
	seen := map[string]int{}
	for range 8 {
		who, err := w.Client.Request(w.ServiceAddr, 3*time.Second)
		if err != nil {
			return fmt.Errorf("shop/client → Service echo %s: %w", w.ServiceAddr, err)
		}
		seen[who]++
	}
	s.Say("8 connections to the VIP %s were answered by: %v", w.ServiceAddr, seen)

	s.Heading("The server's ztunnel saw the client's SPIFFE identity")
	metrics, err := Metrics(w.ServerB.Node)
	if err != nil {
		return err
	}
	lines := MetricLines(metrics, "istio_tcp_connections_opened_total", `reporter="destination"`, `source_principal="`+Principal(w.Client)+`"`)
	if len(lines) == 0 {
		return fmt.Errorf("the ztunnel on %s has no istio_tcp_connections_opened_total with source_principal=%s", w.ServerB.Node.Name, Principal(w.Client))
	}
	s.Say("ztunnel metrics on %s (http://127.0.0.1:15020/metrics inside its netns):", w.ServerB.Node.Name)
	s.Show(strings.Join(lines, "\n"))

	s.Heading("The underlay carried no plaintext (tcpdump on " + w.Client.Node.Name + "'s underlay link)")
	secret := fmt.Sprintf("card-number-%d", time.Now().UnixNano())
	text, err := m.CaptureEcho(w.Client, w.ServerB.Addr(), secret, 3*time.Second)
	if err != nil {
		return fmt.Errorf("meshed request during the capture: %w", err)
	}
	if strings.Contains(text, secret) {
		return fmt.Errorf("the underlay carried %q in plaintext between meshed pods", secret)
	}
	s.Say("meshed: %d packets on the underlay, %q appears in none of them (HBONE: mTLS on port 15008)", PacketCount(text), secret)
	text, err = m.CaptureEcho(w.Legacy, w.ServerA.Addr(), secret, 3*time.Second)
	if err != nil {
		return fmt.Errorf("legacy/client → shop/server-a (PERMISSIVE plaintext): %w", err)
	}
	s.Say("for contrast, legacy/client (not meshed) → shop/server-a: %q visible on the underlay: %v", secret, strings.Contains(text, secret))

	s.Heading("A DENY MeshPolicy: shop/client may no longer reach the servers")
	open, err := w.Client.Dial(w.ServerB.Addr(), 3*time.Second)
	if err != nil {
		return err
	}
	defer open.Close()
	s.Say("opened a long-lived connection client → server-b first")
	policy := &meshv1alpha1.MeshPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "deny-client", Namespace: "shop"},
		Spec: meshv1alpha1.MeshPolicySpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "echo"}},
			Action:   meshv1alpha1.PolicyAction("DENY"),
			Rules:    []meshv1alpha1.Rule{{From: []meshv1alpha1.Source{{ServiceAccounts: []meshv1alpha1.ServiceAccountRef{"shop/client"}}}}},
		},
	}
	if err := m.Client.Create(ctx, policy); err != nil {
		return err
	}
	out, _ = m.Kubectl("get", "meshpolicy", "-n", "shop", "deny-client", "-o", "yaml")
	s.Show(cut(out, "spec:"))
	err = testwait.Until(20*time.Second, func() error {
		if _, err := w.Client.Request(w.ServerB.Addr(), 2*time.Second); err == nil {
			return fmt.Errorf("still allowed")
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("after the DENY policy shop/client still reaches server-b")
	}
	s.Say("new connection client → server-b: refused")
	if err := testwait.Until(20*time.Second, func() error {
		if open.Echo("still there?", time.Second) == nil {
			return fmt.Errorf("open connection still works")
		}
		return nil
	}); err != nil {
		return fmt.Errorf("the connection opened before the DENY policy was not closed")
	}
	s.Say("the connection opened before the policy: closed by ztunnel")
	if err := m.Client.Delete(ctx, policy); err != nil {
		return err
	}

	s.Heading("Unlabel shop: the same traffic passes, unmeshed")
	if _, err := m.Kubectl("label", "namespace", "shop", EnrollLabel+"-"); err != nil {
		return err
	}
	s.Say("kubectl label namespace shop %s-", EnrollLabel)
	if err := testwait.Until(30*time.Second, func() error {
		text, err := m.CaptureEcho(w.Client, w.ServerB.Addr(), secret, 2*time.Second)
		if err != nil {
			return err
		}
		if !strings.Contains(text, secret) {
			return fmt.Errorf("still encrypted")
		}
		return nil
	}); err != nil {
		return fmt.Errorf("after unlabelling shop, client → server-b is not plaintext on the underlay: %w", err)
	}
	s.Say("client → server-b works again, and %q is now visible on the underlay: the pods left the mesh without a restart", secret)

	if err := s.runL7(ctx, m); err != nil {
		return err
	}

	s.Heading("Where to look")
	s.Say("ztunnel metrics: inside a node, http://127.0.0.1:15020/metrics (ip netns exec am-n2 curl ...)")
	s.Say("ztunnel admin:   inside a node, http://127.0.0.1:15000/{workloads,services,policies,certs,connections}")
	s.Say("waypoint:        inside its pod, :15020/metrics and 127.0.0.1:15000/{config_dump,clusters,stats,certs}; its access log in %s",
		filepath.Join(m.LogDir(), "<waypoint pod>.log"))
	ctl := filepath.Join(m.BinDir, "ambientctl")
	for _, args := range [][]string{{"status"}, {"ztunnel", "workloads", "--via", "netns", "--node", w.ServerB.Node.Name}} {
		full := append([]string{"--kubeconfig", m.Kubeconfig}, args...)
		out, err := exec.Command(ctl, full...).CombinedOutput()
		s.Say("$ ambientctl %s", strings.Join(args, " "))
		if err != nil {
			s.Show(fmt.Sprintf("%s(%v)", out, err))
			continue
		}
		s.Show(string(out))
	}
	s.Say("logs of every process: %s", m.LogDir())
	return nil
}

// cut returns text from the first line starting with prefix.
func cut(text, prefix string) string {
	if i := strings.Index(text, "\n"+prefix); i >= 0 {
		return text[i+1:]
	}
	return text
}

package localmesh

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/dataplane/cni/conflist"
)

// debianCNIDir holds Debian's containernetworking-plugins.
const debianCNIDir = "/usr/lib/cni"

// EchoPort is where every app pod's echo server listens.
const EchoPort = 8080

// AppPod is a workload pod: a Pod object, a netns wired by the real CNI
// chain, and (for servers) an echo server listening inside it.
type AppPod struct {
	Namespace, Name, ServiceAccount string
	Node                            *Node
	Netns                           string
	IP                              string
	UID                             string
	listener                        net.Listener
	accepted                        atomic.Int64
	mu                              sync.Mutex
	open                            []net.Conn
}

// NetnsPath is the pod's netns.
func (p *AppPod) NetnsPath() string { return NetnsPath(p.Netns) }

// Accepted counts connections the pod's echo server accepted.
func (p *AppPod) Accepted() int64 { return p.accepted.Load() }

// String is namespace/name.
func (p *AppPod) String() string { return p.Namespace + "/" + p.Name }

type apps struct {
	mu   sync.Mutex
	pods []*AppPod
}

func (a *apps) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, p := range a.pods {
		p.closeServer()
	}
}

// Node returns the node by name (am-n1...).
func (m *Mesh) Node(name string) *Node {
	for _, n := range m.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// EnsureNamespace creates a namespace with labels, or sets them.
func (m *Mesh) EnsureNamespace(ctx context.Context, name string, labels map[string]string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	_, err := m.Clientset.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		cur, err := m.Clientset.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		cur.Labels = labels
		_, err = m.Clientset.CoreV1().Namespaces().Update(ctx, cur, metav1.UpdateOptions{})
		return err
	}
	return err
}

// AddPod plays the kubelet for a new workload pod: the Pod object (with
// its service account), a netns, the real CNI chain run from the node's
// netns (bridge + host-local, then our plugin, which asks the node agent
// to enroll the pod), status with the IP and Ready, and an echo server.
func (m *Mesh) AddPod(ctx context.Context, namespace, name, sa string, node *Node, labels map[string]string) (*AppPod, error) {
	if m.apps == nil {
		m.apps = &apps{}
	}
	saObj := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa, Namespace: namespace}}
	if _, err := m.Clientset.CoreV1().ServiceAccounts(namespace).Create(ctx, saObj, metav1.CreateOptions{}); ignoreExists(err) != nil {
		return nil, err
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: labels},
		Spec: corev1.PodSpec{
			NodeName: node.Name, ServiceAccountName: sa, AutomountServiceAccountToken: ptr.To(false),
			Containers: []corev1.Container{{Name: "app", Image: "local/echo:demo",
				Ports: []corev1.ContainerPort{{Name: "echo", ContainerPort: EchoPort, Protocol: corev1.ProtocolTCP}}}},
		},
	}
	created, err := m.Clientset.CoreV1().Pods(namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("creating pod %s/%s: %w", namespace, name, err)
	}
	p := &AppPod{Namespace: namespace, Name: name, ServiceAccount: sa, Node: node, UID: string(created.UID),
		Netns: fmt.Sprintf("am-p-%s-%s", namespace, name)}
	if err := m.state.addNetns(p.Netns); err != nil {
		return nil, err
	}
	if err := addNetns(p.Netns); err != nil {
		return nil, err
	}
	res, err := m.cni(ctx, p, true)
	if err != nil {
		return nil, fmt.Errorf("CNI ADD for %s on %s: %w", p, node.Name, err)
	}
	for _, ip := range res.IPs {
		if ip.Address.IP.To4() != nil {
			p.IP = ip.Address.IP.String()
		}
	}
	if p.IP == "" {
		return nil, fmt.Errorf("CNI ADD for %s returned no IPv4 address", p)
	}
	if err := p.serve(); err != nil {
		return nil, err
	}
	if err := m.setPodStatus(ctx, created, p.IP, true); err != nil {
		return nil, err
	}
	m.apps.mu.Lock()
	m.apps.pods = append(m.apps.pods, p)
	m.apps.mu.Unlock()
	return p, nil
}

// DeletePod runs CNI DEL, deletes the netns and the Pod object.
func (m *Mesh) DeletePod(ctx context.Context, p *AppPod) error {
	p.closeServer()
	_, delErr := m.cni(ctx, p, false)
	err := m.Clientset.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To(int64(0))})
	if apierrors.IsNotFound(err) {
		err = nil
	}
	return errors.Join(delErr, err, deleteNetns(p.Netns))
}

// cni runs the node's CNI configuration (as the agent left it) from a
// thread inside the node's netns, the way a container runtime does.
func (m *Mesh) cni(ctx context.Context, p *AppPod, add bool) (*current.Result, error) {
	confDir := p.Node.HostPath(meshv1alpha1.DefaultCNIConfDir)
	primary, err := conflist.Primary(confDir)
	if err != nil {
		return nil, err
	}
	list, err := libcni.ConfListFromFile(primary)
	if err != nil {
		return nil, err
	}
	cniConfig := libcni.NewCNIConfigWithCacheDir(
		[]string{p.Node.HostPath(meshv1alpha1.DefaultCNIBinDir), debianCNIDir},
		p.Node.HostPath("/var/lib/cni/cache"), nil)
	rt := &libcni.RuntimeConf{
		ContainerID: "ctr-" + p.UID, NetNS: p.NetnsPath(), IfName: "eth0",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", p.Namespace}, {"K8S_POD_NAME", p.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", "ctr-" + p.UID}, {"K8S_POD_UID", p.UID}},
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var result *current.Result
	err = Do(p.Node.NetnsPath(), func() error {
		if !add {
			return cniConfig.DelNetworkList(ctx, list, rt)
		}
		r, err := cniConfig.AddNetworkList(ctx, list, rt)
		if err != nil {
			return err
		}
		result, err = current.NewResultFromResult(r)
		return err
	})
	return result, err
}

// serve starts the echo server: it greets with "hello from <ns>/<name>"
// and then echoes each line.
func (p *AppPod) serve() error {
	l, err := ListenIn(p.NetnsPath(), fmt.Sprintf(":%d", EchoPort))
	if err != nil {
		return err
	}
	p.listener = l
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			p.accepted.Add(1)
			p.mu.Lock()
			p.open = append(p.open, conn)
			p.mu.Unlock()
			go func() {
				defer conn.Close()
				fmt.Fprintf(conn, "hello from %s\n", p)
				r := bufio.NewReader(conn)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := conn.Write([]byte(line)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return nil
}

func (p *AppPod) closeServer() {
	if p.listener != nil {
		p.listener.Close()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.open {
		c.Close()
	}
	p.open = nil
}

// Conn is a client connection opened from a pod.
type Conn struct {
	net.Conn
	r *bufio.Reader
	// Greeting is the server's first line ("hello from ns/name").
	Greeting string
}

// Dial opens a connection from inside the pod to address and reads the
// server's greeting.
func (p *AppPod) Dial(address string, timeout time.Duration) (*Conn, error) {
	nc, err := DialIn(p.NetnsPath(), address, timeout)
	if err != nil {
		return nil, err
	}
	c := &Conn{Conn: nc, r: bufio.NewReader(nc)}
	_ = nc.SetDeadline(time.Now().Add(timeout))
	line, err := c.r.ReadString('\n')
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("no greeting from %s: %w", address, err)
	}
	_ = nc.SetDeadline(time.Time{})
	c.Greeting = strings.TrimSpace(strings.TrimPrefix(line, "hello from "))
	return c, nil
}

// Echo sends a line and reads it back.
func (c *Conn) Echo(msg string, timeout time.Duration) error {
	_ = c.SetDeadline(time.Now().Add(timeout))
	defer c.SetDeadline(time.Time{})
	if _, err := fmt.Fprintf(c, "%s\n", msg); err != nil {
		return err
	}
	line, err := c.r.ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != msg {
		return fmt.Errorf("echo: sent %q, got %q", msg, line)
	}
	return nil
}

// Request opens a connection, echoes one line, closes, and returns which
// pod answered (namespace/name).
func (p *AppPod) Request(address string, timeout time.Duration) (string, error) {
	c, err := p.Dial(address, timeout)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if err := c.Echo("ping from "+p.String(), timeout); err != nil {
		return "", err
	}
	return c.Greeting, nil
}

// Addr is ip:8080 of the pod.
func (p *AppPod) Addr() string { return net.JoinHostPort(p.IP, fmt.Sprint(EchoPort)) }

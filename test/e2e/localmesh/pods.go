package localmesh

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/ambientmesh/ambient-operator/test/testenv/kubestandin"
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
	sandbox                         *podSandbox
	listener                        net.Listener
	httpServer                      *http.Server
	accepted                        atomic.Int64
	flakyCalls                      atomic.Int64
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
		p.sandbox.closeForwarder()
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
	return m.addPod(ctx, namespace, name, sa, node, labels, (*AppPod).serve)
}

// AddHTTPPod is AddPod with an HTTP server on EchoPort instead of the echo
// server (see serveHTTP).
func (m *Mesh) AddHTTPPod(ctx context.Context, namespace, name, sa string, node *Node, labels map[string]string) (*AppPod, error) {
	return m.addPod(ctx, namespace, name, sa, node, labels, (*AppPod).serveHTTP)
}

func (m *Mesh) addPod(ctx context.Context, namespace, name, sa string, node *Node, labels map[string]string, serve func(*AppPod) error) (*AppPod, error) {
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
		Netns: podNetnsName(namespace, name)}
	p.sandbox = &podSandbox{Namespace: namespace, Name: name, UID: p.UID, Node: node, Netns: p.Netns}
	if err := m.addSandbox(ctx, p.sandbox); err != nil {
		return nil, err
	}
	p.IP = p.sandbox.IP
	if err := serve(p); err != nil {
		return nil, err
	}
	if err := kubestandin.WritePodStatus(ctx, m.Client, created, p.IP, node.UnderlayIP, true); err != nil {
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
	delErr := m.removeSandbox(ctx, p.sandbox)
	err := m.Clientset.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To(int64(0))})
	if apierrors.IsNotFound(err) {
		err = nil
	}
	return errors.Join(delErr, err)
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

// serveHTTP starts an HTTP/1.1 server: every request is answered 200 with
// the body "hello from <ns>/<name> (<method> <path>)" and the header
// X-Served-By: <ns>/<name>.
// FlakyPath is where the HTTP server answers every other request 503 (the
// first, the third, ...): a flaky backend for retry policies to hide.
const FlakyPath = "/flaky"

func (p *AppPod) serveHTTP() error {
	l, err := ListenIn(p.NetnsPath(), fmt.Sprintf(":%d", EchoPort))
	if err != nil {
		return err
	}
	p.listener = l
	p.httpServer = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == FlakyPath && p.flakyCalls.Add(1)%2 == 1 {
				http.Error(w, "flaky: every other request to "+FlakyPath+" fails", http.StatusServiceUnavailable)
				return
			}
			w.Header().Set("X-Served-By", p.String())
			fmt.Fprintf(w, "hello from %s (%s %s)\n", p, r.Method, r.URL.Path)
		}),
		ConnState: func(_ net.Conn, state http.ConnState) {
			if state == http.StateNew {
				p.accepted.Add(1)
			}
		},
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = p.httpServer.Serve(l) }()
	return nil
}

func (p *AppPod) closeServer() {
	if p.httpServer != nil {
		p.httpServer.Close()
	}
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
	defer func() { _ = c.SetDeadline(time.Time{}) }()
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

// Curl runs Debian's curl inside the pod's netns (the application client
// of the L7 tests) with -sS and args, and returns what it printed.
func (p *AppPod) Curl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", p.Netns, "curl", "-sS"}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("curl %s from %s: %w: %s", strings.Join(args, " "), p, err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

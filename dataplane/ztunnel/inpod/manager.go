package inpod

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"sync"

	"github.com/go-logr/logr"

	handoffpb "github.com/ambientmesh/ambient-operator/api/handoff/v1alpha1"
)

// Ports are the in-pod listener ports.
type Ports struct {
	Outbound, Inbound, HBONE uint16
}

// DefaultPorts are Istio's ambient ports.
var DefaultPorts = Ports{Outbound: 15001, Inbound: 15006, HBONE: 15008}

// Pod is an enrolled pod as handed over by the node agent, with its listeners.
type Pod struct {
	UID, Name, Namespace, ServiceAccount string
	// Net dials from the pod's network (marked, so the capture skips it) and reads original
	// destinations of captured connections.
	Net                      Network
	Outbound, Inbound, HBONE net.Listener
}

// Network is what the data path needs from a pod's network namespace.
type Network interface {
	Dial(ctx context.Context, network, addr string) (net.Conn, error)
	OriginalDst(c net.Conn) (netip.AddrPort, bool, error)
}

// PodHandler serves the listeners of a pod. ServePod starts serving and returns at once;
// stop, called after the Manager closed the listeners (the pod was deleted or ztunnel
// stops), ends every connection of the pod and returns when all are gone. No goroutine
// waits per pod: a node may have many idle pods.
type PodHandler interface {
	ServePod(pod *Pod) (stop func())
}

type podEntry struct {
	pod   *Pod
	netns *NetNS
	stop  func()
}

// Manager is the set of pods this ztunnel serves; it implements handoff.Workloads.
type Manager struct {
	Handler PodHandler
	Ports   Ports
	Log     logr.Logger
	// DisableSpareSockets makes the pods' IPv4 dials create their socket when they dial
	// instead of taking one made in advance (NetNS.Dial): the AMBIENT_PERF_SPARE_SOCKETS=off
	// switch, docs/performance.md. Set it before the first Add.
	DisableSpareSockets bool

	mu        sync.Mutex
	pods      map[string]*podEntry
	accepting bool
}

// NewManager returns an empty manager.
func NewManager(h PodHandler, ports Ports, log logr.Logger) *Manager {
	return &Manager{Handler: h, Ports: ports, Log: log, pods: map[string]*podEntry{}, accepting: true}
}

// Add starts serving a pod in netns (ownership of the file passes to the manager). A repeat
// for a pod already served in the same namespace (a replay) changes nothing.
func (m *Manager) Add(w *handoffpb.AddWorkload, file *os.File) error {
	ns, err := NewNetNS(file)
	if err != nil {
		file.Close()
		return err
	}
	ns.noSpares = m.DisableSpareSockets
	m.mu.Lock()
	old := m.pods[w.GetUid()]
	accepting := m.accepting
	m.mu.Unlock()
	if old != nil && old.netns.Inode() == ns.Inode() {
		ns.Close()
		return nil
	}
	if !accepting {
		ns.Close()
		return errors.New("ztunnel is shutting down")
	}
	pod := &Pod{UID: w.GetUid(), Name: w.GetName(), Namespace: w.GetNamespace(), ServiceAccount: w.GetServiceAccount(), Net: ns}
	if err := m.listen(pod, ns); err != nil {
		ns.Close()
		return fmt.Errorf("pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	e := &podEntry{pod: pod, netns: ns, stop: m.Handler.ServePod(pod)}
	m.mu.Lock()
	m.pods[pod.UID] = e
	m.mu.Unlock()
	if old != nil {
		m.stop(old) // the pod's sandbox was recreated: the old netns is gone or stale
	}
	m.Log.Info("serving pod", "pod", pod.Namespace+"/"+pod.Name, "uid", pod.UID)
	return nil
}

// listen opens the three listeners in the pod's namespace.
func (m *Manager) listen(pod *Pod, ns *NetNS) error {
	var err error
	if pod.Outbound, err = ns.Listen(m.Ports.Outbound); err != nil {
		return fmt.Errorf("listening on %d: %w", m.Ports.Outbound, err)
	}
	if pod.Inbound, err = ns.Listen(m.Ports.Inbound); err != nil {
		closeListeners(pod)
		return fmt.Errorf("listening on %d: %w", m.Ports.Inbound, err)
	}
	if pod.HBONE, err = ns.Listen(m.Ports.HBONE); err != nil {
		closeListeners(pod)
		return fmt.Errorf("listening on %d: %w", m.Ports.HBONE, err)
	}
	return nil
}

func closeListeners(pod *Pod) {
	for _, l := range []net.Listener{pod.Outbound, pod.Inbound, pod.HBONE} {
		if l != nil {
			_ = l.Close()
		}
	}
}

// stop closes a pod's listeners, ends its handler (closing its connections) and releases
// its namespace.
func (m *Manager) stop(e *podEntry) {
	closeListeners(e.pod)
	e.stop()
	_ = e.netns.Close()
	m.Log.Info("stopped serving pod", "pod", e.pod.Namespace+"/"+e.pod.Name, "uid", e.pod.UID)
}

// Has reports whether a pod is served.
func (m *Manager) Has(uid string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.pods[uid] != nil
}

// Del stops serving a pod.
func (m *Manager) Del(uid string) error {
	m.mu.Lock()
	e := m.pods[uid]
	delete(m.pods, uid)
	m.mu.Unlock()
	if e != nil {
		m.stop(e)
	}
	return nil
}

// Retain stops serving every pod not in keep.
func (m *Manager) Retain(keep map[string]struct{}) {
	m.mu.Lock()
	var drop []*podEntry
	for uid, e := range m.pods {
		if _, ok := keep[uid]; !ok {
			drop = append(drop, e)
			delete(m.pods, uid)
		}
	}
	m.mu.Unlock()
	for _, e := range drop {
		m.stop(e)
	}
}

// Pods lists the served pods, ordered by namespace and name.
func (m *Manager) Pods() []*Pod {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*Pod, 0, len(m.pods))
	for _, e := range m.pods {
		out = append(out, e.pod)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// StopAccepting closes every pod's listeners (a new ztunnel's listeners take the new
// connections) while open connections carry on; later Adds are refused.
func (m *Manager) StopAccepting() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.accepting = false
	for _, e := range m.pods {
		closeListeners(e.pod)
	}
}

// Close stops serving every pod.
func (m *Manager) Close() {
	m.Retain(nil)
}

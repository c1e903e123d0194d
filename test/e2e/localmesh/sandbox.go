package localmesh

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	corev1 "k8s.io/api/core/v1"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/dataplane/cni/conflist"
	"github.com/ambientmesh/ambient-operator/internal/meshconfig"
)

// podSandbox is a pod's own network namespace, wired by its node's CNI
// chain (Debian's bridge + host-local, then our plugin, which asks the
// node agent to enroll the pod per its labels), as a container runtime
// makes it. App pods (AddPod) and the pods of waypoint Deployments get one.
type podSandbox struct {
	Namespace, Name, UID string
	Node                 *Node
	Netns                string
	// IP is the pod's IPv4 address from CNI ADD ("" until then).
	IP string

	mu sync.Mutex
	// forwarder lets the pod reach the apiserver and the control plane.
	forwarder *Forwarder
}

// NetnsPath is the pod's netns.
func (s *podSandbox) NetnsPath() string { return NetnsPath(s.Netns) }

func (s *podSandbox) String() string { return s.Namespace + "/" + s.Name }

// podNetnsName names a pod's netns after the pod.
func podNetnsName(namespace, name string) string {
	return fmt.Sprintf("am-p-%s-%s", namespace, name)
}

// addSandbox creates the pod's netns, runs CNI ADD for it and makes the
// control plane reachable from it.
func (m *Mesh) addSandbox(ctx context.Context, s *podSandbox) error {
	if _, err := os.Stat(s.NetnsPath()); err != nil {
		if err := createNetns(m.state, s.Netns); err != nil {
			return err
		}
	}
	if err := s.Node.linkPodNetns(s.Netns); err != nil {
		return err
	}
	res, err := m.cni(ctx, s, true)
	if err != nil {
		return fmt.Errorf("CNI ADD for %s on %s: %w", s, s.Node.Name, err)
	}
	for _, ip := range res.IPs {
		if ip.Address.IP.To4() != nil {
			s.IP = ip.Address.IP.String()
		}
	}
	if s.IP == "" {
		return fmt.Errorf("CNI ADD for %s returned no IPv4 address", s)
	}
	f, err := m.reachControlPlane(s.Netns)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.forwarder = f
	s.mu.Unlock()
	return nil
}

// removeSandbox runs CNI DEL and deletes the pod's netns (with every rule
// and socket inside), its link in the node's netns dir and its hosts file.
func (m *Mesh) removeSandbox(ctx context.Context, s *podSandbox) error {
	s.closeForwarder()
	var delErr error
	if s.IP != "" {
		_, delErr = m.cni(ctx, s, false)
		s.IP = ""
	}
	return errors.Join(delErr, s.Node.unlinkPodNetns(s.Netns), deleteNetns(s.Netns),
		os.RemoveAll(filepath.Join("/etc/netns", s.Netns)))
}

func (s *podSandbox) closeForwarder() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.forwarder != nil {
		_ = s.forwarder.Close()
		s.forwarder = nil
	}
}

// cni runs the node's CNI configuration (as the agent left it) from a
// thread inside the node's netns, the way a container runtime does.
func (m *Mesh) cni(ctx context.Context, s *podSandbox, add bool) (*current.Result, error) {
	confDir := s.Node.HostPath(meshv1alpha1.DefaultCNIConfDir)
	primary, err := conflist.Primary(confDir)
	if err != nil {
		return nil, err
	}
	list, err := libcni.ConfListFromFile(primary)
	if err != nil {
		return nil, err
	}
	cniConfig := libcni.NewCNIConfigWithCacheDir(
		[]string{s.Node.HostPath(meshv1alpha1.DefaultCNIBinDir), debianCNIDir},
		s.Node.HostPath("/var/lib/cni/cache"), nil)
	rt := &libcni.RuntimeConf{
		ContainerID: "ctr-" + s.UID, NetNS: s.NetnsPath(), IfName: "eth0",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", s.Namespace}, {"K8S_POD_NAME", s.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", "ctr-" + s.UID}, {"K8S_POD_UID", s.UID}},
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var result *current.Result
	err = Do(s.Node.NetnsPath(), func() error {
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

// controlPlaneNames are the names the components dial the control plane by
// (the mesh config's address is the first).
func (m *Mesh) controlPlaneNames() []string {
	svc := meshconfig.ControlPlaneServiceName + "." + m.Namespace + ".svc"
	return []string{svc, svc + ".cluster.local"}
}

// reachControlPlane makes the apiserver and the control plane, which listen
// on the root netns's 127.0.0.1, reachable from a netns the way nodes reach
// them: the control plane's Service names resolve to 127.0.0.1 there (the
// netns's hosts file, which `ip netns exec` mounts over /etc/hosts), where
// a forwarder relays the apiserver, xDS and CA ports to the root netns.
func (m *Mesh) reachControlPlane(netns string) (*Forwarder, error) {
	if err := writeNetnsHosts(m.state, netns, m.controlPlaneNames()); err != nil {
		return nil, err
	}
	return forward(NetnsPath(netns), []int{m.APIPort, int(meshconfig.XDSPort), int(meshconfig.CAPort)})
}

// nodeLabels are the labels of a Node object the mesh registers.
func nodeLabels(name string) map[string]string {
	return map[string]string{corev1.LabelOSStable: "linux", corev1.LabelHostname: name, corev1.LabelArchStable: "amd64"}
}

// hostsFile is a netns's /etc/hosts: names resolves to its loopback.
func hostsFile(netns string, names []string) string {
	return "127.0.0.1 localhost " + netns + "\n::1 localhost\n127.0.0.1 " + strings.Join(names, " ") + "\n"
}

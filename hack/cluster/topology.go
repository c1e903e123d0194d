package main

import (
	"fmt"
	"path/filepath"
)

// Addresses and names of the cluster. Every address is private and used
// only on the bridge and inside the network namespaces this program
// creates; none of these ranges is used by the local mesh (10.88/10.89).
const (
	// bridgeName is the bridge in the root network namespace that links the
	// nodes to each other and to the control plane.
	bridgeName = "amc0"
	// controlPlaneIP is the root namespace's address on the bridge: the
	// apiserver, controller-manager and scheduler listen there.
	controlPlaneIP = "10.77.0.1"
	bridgePrefix   = 24
	// clusterPodCIDR is split into one /24 per node: node N gets 10.78.N.0/24.
	clusterPodCIDR = "10.78.0.0/16"
	serviceCIDR    = "10.79.0.0/16"
	// apiServiceIP is the first address of serviceCIDR: the kubernetes Service.
	apiServiceIP = "10.79.0.1"
	// apiServerPort is the apiserver's secure port on controlPlaneIP.
	apiServerPort = 6443
	// etcd serves plain HTTP on the root namespace's loopback only: pods
	// cannot reach it.
	etcdClientURL = "http://127.0.0.1:2379"
	etcdPeerURL   = "http://127.0.0.1:2380"
	// cgroupParent holds one cgroup per node (its kubelet's cgroupRoot) in
	// every cgroup hierarchy, so two kubelets never share /kubepods.
	cgroupParent = "/ambient-cluster"
	clusterName  = "ambient-cluster"
	// clusterDomain is the DNS domain kubelets write into pods' search path.
	clusterDomain = "cluster.local"
)

// Node is one Kubernetes node: a network namespace and a mount namespace
// holding its containerd, kubelet and kube-proxy, with its own directories
// bind-mounted over the host paths a node owns (see nodeHostPaths).
type Node struct {
	Name string // Kubernetes node name, network namespace name and cgroup name
	IP   string // address on the bridge; the node's InternalIP
	// PodCIDR is the node's slice of clusterPodCIDR; the bridge CNI plugin
	// allocates from it and the Node's spec.podCIDR names it.
	PodCIDR string
	// PodGateway is the node's address on its pod bridge (cni0).
	PodGateway string
	// Dir holds everything of the node: configuration, containerd's root and
	// state, and the directories bind-mounted over nodeHostPaths.
	Dir string
}

// newNode describes node index (1-based) of a cluster whose state is in stateDir.
func newNode(stateDir string, index int) Node {
	name := fmt.Sprintf("amc-node%d", index)
	return Node{
		Name:       name,
		IP:         fmt.Sprintf("10.77.0.%d", 10+index),
		PodCIDR:    fmt.Sprintf("10.78.%d.0/24", index),
		PodGateway: fmt.Sprintf("10.78.%d.1", index),
		Dir:        filepath.Join(stateDir, "nodes", name),
	}
}

// nodeHostPaths are the host directories every node has for itself. Each
// node's mount namespace bind-mounts its own copy over them, so processes
// and hostPath volumes on a node see the usual paths while two nodes on
// this one machine never share a file: CNI configuration and plugins,
// host-local IPAM state, the kubelet's root, pod logs, pods' network
// namespaces, containerd's shim sockets and the mesh's own run directory.
var nodeHostPaths = []string{
	"/etc/cni/net.d",
	"/opt/cni/bin",
	"/var/lib/cni",
	"/var/lib/kubelet",
	"/var/log/pods",
	"/var/log/containers",
	"/run/netns",
	"/run/containerd",
	"/run/ambientmesh",
}

// Own returns where a node keeps its copy of host path p.
func (n Node) Own(p string) string { return filepath.Join(n.Dir, "host", p) }

// MountNamespace is the file that keeps the node's mount namespace alive.
func (n Node) MountNamespace(stateDir string) string {
	return filepath.Join(stateDir, "ns", n.Name+".mnt")
}

// NetnsPath is the node's network namespace as `ip netns` names it.
func (n Node) NetnsPath() string { return filepath.Join("/run/netns", n.Name) }

// ContainerdSocket is the node's containerd endpoint (a path of its own,
// never /run/containerd/containerd.sock).
func (n Node) ContainerdSocket() string { return filepath.Join(n.Dir, "containerd", "containerd.sock") }

// CgroupRoot is the node kubelet's cgroupRoot.
func (n Node) CgroupRoot() string { return cgroupParent + "/" + n.Name }

// apiServerURL is where every client reaches the apiserver.
func apiServerURL() string { return fmt.Sprintf("https://%s:%d", controlPlaneIP, apiServerPort) }

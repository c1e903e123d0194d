package main

import (
	"encoding/json"
	"fmt"
	"strings"

	"sigs.k8s.io/yaml"
)

// pauseImage is the pod sandbox image: our own pause binary (hack/cluster/pause),
// imported into every node's containerd; there is no registry to pull from.
const pauseImage = "localhost/ambient-cluster/pause:v1"

// podNetworkName names the primary CNI network (and host-local's state directory).
const podNetworkName = "ambient-cluster"

// containerdConfig is a node's containerd configuration (version 2, as
// containerd 1.6 reads it). Every path containerd writes is the node's own:
// root, state, socket, runc's state and the opt plugin's directory. The
// CNI paths are the usual ones, which the node's mount namespace maps to
// the node's own directories.
func containerdConfig(n Node, s hostSettings) string {
	var b strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	line("version = 2")
	line("root = %q", n.Dir+"/containerd/root")
	line("state = %q", n.Dir+"/containerd/state")
	line("")
	line("[grpc]")
	line("  address = %q", n.ContainerdSocket())
	line("")
	line("[plugins]")
	line(`  [plugins."io.containerd.internal.v1.opt"]`)
	line("    path = %q", n.Dir+"/containerd/opt")
	line(`  [plugins."io.containerd.grpc.v1.cri"]`)
	line("    sandbox_image = %q", pauseImage)
	line("    restrict_oom_score_adj = %t", s.RestrictOOMScoreAdj)
	line(`    [plugins."io.containerd.grpc.v1.cri".containerd]`)
	line(`      snapshotter = "overlayfs"`)
	line(`      default_runtime_name = "runc"`)
	line(`      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]`)
	line(`        runtime_type = "io.containerd.runc.v2"`)
	line(`        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]`)
	line("          Root = %q", n.Dir+"/containerd/runc")
	line("          SystemdCgroup = %t", s.CgroupDriver == "systemd")
	line(`    [plugins."io.containerd.grpc.v1.cri".cni]`)
	line(`      bin_dir = "/opt/cni/bin"`)
	line(`      conf_dir = "/etc/cni/net.d"`)
	line("      max_conf_num = 1")
	return b.String()
}

// cniConfList is a node's primary CNI network, as a cluster would have it:
// Debian's bridge plugin with host-local IPAM from the node's pod CIDR, then
// portmap for hostPort. Pod traffic is routed, not masqueraded: the root
// namespace and the other nodes have routes to every node's pod CIDR.
func cniConfList(n Node) ([]byte, error) {
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       podNetworkName,
		"plugins": []any{
			map[string]any{
				"type":        "bridge",
				"bridge":      "cni0",
				"isGateway":   true,
				"ipMasq":      false,
				"hairpinMode": true,
				"ipam": map[string]any{
					"type":   "host-local",
					"ranges": [][]map[string]string{{{"subnet": n.PodCIDR, "gateway": n.PodGateway}}},
					"routes": []map[string]string{{"dst": "0.0.0.0/0"}},
				},
			},
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
		},
	}
	return json.MarshalIndent(conf, "", "  ")
}

// kubeletConfig is a node's KubeletConfiguration.
func kubeletConfig(n Node, s hostSettings, p pki) ([]byte, error) {
	cfg := map[string]any{
		"apiVersion": "kubelet.config.k8s.io/v1beta1",
		"kind":       "KubeletConfiguration",
		"authentication": map[string]any{
			"anonymous": map[string]any{"enabled": false},
			"webhook":   map[string]any{"enabled": true},
			"x509":      map[string]any{"clientCAFile": p.CACert()},
		},
		"authorization":            map[string]any{"mode": "Webhook"},
		"tlsCertFile":              p.Cert(n.Name + "-kubelet-serving"),
		"tlsPrivateKeyFile":        p.Key(n.Name + "-kubelet-serving"),
		"containerRuntimeEndpoint": "unix://" + n.ContainerdSocket(),
		"cgroupDriver":             s.CgroupDriver,
		"cgroupRoot":               n.CgroupRoot(),
		"failCgroupV1":             s.FailCgroupV1,
		"failSwapOn":               s.FailSwapOn,
		"oomScoreAdj":              s.OOMScoreAdj,
		// Pods resolve through CoreDNS (dns.go): the kubelet writes this
		// nameserver and the cluster domain's search path into their resolv.conf.
		"clusterDNS":    []string{clusterDNSIP},
		"clusterDomain": clusterDomain,
		// The node's resolver, for dnsPolicy Default pods (CoreDNS itself).
		"resolvConf": "/etc/resolv.conf",
		// Images are imported, never pulled: garbage-collecting one would
		// lose it for good. The disk is shared with other work, so eviction
		// waits until it is nearly full.
		"imageGCHighThresholdPercent": 100,
		"imageGCLowThresholdPercent":  99,
		"evictionHard": map[string]string{
			"memory.available":  "100Mi",
			"nodefs.available":  "1%",
			"nodefs.inodesFree": "1%",
			"imagefs.available": "1%",
		},
	}
	return yaml.Marshal(cfg)
}

// kubeProxyConfig is a node's KubeProxyConfiguration.
func kubeProxyConfig(n Node, s hostSettings, mode, kubeconfig string) ([]byte, error) {
	cfg := map[string]any{
		"apiVersion":       "kubeproxy.config.k8s.io/v1alpha1",
		"kind":             "KubeProxyConfiguration",
		"clientConnection": map[string]any{"kubeconfig": kubeconfig},
		"hostnameOverride": n.Name,
		"mode":             mode,
		"clusterCIDR":      clusterPodCIDR,
		"oomScoreAdj":      s.OOMScoreAdj,
		// NodePorts on the node's own address only, and never on 127.0.0.1
		// (which would need route_localnet).
		"nodePortAddresses": []string{"primary"},
		"iptables":          map[string]any{"localhostNodePorts": false},
		// nf_conntrack_max is global and read-only outside the root
		// network namespace: leave it alone.
		"conntrack": map[string]any{"maxPerCore": 0},
	}
	return yaml.Marshal(cfg)
}

// Command lines of the control plane, in the root network namespace.

func etcdArgs(dataDir string) []string {
	return []string{
		"--name=" + clusterName,
		"--data-dir=" + dataDir,
		"--listen-client-urls=" + etcdClientURL,
		"--advertise-client-urls=" + etcdClientURL,
		"--listen-peer-urls=" + etcdPeerURL,
		"--initial-advertise-peer-urls=" + etcdPeerURL,
		"--initial-cluster=" + clusterName + "=" + etcdPeerURL,
	}
}

func apiServerArgs(p pki) []string {
	return []string{
		"--etcd-servers=" + etcdClientURL,
		fmt.Sprintf("--bind-address=%s", controlPlaneIP),
		fmt.Sprintf("--advertise-address=%s", controlPlaneIP),
		fmt.Sprintf("--secure-port=%d", apiServerPort),
		"--tls-cert-file=" + p.Cert("apiserver"),
		"--tls-private-key-file=" + p.Key("apiserver"),
		"--client-ca-file=" + p.CACert(),
		"--kubelet-client-certificate=" + p.Cert("apiserver-kubelet-client"),
		"--kubelet-client-key=" + p.Key("apiserver-kubelet-client"),
		"--kubelet-certificate-authority=" + p.CACert(),
		"--kubelet-preferred-address-types=InternalIP",
		// Aggregated API servers trust the apiserver's front-proxy
		// certificate to name the user in these headers.
		"--requestheader-client-ca-file=" + p.FrontProxyCACert(),
		"--requestheader-allowed-names=front-proxy-client",
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file=" + p.Cert("front-proxy-client"),
		"--proxy-client-key-file=" + p.Key("front-proxy-client"),
		"--service-account-issuer=https://kubernetes.default.svc." + clusterDomain,
		"--service-account-key-file=" + p.ServiceAccountPub(),
		"--service-account-signing-key-file=" + p.ServiceAccountKey(),
		"--service-cluster-ip-range=" + serviceCIDR,
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true",
		// The root namespace has no kube-proxy: webhooks and aggregated
		// APIs are reached at their endpoints' pod IPs, routed over the bridge.
		"--enable-aggregator-routing=true",
		"--profiling=false",
	}
}

// componentArgs are the flags kube-controller-manager and kube-scheduler
// share: one kubeconfig (its own client certificate) for the API and for
// delegated authentication and authorization, and the serving certificate
// of its secure port on the bridge. name is its file in the pki.
func componentArgs(p pki, name string) []string {
	kubeconfig := p.Kubeconfig(name)
	return []string{
		"--kubeconfig=" + kubeconfig,
		"--authentication-kubeconfig=" + kubeconfig,
		"--authorization-kubeconfig=" + kubeconfig,
		"--bind-address=" + controlPlaneIP,
		"--tls-cert-file=" + p.Cert(name+"-serving"),
		"--tls-private-key-file=" + p.Key(name+"-serving"),
		"--client-ca-file=" + p.CACert(),
		// One instance of each: nothing to elect.
		"--leader-elect=false",
		"--profiling=false",
	}
}

func controllerManagerArgs(p pki) []string {
	return append(componentArgs(p, "controller-manager"),
		"--root-ca-file="+p.CACert(),
		"--service-account-private-key-file="+p.ServiceAccountKey(),
		"--use-service-account-credentials=true",
		"--cluster-signing-cert-file="+p.CACert(),
		"--cluster-signing-key-file="+p.CAKey(),
		"--service-cluster-ip-range="+serviceCIDR,
		// Pod CIDRs are static, one per node (Node.PodCIDR), set by `cluster up`.
		"--allocate-node-cidrs=false",
	)
}

func schedulerArgs(p pki) []string {
	return componentArgs(p, "scheduler")
}

func kubeletArgs(n Node, configFile string, p pki) []string {
	return []string{
		"--config=" + configFile,
		"--kubeconfig=" + p.Kubeconfig(n.Name+"-kubelet"),
		"--hostname-override=" + n.Name,
		"--node-ip=" + n.IP,
	}
}

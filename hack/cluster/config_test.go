package main

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"sigs.k8s.io/yaml"
)

// The primary network parses as a CNI conflist (as containerd's libcni
// reads it): bridge with host-local IPAM from the node's pod CIDR, then portmap.
func TestCNIConfList(t *testing.T) {
	n := newNode("/state", 2)
	data, err := cniConfList(n)
	if err != nil {
		t.Fatal(err)
	}
	list, err := libcni.ConfListFromBytes(data)
	if err != nil {
		t.Fatal(err)
	}
	if list.Name != podNetworkName || len(list.Plugins) != 2 ||
		list.Plugins[0].Network.Type != "bridge" || list.Plugins[1].Network.Type != "portmap" {
		t.Fatalf("conflist %s: want bridge then portmap", data)
	}
	var bridge struct {
		IPMasq bool `json:"ipMasq"`
		IPAM   struct {
			Type   string                `json:"type"`
			Ranges [][]map[string]string `json:"ranges"`
		} `json:"ipam"`
	}
	if err := json.Unmarshal(list.Plugins[0].Bytes, &bridge); err != nil {
		t.Fatal(err)
	}
	if bridge.IPAM.Type != "host-local" || len(bridge.IPAM.Ranges) != 1 || bridge.IPAM.Ranges[0][0]["subnet"] != "10.78.2.0/24" {
		t.Errorf("bridge IPAM %+v: want host-local from 10.78.2.0/24", bridge.IPAM)
	}
	if bridge.IPMasq {
		t.Error("pod traffic is masqueraded; pod IPs must be seen as they are")
	}
}

func TestContainerdConfig(t *testing.T) {
	n := newNode("/state", 1)
	tests := []struct {
		name     string
		settings hostSettings
		want     []string
	}{
		{
			name:     "restricted OOM score (this VM)",
			settings: settingsFor(hostFacts{CanLowerOOMScore: false}),
			want:     []string{"restrict_oom_score_adj = true", "SystemdCgroup = false"},
		},
		{
			name:     "unrestricted",
			settings: settingsFor(hostFacts{CanLowerOOMScore: true}),
			want:     []string{"restrict_oom_score_adj = false"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conf := containerdConfig(n, tt.settings)
			want := append(tt.want,
				// Everything containerd writes is the node's own, never a
				// system containerd's /var/lib/containerd or /run/containerd.
				`root = "/state/nodes/amc-node1/containerd/root"`,
				`state = "/state/nodes/amc-node1/containerd/state"`,
				`address = "/state/nodes/amc-node1/containerd/containerd.sock"`,
				`Root = "/state/nodes/amc-node1/containerd/runc"`,
				`path = "/state/nodes/amc-node1/containerd/opt"`,
				`sandbox_image = "`+pauseImage+`"`,
			)
			for _, line := range want {
				if !strings.Contains(conf, line) {
					t.Errorf("containerd config lacks %s:\n%s", line, conf)
				}
			}
			if strings.Contains(conf, "/var/lib/containerd") {
				t.Errorf("containerd config names the system's /var/lib/containerd:\n%s", conf)
			}
		})
	}
}

// Each kubelet has a cgroup root of its own and the host's settings.
func TestKubeletConfig(t *testing.T) {
	p := pki{dir: "/state/pki", kubeconfigDir: "/state/kubeconfig"}
	thisVM := settingsFor(hostFacts{CgroupV2: false, Swap: false, CanLowerOOMScore: false})
	roots := map[string]bool{}
	for i := 1; i <= 2; i++ {
		n := newNode("/state", i)
		data, err := kubeletConfig(n, thisVM, p)
		if err != nil {
			t.Fatal(err)
		}
		var cfg struct {
			Kind                     string `json:"kind"`
			CgroupDriver             string `json:"cgroupDriver"`
			CgroupRoot               string `json:"cgroupRoot"`
			FailCgroupV1             *bool  `json:"failCgroupV1"`
			FailSwapOn               *bool  `json:"failSwapOn"`
			OOMScoreAdj              *int   `json:"oomScoreAdj"`
			ContainerRuntimeEndpoint string `json:"containerRuntimeEndpoint"`
			TLSCertFile              string `json:"tlsCertFile"`
		}
		if err := yaml.Unmarshal(data, &cfg); err != nil {
			t.Fatal(err)
		}
		if cfg.Kind != "KubeletConfiguration" || cfg.CgroupDriver != "cgroupfs" {
			t.Errorf("node %d: kind %q driver %q", i, cfg.Kind, cfg.CgroupDriver)
		}
		if cfg.FailCgroupV1 == nil || *cfg.FailCgroupV1 || cfg.OOMScoreAdj == nil || *cfg.OOMScoreAdj != 0 || cfg.FailSwapOn == nil || !*cfg.FailSwapOn {
			t.Errorf("node %d: failCgroupV1 %v oomScoreAdj %v failSwapOn %v; want false, 0, true on this VM", i, cfg.FailCgroupV1, cfg.OOMScoreAdj, cfg.FailSwapOn)
		}
		if cfg.ContainerRuntimeEndpoint != "unix://"+n.ContainerdSocket() {
			t.Errorf("node %d: runtime endpoint %s, want its own containerd", i, cfg.ContainerRuntimeEndpoint)
		}
		if cfg.TLSCertFile != p.Cert(n.Name+"-kubelet-serving") {
			t.Errorf("node %d: serving certificate %s", i, cfg.TLSCertFile)
		}
		if roots[cfg.CgroupRoot] || !strings.HasPrefix(cfg.CgroupRoot, cgroupParent+"/") {
			t.Errorf("node %d: cgroupRoot %s is shared or outside %s", i, cfg.CgroupRoot, cgroupParent)
		}
		roots[cfg.CgroupRoot] = true
	}
}

// The controller-manager and the scheduler each authenticate and serve with
// their own certificates (a mix-up would still start, with the wrong
// identity), and no flag is given twice.
func TestComponentArgs(t *testing.T) {
	p := pki{dir: "/state/pki", kubeconfigDir: "/state/kubeconfig"}
	for name, args := range map[string][]string{
		"controller-manager": controllerManagerArgs(p),
		"scheduler":          schedulerArgs(p),
	} {
		flags := map[string]string{}
		for _, arg := range args {
			flag, value, _ := strings.Cut(arg, "=")
			if _, twice := flags[flag]; twice {
				t.Errorf("%s: %s given twice", name, flag)
			}
			flags[flag] = value
		}
		for flag, want := range map[string]string{
			"--kubeconfig":                p.Kubeconfig(name),
			"--authentication-kubeconfig": p.Kubeconfig(name),
			"--authorization-kubeconfig":  p.Kubeconfig(name),
			"--tls-cert-file":             p.Cert(name + "-serving"),
			"--tls-private-key-file":      p.Key(name + "-serving"),
			"--bind-address":              controlPlaneIP,
			"--leader-elect":              "false",
		} {
			if flags[flag] != want {
				t.Errorf("%s: %s=%q, want %q", name, flag, flags[flag], want)
			}
		}
	}
	if got := controllerManagerArgs(p); !slices.Contains(got, "--cluster-signing-key-file="+p.CAKey()) {
		t.Errorf("controller-manager does not sign CSRs with the cluster CA: %v", got)
	}
}

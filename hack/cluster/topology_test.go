package main

import (
	"net"
	"strings"
	"testing"
)

func mustCIDR(t *testing.T, s string) *net.IPNet {
	t.Helper()
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func overlap(a, b *net.IPNet) bool { return a.Contains(b.IP) || b.Contains(a.IP) }

// The address plan: every node's address on the bridge, its own pod CIDR
// inside the cluster's, and no range overlapping another.
func TestAddressPlan(t *testing.T) {
	bridge := mustCIDR(t, controlPlaneIP+"/24")
	pods := mustCIDR(t, clusterPodCIDR)
	services := mustCIDR(t, serviceCIDR)
	for _, pair := range [][2]*net.IPNet{{bridge, pods}, {bridge, services}, {pods, services}} {
		if overlap(pair[0], pair[1]) {
			t.Errorf("%v overlaps %v", pair[0], pair[1])
		}
	}
	if !services.Contains(net.ParseIP(apiServiceIP)) {
		t.Errorf("kubernetes Service IP %s is outside %s", apiServiceIP, serviceCIDR)
	}
	seen := map[string]bool{}
	var nodeCIDRs []*net.IPNet
	for i := 1; i <= 9; i++ {
		n := newNode("/state", i)
		for _, v := range []string{n.Name, n.IP, n.PodCIDR} {
			if seen[v] {
				t.Errorf("node %d repeats %s", i, v)
			}
			seen[v] = true
		}
		if ip := net.ParseIP(n.IP); !bridge.Contains(ip) || n.IP == controlPlaneIP {
			t.Errorf("node %d address %s is not a free address of the bridge %s", i, n.IP, bridge)
		}
		cidr := mustCIDR(t, n.PodCIDR)
		if !pods.Contains(cidr.IP) || !cidr.Contains(net.ParseIP(n.PodGateway)) {
			t.Errorf("node %d pod CIDR %s (gateway %s) is not inside %s", i, n.PodCIDR, n.PodGateway, clusterPodCIDR)
		}
		for _, other := range nodeCIDRs {
			if overlap(cidr, other) {
				t.Errorf("node %d pod CIDR %s overlaps %s", i, cidr, other)
			}
		}
		nodeCIDRs = append(nodeCIDRs, cidr)
		if !strings.HasPrefix(n.Own("/etc/cni/net.d"), n.Dir+"/") {
			t.Errorf("node %d keeps /etc/cni/net.d outside its dir: %s", i, n.Own("/etc/cni/net.d"))
		}
	}
}

// Package rules installs, checks and removes the traffic redirection that
// captures an enrolled pod's TCP traffic into ztunnel, and the host-side
// rule that keeps kubelet health probes working.
//
// # What is installed inside a pod's network namespace
//
// With the default PodConfig (ports and mark from the design brief), for
// IPv4 and IPv6 alike:
//
//   - outbound: every TCP connection the pod opens is redirected (nat
//     REDIRECT) to port 15001 on loopback, except traffic leaving on the
//     loopback interface and sockets marked 0x539/0xfff (ztunnel's own
//     upstream connections, which it dials from inside the pod's netns);
//   - inbound: every TCP connection arriving at the pod is redirected to
//     port 15006, except connections to 15008 (HBONE, answered by ztunnel
//     directly), traffic arriving on loopback, marked traffic, and traffic
//     from the kubelet probe address (169.254.7.127 for IPv4;
//     fd16:9254:7127:1337:ffff:ffff:ffff:ffff for IPv6, the address Istio
//     uses; both SNATed on the host, see below).
//
// Both redirections are nat REDIRECT, so a proxy listening on 15001 and
// 15006 reads the original destination with getsockopt(SO_ORIGINAL_DST)
// (IP6T_SO_ORIGINAL_DST for IPv6). UDP (DNS included) and every other
// protocol are left alone.
//
// # Both IP versions
//
// The IPv6 rules are the IPv4 rules with the IPv6 probe address, installed
// in every pod whenever the kernel has IPv6 (not built without it nor booted
// with ipv6.disable=1), whatever addresses the pod has: a pod with IPv6
// switched off by sysctl still gets them. A pod is never captured over one
// version only: if the IPv6 rules cannot be installed (no ip6tables binary,
// no IPv6 nat in the kernel), Install fails before it touches the IPv4
// rules (iptables) or installs neither (nftables: one transaction), and the
// caller does not enroll the pod. With no IPv6 in the kernel there is no
// IPv6 traffic to capture, and only IPv4 is installed.
//
// # Backends
//
// Two backends produce the same behaviour from the same rule model:
//
//   - "iptables": chains AMBIENT-PREROUTING and AMBIENT-OUTPUT in the nat
//     table, jumped to from the first position of PREROUTING and OUTPUT,
//     once with iptables and once with ip6tables. The binaries
//     (github.com/coreos/go-iptables) run with the calling thread switched
//     into the pod's netns.
//   - "nftables": tables "ip ambientmesh" and "ip6 ambientmesh", each with
//     base chains prerouting (nat, dstnat) and output (nat, -100),
//     programmed over netlink (github.com/google/nftables) with a socket
//     opened in the pod's netns. Every rule carries a comment naming what it
//     does.
//
// # Idempotence and restoration
//
// Install reconciles: it reads what is installed and changes nothing when it
// already matches (so restarting the node agent never opens a window without
// capture). Remove deletes only what Install created and leaves the pod's
// other rules as they were; with iptables-nft, a nat table (ip or ip6) left
// with nothing but empty built-in chains is deleted too, so `iptables-save`
// and `ip6tables-save` show the same text before Install and after Remove.
//
// # Host side
//
// SyncHost keeps, in the node's netns, one SNAT rule per enrolled pod IP:
// TCP from a local address of the node (kubelet) to that pod leaves with
// the probe source address of the pod IP's family, which the in-pod rules
// let through uncaptured. iptables: chain AMBIENT-POSTROUTING in nat,
// jumped to first from POSTROUTING (ip6tables for IPv6 pod IPs); nftables:
// tables "ip ambientmesh-host" and "ip6 ambientmesh-host", chain postrouting
// at priority srcnat-1 so it decides before the primary CNI's masquerade. A
// family with no enrolled pod IP has no host chain or table.
//
// Network namespaces are named by path: a bind mount (/var/run/netns/x),
// /proc/<pid>/ns/net, or /proc/self/fd/<n> for a namespace held as an open
// file descriptor. An empty path means the caller's own namespace.
package rules

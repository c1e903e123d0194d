// Package rules installs, checks and removes the traffic redirection that
// captures an enrolled pod's TCP traffic into ztunnel, and the host-side
// rule that keeps kubelet health probes working.
//
// # What is installed inside a pod's network namespace
//
// With the default PodConfig (ports and mark from the design brief):
//
//   - outbound: every TCP connection the pod opens is redirected (nat
//     REDIRECT) to 127.0.0.1:15001, except traffic leaving on the loopback
//     interface and sockets marked 0x539/0xfff (ztunnel's own upstream
//     connections, which it dials from inside the pod's netns);
//   - inbound: every TCP connection arriving at the pod is redirected to
//     port 15006, except connections to 15008 (HBONE, answered by ztunnel
//     directly), traffic arriving on loopback, marked traffic, and traffic
//     from 169.254.7.127 (kubelet probes, SNATed on the host, see below).
//
// Both redirections are nat REDIRECT, so a proxy listening on 15001 and
// 15006 reads the original destination with getsockopt(SO_ORIGINAL_DST).
// UDP (DNS included) and every other protocol are left alone.
//
// # Backends
//
// Two backends produce the same behaviour from the same rule model:
//
//   - "iptables": chains AMBIENT-PREROUTING and AMBIENT-OUTPUT in the nat
//     table, jumped to from the first position of PREROUTING and OUTPUT.
//     The iptables binary (github.com/coreos/go-iptables) runs with the
//     calling thread switched into the pod's netns.
//   - "nftables": one table "ip ambientmesh" with base chains prerouting
//     (nat, dstnat) and output (nat, -100), programmed over netlink
//     (github.com/google/nftables) with a socket opened in the pod's netns.
//     Every rule carries a comment naming what it does.
//
// # Idempotence and restoration
//
// Install reconciles: it reads what is installed and changes nothing when it
// already matches (so restarting the node agent never opens a window without
// capture). Remove deletes only what Install created and leaves the pod's
// other rules as they were; with iptables-nft, a nat table left with nothing
// but empty built-in chains is deleted too, so `iptables-save` shows the same
// text before Install and after Remove.
//
// # Host side
//
// SyncHost keeps, in the node's netns, one SNAT rule per enrolled pod IP:
// TCP from a local address of the node (kubelet) to that pod leaves with
// source 169.254.7.127, which the in-pod rules let through uncaptured.
// iptables: chain AMBIENT-POSTROUTING in nat, jumped to first from
// POSTROUTING; nftables: table "ip ambientmesh-host", chain postrouting at
// priority srcnat-1 so it decides before the primary CNI's masquerade.
//
// Network namespaces are named by path: a bind mount (/var/run/netns/x),
// /proc/<pid>/ns/net, or /proc/self/fd/<n> for a namespace held as an open
// file descriptor. An empty path means the caller's own namespace.
package rules

// Package nodetest holds ztunnel's network-namespace tier (root only): two "nodes" joined by
// an underlay link, pods in their own namespaces with the CNI package's capture rules
// (iptables and nftables), real ztunnel processes built from cmd/ztunnel, a test node agent
// speaking the hand-off protocol, and an in-process control plane (go-control-plane) and test
// CA. Everything is created by the tests and removed when they end.
package nodetest

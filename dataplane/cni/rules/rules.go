package rules

import (
	"errors"
	"fmt"
	"net/netip"
)

// Backend names accepted by New (the mesh config's choice).
const (
	BackendIPTables = "iptables"
	BackendNFTables = "nftables"
)

// ErrNotInstalled is returned (wrapped) by Check when none of the pod's
// capture rules are present.
var ErrNotInstalled = errors.New("capture rules are not installed")

// Rules installs and removes the capture of one backend. Methods are safe to
// call concurrently for different network namespaces.
type Rules interface {
	// Backend is "iptables" or "nftables".
	Backend() string
	// Install makes the pod's netns capture its traffic as cfg says. It
	// changes nothing (changed=false) when the rules are already in place.
	Install(netnsPath string, cfg PodConfig) (changed bool, err error)
	// Check returns nil when the rules match cfg exactly, an error wrapping
	// ErrNotInstalled when none are present, or an error naming the drift.
	Check(netnsPath string, cfg PodConfig) error
	// Remove deletes what Install created; removed=false if nothing was there.
	Remove(netnsPath string) (removed bool, err error)
	// SyncHost makes the node-side probe SNAT cover exactly podIPs.
	SyncHost(netnsPath string, cfg PodConfig, podIPs []netip.Addr) (changed bool, err error)
	// RemoveHost deletes the node-side rules.
	RemoveHost(netnsPath string) error
}

// New returns the backend named by the mesh config.
func New(backend string) (Rules, error) {
	switch backend {
	case BackendIPTables:
		return &iptablesRules{}, nil
	case BackendNFTables:
		return &nftablesRules{}, nil
	default:
		return nil, fmt.Errorf("backend: %q is not one of %q, %q", backend, BackendIPTables, BackendNFTables)
	}
}

package rules

import (
	"fmt"

	"github.com/containernetworking/plugins/pkg/ns"
)

// inNetNS runs fn on an OS thread switched into the netns at path (the
// caller's own netns when path is empty). Processes fn starts inherit it.
func inNetNS(path string, fn func() error) error {
	if path == "" {
		return fn()
	}
	return ns.WithNetNSPath(path, func(ns.NetNS) error { return fn() })
}

// withNetNSFd opens the netns at path and passes its fd to fn (-1 for the
// caller's own netns), closing it afterwards.
func withNetNSFd(path string, fn func(fd int) error) error {
	if path == "" {
		return fn(-1)
	}
	netns, err := ns.GetNS(path)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", path, err)
	}
	defer netns.Close()
	return fn(int(netns.Fd()))
}

// Command pause is the pod sandbox ("pause") image of hack/cluster's nodes,
// built from source because there is no registry to pull one from: it holds
// the pod's namespaces open, reaps the children it inherits as PID 1, and
// exits on SIGINT or SIGTERM.
package main

import (
	"os"
	"os/signal"

	"golang.org/x/sys/unix"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, unix.SIGINT, unix.SIGTERM, unix.SIGCHLD)
	for s := range signals {
		if s != unix.SIGCHLD {
			return
		}
		reapChildren()
	}
}

// reapChildren collects every exited child, so none stays a zombie.
func reapChildren() {
	for {
		var status unix.WaitStatus
		pid, err := unix.Wait4(-1, &status, unix.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}

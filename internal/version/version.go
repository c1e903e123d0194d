// Package version holds the build's version, stamped by the Makefile through
// -ldflags "-X github.com/ambientmesh/ambient-operator/internal/version.Version=...".
package version

import (
	"fmt"
	"runtime"
)

// Version is the release (git describe) this binary was built from; "dev" for
// builds without the Makefile's ldflags.
var Version = "dev"

// GitCommit is the commit this binary was built from; "unknown" without ldflags.
var GitCommit = "unknown"

// String is the one-line answer to `<binary> --version`.
func String(binary string) string {
	return fmt.Sprintf("%s %s (commit %s, %s, %s/%s)", binary, Version, GitCommit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

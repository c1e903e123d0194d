// Package buildinfo says which cert-manager a binary of this module was
// built from, for the --version flag and the start-up log line of both mains.
package buildinfo

import "runtime/debug"

// certManagerModule is the module whose public packages both mains run.
const certManagerModule = "github.com/cert-manager/cert-manager"

// Version names the command and the cert-manager module version it was
// built against ("unknown" when the binary carries no build information).
func Version(command string) string {
	version := "unknown"
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == certManagerModule {
				version = dep.Version
			}
		}
	}
	return command + " (ambient-operator proving ground) built from " + certManagerModule + " " + version
}

// Package versions is the one table of mesh versions this operator build can
// install, the default version, and the image of each component per version.
// The AmbientMesh controller uses it to render images and to decide whether
// an upgrade is allowed; the admission webhook uses the same rules to refuse
// versions the operator cannot install, so the two never disagree.
package versions

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/mod/semver"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
)

// Component names a mesh component that runs from its own image.
type Component string

// The components the operator deploys. Their values are the image names.
const (
	ControlPlane Component = "controlplane"
	ZTunnel      Component = "ztunnel"
	CNIAgent     Component = "cni-agent"
	Waypoint     Component = "waypoint"
)

// Registry is where the project's images are published.
const Registry = "ghcr.io/ambientmesh"

// Default is the version installed when AmbientMesh.spec.version is unset.
// The CRD's schema default is the same constant (see api/v1alpha1).
const Default = meshv1alpha1.DefaultVersion

// supported lists, oldest first, every mesh version this operator can
// install. Adding a release here is the only change needed to offer it.
var supported = []string{"0.1.0", "0.1.1", "0.2.0", "0.3.0"}

// Errors returned by Check; test for them with errors.Is.
var (
	// ErrUnsupported: the operator has no images for the version.
	ErrUnsupported = errors.New("version not supported by this operator")
	// ErrSkew: the target is more than one minor version from the installed one.
	ErrSkew = errors.New("version skew too large")
	// ErrDowngrade: the target is older than the installed version.
	ErrDowngrade = errors.New("downgrade not supported")
)

// Supported returns the installable versions, oldest first.
func Supported() []string { return slices.Clone(supported) }

// Latest is the newest installable version.
func Latest() string { return supported[len(supported)-1] }

// Normalize drops the optional leading "v" the API accepts ("v0.2.0" → "0.2.0").
func Normalize(version string) string { return strings.TrimPrefix(version, "v") }

// IsSupported reports whether the operator can install version.
func IsSupported(version string) bool {
	return slices.Contains(supported, Normalize(version))
}

// Image is the container image of a component at a version.
func Image(c Component, version string) string {
	return Registry + "/" + string(c) + ":" + Normalize(version)
}

// Compare orders two versions like strings.Compare; invalid versions sort first.
func Compare(a, b string) int { return semver.Compare(canonical(a), canonical(b)) }

// Check decides whether the mesh may move from the installed version to
// target. installed is the oldest version any component still runs (empty
// for a fresh install). Moving to a version that is still installed is
// always allowed: that is how a stopped upgrade is rolled back. Otherwise the
// target must be supported, not older, and at most one minor version ahead
// (patch versions within a minor are free).
func Check(installed, target string) error {
	if !IsSupported(target) {
		return fmt.Errorf("%w: %q (supported: %s)", ErrUnsupported, target, strings.Join(supported, ", "))
	}
	if installed == "" || Compare(installed, target) == 0 {
		return nil
	}
	from, to := canonical(installed), canonical(target)
	if !semver.IsValid(from) {
		return fmt.Errorf("%w: installed version %q is not a semantic version", ErrUnsupported, installed)
	}
	if semver.Compare(to, from) < 0 {
		return fmt.Errorf("%w: from %s to %s; install %s again or a newer version", ErrDowngrade,
			Normalize(installed), Normalize(target), Normalize(installed))
	}
	if minorDistance(from, to) > 1 {
		return fmt.Errorf("%w: from %s to %s skips a minor version; upgrade one minor version at a time (next: %s)",
			ErrSkew, Normalize(installed), Normalize(target), nextMinor(installed))
	}
	return nil
}

// minorDistance counts minor versions between from and to (to >= from);
// a major version change counts as a large jump.
func minorDistance(from, to string) int {
	fromMajor, fromMinor := majorMinor(from)
	toMajor, toMinor := majorMinor(to)
	if fromMajor != toMajor {
		return 1 << 20
	}
	return toMinor - fromMinor
}

// nextMinor is the newest supported release one minor version after installed,
// the step a user should take next; empty when none is supported.
func nextMinor(installed string) string {
	next := ""
	for _, v := range supported {
		d := minorDistance(canonical(installed), canonical(v))
		if Compare(v, installed) > 0 && d <= 1 {
			next = v
		}
	}
	return next
}

func majorMinor(canonicalVersion string) (major, minor int) {
	parts := strings.SplitN(strings.TrimPrefix(semver.MajorMinor(canonicalVersion), "v"), ".", 2)
	if len(parts) != 2 {
		return -1, -1
	}
	_, _ = fmt.Sscan(parts[0], &major)
	_, _ = fmt.Sscan(parts[1], &minor)
	return major, minor
}

func canonical(version string) string { return "v" + Normalize(version) }

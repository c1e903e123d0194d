package webhook

import (
	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
)

// VersionTable is what admission needs to know about mesh versions.
type VersionTable interface {
	// Installable reports whether the operator can install version
	// (without a leading "v").
	Installable(version string) bool
	// Supported lists the installable versions, for error messages.
	Supported() []string
}

// operatorVersions is the operator's own version table.
// TEMPORARY until internal/versions lands.
type operatorVersions struct{}

func (operatorVersions) Installable(v string) bool { return v == meshv1alpha1.DefaultVersion }
func (operatorVersions) Supported() []string      { return []string{meshv1alpha1.DefaultVersion} }

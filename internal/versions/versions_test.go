package versions

import (
	"errors"
	"testing"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
)

func TestDefaultIsSupported(t *testing.T) {
	if !IsSupported(Default) {
		t.Fatalf("default version %s is not in the supported table %v", Default, Supported())
	}
	if Default != meshv1alpha1.DefaultVersion {
		t.Fatalf("Default %s differs from the API default %s", Default, meshv1alpha1.DefaultVersion)
	}
}

func TestSupportedIsSortedAndCanonical(t *testing.T) {
	all := Supported()
	for i, v := range all {
		if Normalize(v) != v {
			t.Errorf("table entry %q must not carry a leading v", v)
		}
		if i > 0 && Compare(all[i-1], v) >= 0 {
			t.Errorf("table not sorted oldest first at %q, %q", all[i-1], v)
		}
	}
	if Latest() != all[len(all)-1] {
		t.Errorf("Latest() = %s", Latest())
	}
}

func TestImage(t *testing.T) {
	if got, want := Image(ZTunnel, "v0.2.0"), "ghcr.io/ambientmesh/ztunnel:0.2.0"; got != want {
		t.Fatalf("Image = %q, want %q", got, want)
	}
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name, installed, target string
		want                    error
	}{
		{"fresh install", "", "0.1.0", nil},
		{"fresh install with v prefix", "", "v0.2.0", nil},
		{"fresh install of unknown version", "", "9.9.9", ErrUnsupported},
		{"same version", "0.2.0", "v0.2.0", nil},
		{"patch upgrade", "0.1.0", "0.1.1", nil},
		{"one minor", "0.1.0", "0.2.0", nil},
		{"one minor from a patch release", "0.1.1", "0.2.0", nil},
		{"two minors", "0.1.0", "0.3.0", ErrSkew},
		{"downgrade", "0.2.0", "0.1.1", ErrDowngrade},
		{"unknown target", "0.1.0", "0.1.7", ErrUnsupported},
		{"installed not semver", "garbage", "0.1.0", ErrUnsupported},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Check(tt.installed, tt.target)
			if tt.want == nil && err != nil {
				t.Fatalf("Check(%q, %q) = %v, want nil", tt.installed, tt.target, err)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("Check(%q, %q) = %v, want %v", tt.installed, tt.target, err, tt.want)
			}
		})
	}
}

func TestSkewMessageNamesNextStep(t *testing.T) {
	err := Check("0.1.0", "0.3.0")
	want := "version skew too large: from 0.1.0 to 0.3.0 skips a minor version; upgrade one minor version at a time (next: 0.2.0)"
	if err == nil || err.Error() != want {
		t.Fatalf("got %v\nwant %s", err, want)
	}
}

package buildinfo

import (
	"strings"
	"testing"
)

func TestVersionNamesTheCommandAndCertManager(t *testing.T) {
	got := Version("cert-manager-controller")
	if !strings.HasPrefix(got, "cert-manager-controller ") || !strings.Contains(got, " built from "+certManagerModule+" ") {
		t.Fatalf("Version = %q; want the command, then the cert-manager module and its version", got)
	}
}

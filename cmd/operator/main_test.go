package main

import (
	"flag"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	certmanagerv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
)

func TestSchemeKnowsEveryKindTheOperatorManages(t *testing.T) {
	scheme := newScheme()
	for _, gvk := range []schema.GroupVersionKind{
		meshv1alpha1.GroupVersion.WithKind("AmbientMesh"),
		meshv1alpha1.GroupVersion.WithKind("Waypoint"),
		meshv1alpha1.GroupVersion.WithKind("MeshPolicy"),
		certmanagerv1.SchemeGroupVersion.WithKind("Certificate"),
		certmanagerv1.SchemeGroupVersion.WithKind("Issuer"),
		certmanagerv1.SchemeGroupVersion.WithKind("ClusterIssuer"),
		gatewayv1.SchemeGroupVersion.WithKind("HTTPRoute"),
		appsv1.SchemeGroupVersion.WithKind("DaemonSet"),
	} {
		if !scheme.Recognizes(gvk) {
			t.Errorf("scheme does not know %s", gvk)
		}
	}
}

func TestFlagsDefaultToKubebuilderConventions(t *testing.T) {
	fs := flag.NewFlagSet("operator", flag.ContinueOnError)
	opts := bindFlags(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if opts.metricsAddr != ":8443" || !opts.secureMetrics || opts.probeAddr != ":8081" || opts.leaderElect {
		t.Errorf("defaults = %+v; want secure metrics on :8443, probes on :8081, no leader election", *opts)
	}
	if fs.Lookup("zap-log-level") == nil {
		t.Error("zap logging flags (--zap-log-level, ...) are not bound")
	}
	if fs.Lookup("kubeconfig") != nil {
		t.Error("--kubeconfig must come from controller-runtime's global flag, not ours")
	}

	if err := fs.Parse([]string{"--leader-elect", "--metrics-bind-address=:9090", "--zap-log-level=debug"}); err != nil {
		t.Fatal(err)
	}
	if !opts.leaderElect || opts.metricsAddr != ":9090" {
		t.Errorf("after parsing flags: %+v", *opts)
	}
}

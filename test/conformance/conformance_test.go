// Package conformance runs the Gateway API conformance suite
// (sigs.k8s.io/gateway-api/conformance, unmodified) for the mesh profile on a
// real cluster running the operator's images: `make conformance` brings the
// cluster up, deploys the operator and the sample mesh, and runs this test
// with CLUSTER_STATE set; without it the test skips.
//
// The suite's namespaces are enrolled as docs/waypoint.md tells a user to:
// labelled into the mesh with a Waypoint named "waypoint" that every Service
// of the namespace uses. The features we claim are claimedFeatures; the
// report is written where CONFORMANCE_REPORT says.
package conformance

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/gateway-api/conformance"
	confv1 "sigs.k8s.io/gateway-api/conformance/apis/v1"
	"sigs.k8s.io/gateway-api/conformance/utils/suite"
	"sigs.k8s.io/gateway-api/pkg/features"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/internal/meshscheme"
	"github.com/ambientmesh/ambient-operator/internal/testwait"
)

// waypointName is the Waypoint each of the suite's namespaces gets, and the
// value of their use-waypoint label.
const waypointName = "waypoint"

// meshNamespaces are the namespaces of the suite's mesh manifests
// (conformance/mesh/manifests.yaml) whose workloads the tests call.
var meshNamespaces = []string{"gateway-conformance-mesh", "gateway-conformance-mesh-consumer"}

// enrollment is what docs/waypoint.md has a user put on a namespace: in the
// mesh, its Services through the namespace's waypoint.
var enrollment = map[string]string{
	meshv1.LabelDataplaneMode: "ambient",
	meshv1.LabelUseWaypoint:   waypointName,
}

// claimedFeatures are the features of the MESH-HTTP and MESH-GRPC profiles
// we claim (the core ones, Mesh, HTTPRoute and GRPCRoute, and the extended
// ones), plus the HTTPRoute features some mesh tests also need. docs/conformance/README.md says why
// each feature left out is.
var claimedFeatures = sets.New(
	features.SupportMesh,
	features.SupportHTTPRoute,
	features.SupportGRPCRoute,
	features.SupportHTTPRouteResponseHeaderModification,
	features.SupportHTTPRouteParentRefPort,
	features.SupportHTTPRoute303RedirectStatusCode,
	features.SupportHTTPRoute307RedirectStatusCode,
	features.SupportHTTPRoute308RedirectStatusCode,
	features.SupportMeshClusterIPMatching,
	features.SupportMeshHTTPRouteRewritePath,
	features.SupportMeshHTTPRouteSchemeRedirect,
	features.SupportMeshHTTPRouteRedirectPort,
	features.SupportMeshHTTPRouteRedirectPath,
	features.SupportMeshHTTPRouteBackendRequestHeaderModification,
	features.SupportMeshHTTPRouteQueryParamMatching,
	features.SupportMeshHTTPRouteNamedRouteRule,
)

// skippedTests are upstream tests that cannot pass on any implementation at
// the suite's version; docs/conformance/README.md says why.
var skippedTests = []string{
	// v1.5.1's MeshHTTPRoute307Redirect applies the 303 test's manifest
	// (tests/mesh/httproute-303-redirect.yaml), so its /temporary path has no
	// route; fixed upstream by kubernetes-sigs/gateway-api#4806, after v1.5.1.
	"MeshHTTPRoute307Redirect",
}

func TestMeshConformance(t *testing.T) {
	if os.Getenv("CLUSTER_STATE") == "" {
		t.Skip("needs a running hack/cluster cluster with the operator and a mesh: run by make conformance (root), which sets CLUSTER_STATE")
	}
	// The suite's own options from its flags and KUBECONFIG, then ours.
	opts := conformance.DefaultOptions(t)
	opts.ConformanceProfiles = sets.New(suite.MeshHTTPConformanceProfileName, suite.MeshGRPCConformanceProfileName)
	opts.SupportedFeatures = claimedFeatures
	opts.SkipTests = skippedTests
	opts.CleanupBaseResources = true
	opts.NamespaceLabels = enrollment
	opts.Mode = "default"
	opts.ReportOutputPath = mustEnv(t, "CONFORMANCE_REPORT")
	opts.Implementation = confv1.Implementation{
		Organization: "ambientmesh",
		Project:      "ambient-operator",
		URL:          "https://github.com/ambientmesh/ambient-operator",
		Version:      mustEnv(t, "CONFORMANCE_PROJECT_VERSION"),
		Contact:      []string{"https://github.com/ambientmesh/ambient-operator/issues"},
	}

	c, err := client.New(opts.RestConfig, client.Options{Scheme: meshscheme.New()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for _, ns := range meshNamespaces {
		enroll(ctx, t, c, ns)
	}
	conformance.RunConformanceWithOptions(t, opts)
}

func mustEnv(t *testing.T, name string) string {
	v := os.Getenv(name)
	if v == "" {
		t.Fatalf("make conformance sets %s", name)
	}
	return v
}

// enroll creates namespace ns in the mesh with a Waypoint its Services use,
// waits until the waypoint is Ready, and deletes the namespace when the test
// ends (the suite removes only the namespaces it created).
func enroll(ctx context.Context, t *testing.T, c client.Client, ns string) {
	t.Helper()
	namespace := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: enrollment}}
	if err := c.Create(ctx, namespace); err != nil {
		t.Fatalf("namespace %s: %v", ns, err)
	}
	t.Cleanup(func() {
		if err := c.Delete(context.Background(), namespace); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting namespace %s: %v", ns, err)
		}
	})
	wp := &meshv1.Waypoint{ObjectMeta: metav1.ObjectMeta{Name: waypointName, Namespace: ns}}
	if err := c.Create(ctx, wp); err != nil {
		t.Fatalf("waypoint %s/%s: %v", ns, waypointName, err)
	}
	err := testwait.UntilContext(ctx, 3*time.Minute, func() error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(wp), wp); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(wp.Status.Conditions, meshv1.WaypointConditionReady) {
			return errors.New("not Ready")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("waypoint %s/%s is not Ready: %v (conditions %v)", ns, waypointName, err, wp.Status.Conditions)
	}
	t.Logf("namespace %s enrolled, waypoint %s Ready", ns, waypointName)
}

package meshscheme

import (
	"testing"

	certmanagerv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	appsv1 "k8s.io/api/apps/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
)

func TestSchemeKnowsEveryKindTheComponentsManage(t *testing.T) {
	scheme := New()
	for _, gvk := range []schema.GroupVersionKind{
		meshv1alpha1.GroupVersion.WithKind("AmbientMesh"),
		meshv1alpha1.GroupVersion.WithKind("Waypoint"),
		meshv1alpha1.GroupVersion.WithKind("MeshPolicy"),
		certmanagerv1.SchemeGroupVersion.WithKind("Certificate"),
		certmanagerv1.SchemeGroupVersion.WithKind("Issuer"),
		certmanagerv1.SchemeGroupVersion.WithKind("ClusterIssuer"),
		schema.GroupVersion(gatewayv1.GroupVersion).WithKind("HTTPRoute"),
		appsv1.SchemeGroupVersion.WithKind("DaemonSet"),
		apiextensionsv1.SchemeGroupVersion.WithKind("CustomResourceDefinition"),
	} {
		if !scheme.Recognizes(gvk) {
			t.Errorf("scheme does not know %s", gvk)
		}
	}
}

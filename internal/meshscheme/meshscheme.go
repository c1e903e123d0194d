// Package meshscheme builds the one runtime.Scheme the operator, the control plane and the
// test harnesses share.
package meshscheme

import (
	certmanagerv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
)

// New knows every kind the mesh's components read or write: Kubernetes' built-ins, our
// API, cert-manager's (the identity issuer chain, certificate requests), the Gateway
// API's (HTTPRoutes attached to waypoints) and CustomResourceDefinitions (the test
// harnesses that install and inspect the CRDs), at the versions compiled in.
func New() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(meshv1alpha1.AddToScheme(s))
	utilruntime.Must(certmanagerv1.AddToScheme(s))
	utilruntime.Must(gatewayv1.Install(s))
	utilruntime.Must(apiextensionsv1.AddToScheme(s))
	return s
}

package translate

import (
	corev1 "k8s.io/api/core/v1"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
)

// testMesh is the mesh of this package's tests.
var testMesh = Mesh{TrustDomain: "cluster.local", RootNamespace: "ambient-system", ClusterDomain: "cluster.local", ClusterID: DefaultClusterID}

// TestMesh is testMesh for the golden tests (package translate_test).
var TestMesh = testMesh

// State is a TargetLookup over lists of objects, for the table tests of TargetStates
// (the control plane's is discovery.NewTargetLookup, over its cache).
type State struct {
	Namespaces []corev1.Namespace
	Services   []corev1.Service
	// Waypoints and waypoint Gateways, as MergeWaypoints lists them.
	Waypoints []meshv1.Waypoint
}

// Service implements TargetLookup.
func (st State) Service(namespace, name string) *corev1.Service {
	for i := range st.Services {
		if st.Services[i].Namespace == namespace && st.Services[i].Name == name {
			return &st.Services[i]
		}
	}
	return nil
}

// Waypoint implements TargetLookup.
func (st State) Waypoint(namespace, name string) *meshv1.Waypoint {
	for i := range st.Waypoints {
		if st.Waypoints[i].Namespace == namespace && st.Waypoints[i].Name == name {
			return &st.Waypoints[i]
		}
	}
	return nil
}

// Namespace implements TargetLookup.
func (st State) Namespace(name string) *corev1.Namespace {
	for i := range st.Namespaces {
		if st.Namespaces[i].Name == name {
			return &st.Namespaces[i]
		}
	}
	return nil
}

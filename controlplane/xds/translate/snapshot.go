package translate

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
)

// State is a whole cluster's worth of inputs. The control plane translates one object at
// a time; Snapshot translates everything at once with the same functions, for tests and
// for tools that want the full picture.
type State struct {
	Namespaces []corev1.Namespace
	Pods       []corev1.Pod
	Services   []corev1.Service
	Policies   []meshv1.MeshPolicy
	// Waypoints and waypoint Gateways, as MergeWaypoints lists them.
	Waypoints []meshv1.Waypoint
}

// Resources are workload API resources by xDS resource name.
type Resources struct {
	Workloads      map[string]*pb.Workload
	Services       map[string]*pb.Service
	Authorizations map[string]*pb.Authorization
}

// Snapshot translates a whole State.
func Snapshot(mesh Mesh, st State) Resources {
	out := Resources{
		Workloads:      map[string]*pb.Workload{},
		Services:       map[string]*pb.Service{},
		Authorizations: map[string]*pb.Authorization{},
	}
	namespaces := map[string]*corev1.Namespace{}
	for i := range st.Namespaces {
		namespaces[st.Namespaces[i].Name] = &st.Namespaces[i]
	}
	waypoints := ResolveWaypoints(mesh, st)
	for i := range st.Pods {
		pod := &st.Pods[i]
		in := PodInputs{
			Pod:       pod,
			Namespace: namespaces[pod.Namespace],
			Services:  inNamespace(st.Services, pod.Namespace),
			Policies:  PoliciesFor(mesh, pod.Namespace, st.Policies),
			Waypoints: waypoints,
		}
		if w := Workload(mesh, in); w != nil {
			out.Workloads[w.Uid] = w
		}
	}
	for i := range st.Services {
		svc := &st.Services[i]
		if s := Service(mesh, svc, namespaces[svc.Namespace], waypoints); s != nil {
			out.Services[ServiceName(mesh, svc)] = s
		}
	}
	for i := range st.Policies {
		if a := Authorization(mesh, &st.Policies[i]); a != nil {
			out.Authorizations[pb.AuthorizationResourceName(a.Namespace, a.Name)] = a
		}
	}
	return out
}

func inNamespace(services []corev1.Service, ns string) []corev1.Service {
	var out []corev1.Service
	for _, s := range services {
		if s.Namespace == ns {
			out = append(out, s)
		}
	}
	return out
}

// PoliciesFor keeps the policies that can apply to pods in namespace ns: its own and the
// root namespace's.
func PoliciesFor(mesh Mesh, ns string, policies []meshv1.MeshPolicy) []meshv1.MeshPolicy {
	var out []meshv1.MeshPolicy
	for _, p := range policies {
		if p.Namespace == ns || p.Namespace == mesh.RootNamespace {
			out = append(out, p)
		}
	}
	return out
}

// ResolveWaypoints resolves every waypoint of a State, by namespace and name.
func ResolveWaypoints(mesh Mesh, st State) map[types.NamespacedName]WaypointInfo {
	out := map[types.NamespacedName]WaypointInfo{}
	for i := range st.Waypoints {
		wp := &st.Waypoints[i]
		key := types.NamespacedName{Namespace: wp.Namespace, Name: wp.Name}
		out[key] = ResolveWaypoint(mesh, wp, waypointService(st.Services, wp), waypointServiceAccount(st.Pods, wp))
	}
	return out
}

func waypointService(services []corev1.Service, wp *meshv1.Waypoint) *corev1.Service {
	for i := range services {
		if services[i].Namespace == wp.Namespace && services[i].Labels[meshv1.LabelWaypoint] == wp.Name {
			return &services[i]
		}
	}
	return nil
}

func waypointServiceAccount(pods []corev1.Pod, wp *meshv1.Waypoint) string {
	for i := range pods {
		if pods[i].Namespace == wp.Namespace && pods[i].Labels[meshv1.LabelWaypoint] == wp.Name {
			return serviceAccountOf(&pods[i])
		}
	}
	return ""
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

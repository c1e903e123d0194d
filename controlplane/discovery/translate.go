package discovery

import (
	"context"

	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	clienttesting "k8s.io/client-go/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controlplane/xds/translate"
	"github.com/ambientmesh/ambient-operator/internal/meshscheme"
)

// The whole cluster at once, for the golden tests and for tools that want the full
// picture (ambientctl why): the objects go into an in-memory client with the cache's field
// indexes, and the reconcilers the control plane runs translate them, so what these show
// is what the control plane serves.

// Resources are workload API resources by xDS resource name.
type Resources struct {
	Workloads      map[string]*pb.Workload
	Services       map[string]*pb.Service
	Authorizations map[string]*pb.Authorization
}

// Translate runs the workload API reconcilers once over every Pod, Service and
// MeshPolicy c holds, as Reconcilers.Prime does when a control plane starts, and returns
// what they publish. c must answer the indexed lists of SetupIndexes (the manager's
// client, or NewInMemoryClient); gatewayAPIKinds are the installed Gateway API kinds.
func Translate(ctx context.Context, c client.Client, mesh translate.Mesh, gatewayAPIKinds map[string]bool) (Resources, error) {
	out := Resources{
		Workloads:      map[string]*pb.Workload{},
		Services:       map[string]*pb.Service{},
		Authorizations: map[string]*pb.Authorization{},
	}
	err := newReconcilers(newReader(c, mesh, gatewayAPIKinds), collector(out)).Prime(ctx)
	return out, err
}

// ResolveWaypoints resolves every waypoint c holds (Waypoints and, when gatewayAPIKinds
// has Gateway, waypoint Gateways) as the reconcilers resolve the one an object uses: its
// address and identity, by namespace and name.
func ResolveWaypoints(ctx context.Context, c client.Client, mesh translate.Mesh, gatewayAPIKinds map[string]bool) (map[types.NamespacedName]translate.WaypointInfo, error) {
	rd := newReader(c, mesh, gatewayAPIKinds)
	waypoints, err := rd.waypoints(ctx, "")
	if err != nil {
		return nil, err
	}
	out := make(map[types.NamespacedName]translate.WaypointInfo, len(waypoints))
	for i := range waypoints {
		if out[client.ObjectKeyFromObject(&waypoints[i])], err = rd.resolve(ctx, &waypoints[i]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// NewInMemoryClient is a client over objs alone (controller-runtime's fake client) with
// the field indexes of SetupIndexes, so the reconcilers read it as they read the cache.
// Objects are stored as given: a terminating one needs no finalizer, as in a real cluster.
func NewInMemoryClient(objs ...client.Object) (client.Client, error) {
	scheme := meshscheme.New()
	tracker := clienttesting.NewObjectTracker(scheme, serializer.NewCodecFactory(scheme).UniversalDecoder())
	for _, o := range objs {
		o = o.DeepCopyObject().(client.Object)
		if o.GetResourceVersion() == "" {
			// Updates through the client need a version to count from.
			o.SetResourceVersion("1")
		}
		if err := tracker.Add(o); err != nil {
			return nil, err
		}
	}
	b := fake.NewClientBuilder().WithScheme(scheme).WithObjectTracker(tracker)
	for _, ix := range indexes() {
		b = b.WithIndex(ix.obj, ix.field, ix.extract)
	}
	return b.Build(), nil
}

// ObjectsOf is items as client.Objects, for NewInMemoryClient.
func ObjectsOf[T any, PT interface {
	*T
	client.Object
}](items []T) []client.Object {
	out := make([]client.Object, 0, len(items))
	for i := range items {
		out = append(out, PT(&items[i]))
	}
	return out
}

// collector is a Publisher that keeps what it is given.
type collector Resources

func (c collector) Set(typeURL, name string, m proto.Message) bool {
	switch typeURL {
	case pb.WorkloadTypeURL:
		return keep(c.Workloads, name, m)
	case pb.ServiceTypeURL:
		return keep(c.Services, name, m)
	case pb.AuthorizationTypeURL:
		return keep(c.Authorizations, name, m)
	}
	return false
}

// keep records m under name (nil removes it) and reports whether that changed anything.
func keep[M proto.Message](into map[string]M, name string, m proto.Message) bool {
	old, had := into[name]
	if m == nil {
		delete(into, name)
		return had
	}
	into[name] = m.(M)
	return !had || !proto.Equal(old, m)
}

package waypoint

import (
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/ambientmesh/ambient-operator/dataplane/waypoint/jwt"
	"github.com/ambientmesh/ambient-operator/dataplane/waypoint/upstream"
)

// The contract: everything the control plane's translation produces for a waypoint (its
// golden outputs, the same code path the running control plane serves) is accepted by
// the waypoint — no NACK, every listener compiled.
func TestAcceptsEveryControlPlaneGolden(t *testing.T) {
	files, err := filepath.Glob("../../controlplane/xds/waypoint/testdata/*.golden.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files of the control plane's waypoint translation found: %v", err)
	}
	kinds := []struct {
		key, typeURL string
		msg          func() proto.Message
	}{
		{"Cluster", resourcev3.ClusterType, func() proto.Message { return &clusterv3.Cluster{} }},
		{"ClusterLoadAssignment", resourcev3.EndpointType, func() proto.Message { return &endpointv3.ClusterLoadAssignment{} }},
		{"Listener", resourcev3.ListenerType, func() proto.Message { return &listenerv3.Listener{} }},
		{"RouteConfiguration", resourcev3.RouteType, func() proto.Message { return &routev3.RouteConfiguration{} }},
	}
	// Remote JWKS are never fetched here: every request fails at once, locally.
	offline := &http.Client{Transport: roundTripperFunc(func(*http.Request) (*http.Response, error) {
		return nil, errors.New("offline test")
	})}
	for _, f := range files {
		var golden struct {
			Waypoints map[string]map[string]map[string]json.RawMessage `json:"waypoints"`
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &golden); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for wp, byKind := range golden.Waypoints {
			t.Run(filepath.Base(f)+"/"+wp, func(t *testing.T) {
				s := newStore(upstream.NewSet(upstream.Options{}), jwt.Options{HTTPClient: offline}, logr.Discard())
				for _, k := range kinds {
					upserts := map[string]*anypb.Any{}
					for name, raw := range byKind[k.key] {
						m := k.msg()
						if err := protojson.Unmarshal(raw, m); err != nil {
							t.Fatalf("%s %s: %v", k.key, name, err)
						}
						a, err := anypb.New(m)
						if err != nil {
							t.Fatal(err)
						}
						upserts[name] = a
					}
					if err := s.Apply(k.typeURL, upserts, nil); err != nil {
						t.Fatalf("the waypoint NACKs the control plane's %s: %v", k.key, err)
					}
				}
				if got, want := len(s.snapshot().listeners), len(byKind["Listener"]); got != want {
					t.Fatalf("%d listeners compiled, want %d", got, want)
				}
				for _, l := range s.compiled {
					if l.http != nil && l.http.jwt != nil {
						l.http.jwt.Close()
					}
				}
			})
		}
	}
}

package route

import (
	"net/http"
	"reflect"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

const (
	appendOrAdd      = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
	addIfAbsent      = corev3.HeaderValueOption_ADD_IF_ABSENT
	overwriteOrAdd   = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
	overwriteIfExist = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS
)

func TestHeaderOperations(t *testing.T) {
	keepEmpty := func(o *corev3.HeaderValueOption) *corev3.HeaderValueOption { o.KeepEmptyValue = true; return o }
	legacyAppend := func(o *corev3.HeaderValueOption, b bool) *corev3.HeaderValueOption {
		o.Append = wrapperspb.Bool(b)
		return o
	}
	raw := &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: "x-raw", RawValue: []byte("bytes")}}

	for _, tc := range []struct {
		name   string
		add    []*corev3.HeaderValueOption
		remove []string
		before http.Header
		want   http.Header
	}{
		{"append to existing", []*corev3.HeaderValueOption{headerValue("x-a", "new", appendOrAdd)}, nil,
			http.Header{"X-A": {"old"}}, http.Header{"X-A": {"old", "new"}}},
		{"append adds when absent", []*corev3.HeaderValueOption{headerValue("x-a", "new", appendOrAdd)}, nil,
			http.Header{}, http.Header{"X-A": {"new"}}},
		{"add if absent, present", []*corev3.HeaderValueOption{headerValue("x-a", "new", addIfAbsent)}, nil,
			http.Header{"X-A": {"old"}}, http.Header{"X-A": {"old"}}},
		{"add if absent, absent", []*corev3.HeaderValueOption{headerValue("x-a", "new", addIfAbsent)}, nil,
			http.Header{}, http.Header{"X-A": {"new"}}},
		{"overwrite or add replaces all values", []*corev3.HeaderValueOption{headerValue("x-a", "new", overwriteOrAdd)}, nil,
			http.Header{"X-A": {"old", "older"}}, http.Header{"X-A": {"new"}}},
		{"overwrite or add adds", []*corev3.HeaderValueOption{headerValue("x-a", "new", overwriteOrAdd)}, nil,
			http.Header{}, http.Header{"X-A": {"new"}}},
		{"overwrite if exists, present", []*corev3.HeaderValueOption{headerValue("x-a", "new", overwriteIfExist)}, nil,
			http.Header{"X-A": {"old"}}, http.Header{"X-A": {"new"}}},
		{"overwrite if exists, absent", []*corev3.HeaderValueOption{headerValue("x-a", "new", overwriteIfExist)}, nil,
			http.Header{}, http.Header{}},
		{"empty value is dropped", []*corev3.HeaderValueOption{headerValue("x-a", "", overwriteOrAdd)}, nil,
			http.Header{"X-A": {"old"}}, http.Header{"X-A": {"old"}}},
		{"keep empty value", []*corev3.HeaderValueOption{keepEmpty(headerValue("x-a", "", overwriteOrAdd))}, nil,
			http.Header{"X-A": {"old"}}, http.Header{"X-A": {""}}},
		{"legacy append true", []*corev3.HeaderValueOption{legacyAppend(headerValue("x-a", "new", appendOrAdd), true)}, nil,
			http.Header{"X-A": {"old"}}, http.Header{"X-A": {"old", "new"}}},
		{"legacy append false overwrites", []*corev3.HeaderValueOption{legacyAppend(headerValue("x-a", "new", appendOrAdd), false)}, nil,
			http.Header{"X-A": {"old"}}, http.Header{"X-A": {"new"}}},
		{"raw value", []*corev3.HeaderValueOption{raw}, nil, http.Header{}, http.Header{"X-Raw": {"bytes"}}},
		{"escaped percent", []*corev3.HeaderValueOption{headerValue("x-a", "100%%", appendOrAdd)}, nil,
			http.Header{}, http.Header{"X-A": {"100%"}}},
		{"remove any case", nil, []string{"X-Secret", "x-other"},
			http.Header{"X-Secret": {"1"}, "X-Other": {"2"}, "X-Keep": {"3"}}, http.Header{"X-Keep": {"3"}}},
		{"remove before add", []*corev3.HeaderValueOption{headerValue("x-a", "new", appendOrAdd)}, []string{"x-a"},
			http.Header{"X-A": {"old"}}, http.Header{"X-A": {"new"}}},
		// Within one level every addition is decided on the headers as they
		// were, overwrites are done before appends.
		{"overwrite before append", []*corev3.HeaderValueOption{headerValue("x-a", "1", appendOrAdd), headerValue("x-a", "2", overwriteOrAdd)}, nil,
			http.Header{"X-A": {"0"}}, http.Header{"X-A": {"2", "1"}}},
		{"add if absent sees the level's input", []*corev3.HeaderValueOption{headerValue("x-a", "1", appendOrAdd), headerValue("x-a", "2", addIfAbsent)}, nil,
			http.Header{}, http.Header{"X-A": {"1", "2"}}},
		{"last overwrite wins", []*corev3.HeaderValueOption{headerValue("x-a", "1", overwriteOrAdd), headerValue("x-a", "2", overwriteOrAdd)}, nil,
			http.Header{}, http.Header{"X-A": {"2"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := routeTo("r", prefixMatch("/"))
			r.RequestHeadersToAdd, r.RequestHeadersToRemove = tc.add, tc.remove
			r.ResponseHeadersToAdd, r.ResponseHeadersToRemove = tc.add, tc.remove
			tbl := mustCompile(t, routeConfig(anyHost(r)))
			req := request("GET", "/")
			req.Header = tc.before.Clone()
			rt := tbl.Match(req)
			rt.ApplyRequest(req, nil)
			if !reflect.DeepEqual(req.Header, tc.want) {
				t.Errorf("request headers = %v, want %v", req.Header, tc.want)
			}
			resp := tc.before.Clone()
			rt.ApplyResponse(resp, nil)
			if !reflect.DeepEqual(resp, tc.want) {
				t.Errorf("response headers = %v, want %v", resp, tc.want)
			}
		})
	}
}

// TestHeaderLevels checks the order in which the levels' operations run:
// weighted cluster, route, virtual host, route configuration, or with
// most_specific_header_mutations_wins weighted cluster, route configuration,
// virtual host, route.
func TestHeaderLevels(t *testing.T) {
	build := func(mostSpecificWins bool) *Table {
		ops := func(level string) []*corev3.HeaderValueOption {
			return []*corev3.HeaderValueOption{
				headerValue("x-set", level, overwriteOrAdd),
				headerValue("x-trail", level, appendOrAdd),
			}
		}
		split := weightedRoute(clusterWeight("only", 1))
		split.RequestHeadersToAdd, split.ResponseHeadersToAdd = ops("route"), ops("route")
		cw := split.GetRoute().GetWeightedClusters().Clusters[0]
		cw.RequestHeadersToAdd, cw.ResponseHeadersToAdd = ops("cluster"), ops("cluster")
		vh := anyHost(split)
		vh.RequestHeadersToAdd, vh.ResponseHeadersToAdd = ops("vhost"), ops("vhost")
		vh.RequestHeadersToRemove = []string{"x-drop"}
		rc := routeConfig(vh)
		rc.RequestHeadersToAdd, rc.ResponseHeadersToAdd = ops("config"), ops("config")
		rc.MostSpecificHeaderMutationsWins = mostSpecificWins
		return mustCompile(t, rc)
	}
	for _, tc := range []struct {
		mostSpecificWins bool
		want             http.Header
	}{
		{false, http.Header{"X-Set": {"config"}, "X-Trail": {"cluster", "route", "vhost", "config"}}},
		{true, http.Header{"X-Set": {"route"}, "X-Trail": {"cluster", "config", "vhost", "route"}}},
	} {
		tbl := build(tc.mostSpecificWins)
		req := request("GET", "/", "X-Drop: 1")
		rt := tbl.Match(req)
		wc := rt.Forward.PickCluster(func(uint64) uint64 { return 0 })
		rt.ApplyRequest(req, wc)
		if !reflect.DeepEqual(req.Header, tc.want) {
			t.Errorf("most_specific_header_mutations_wins=%v: request headers = %v, want %v", tc.mostSpecificWins, req.Header, tc.want)
		}
		resp := http.Header{}
		rt.ApplyResponse(resp, wc)
		if !reflect.DeepEqual(resp, tc.want) {
			t.Errorf("most_specific_header_mutations_wins=%v: response headers = %v, want %v", tc.mostSpecificWins, resp, tc.want)
		}
	}
}

func TestHeaderOpsOnNilHeader(t *testing.T) {
	tbl := mustCompile(t, routeConfig(anyHost(func() *routev3.Route {
		r := routeTo("r", prefixMatch("/"))
		r.ResponseHeadersToAdd = []*corev3.HeaderValueOption{headerValue("x-a", "1", appendOrAdd)}
		r.RequestHeadersToAdd = r.ResponseHeadersToAdd
		return r
	}())))
	rt := tbl.Match(request("GET", "/"))
	rt.ApplyResponse(nil, nil) // must not panic
	req := request("GET", "/")
	req.Header = nil
	rt.ApplyRequest(req, nil)
	if req.Header.Get("X-A") != "1" {
		t.Errorf("request headers = %v, want X-A: 1", req.Header)
	}
}

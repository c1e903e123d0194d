package route

import (
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestCompileRefusesInvalidConfiguration(t *testing.T) {
	if _, err := Compile(nil); err == nil {
		t.Error("Compile(nil) succeeded")
	}
	for _, tc := range []struct {
		name string
		rc   *routev3.RouteConfiguration
		want string
	}{
		{"route without action", routeConfig(anyHost(&routev3.Route{Name: "r", Match: prefixMatch("/")})), "Action"},
		{"virtual host without domains", routeConfig(vhost("v", nil, routeTo("r", prefixMatch("/")))), "Domains"},
		{"route without match", routeConfig(anyHost(&routev3.Route{Name: "r", Action: forwardTo("c")})), "Match"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Compile(tc.rc)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), `"test"`) {
				t.Errorf("Compile error = %v, want one naming the configuration and %q", err, tc.want)
			}
		})
	}
}

// TestCompileRefusesUnsupported feeds configurations that Envoy accepts
// (they pass ValidateAll) but that this package does not implement: Compile
// must refuse them, naming where and what.
func TestCompileRefusesUnsupported(t *testing.T) {
	withRoute := func(edit func(r *routev3.Route)) *routev3.RouteConfiguration {
		r := routeTo("r1", prefixMatch("/"))
		edit(r)
		return routeConfig(anyHost(r))
	}
	withAction := func(edit func(a *routev3.RouteAction)) *routev3.RouteConfiguration {
		return withRoute(func(r *routev3.Route) { edit(r.GetRoute()) })
	}
	faultConfig := func(f *faultv3.HTTPFault) *routev3.RouteConfiguration {
		return withRoute(func(r *routev3.Route) {
			r.TypedPerFilterConfig = map[string]*anypb.Any{FaultFilterName: mustAny(t, f)}
		})
	}
	hundred := &typev3.FractionalPercent{Numerator: 100}

	for _, tc := range []struct {
		name string
		rc   *routev3.RouteConfiguration
		want []string
	}{
		{"cookie match", withRoute(func(r *routev3.Route) {
			r.Match.Cookies = []*routev3.CookieMatcher{{Name: "session", StringMatch: stringMatch("exact", "1")}}
		}), []string{`route "r1"`, "match.cookies is not supported"}},
		{"runtime fraction", withRoute(func(r *routev3.Route) {
			r.Match.RuntimeFraction = &corev3.RuntimeFractionalPercent{DefaultValue: hundred}
		}), []string{`route "r1"`, "match.runtime_fraction"}},
		{"connect matcher", withRoute(func(r *routev3.Route) {
			r.Match.PathSpecifier = &routev3.RouteMatch_ConnectMatcher_{ConnectMatcher: &routev3.RouteMatch_ConnectMatcher{}}
		}), []string{"match.connect_matcher"}},
		{"cluster header", withAction(func(a *routev3.RouteAction) {
			a.ClusterSpecifier = &routev3.RouteAction_ClusterHeader{ClusterHeader: "x-cluster"}
		}), []string{`route "r1"`, "route.cluster_header is not supported"}},
		{"path rewrite", withAction(func(a *routev3.RouteAction) { a.PathRewrite = "/x" }), []string{"route.path_rewrite"}},
		{"auto host rewrite", withAction(func(a *routev3.RouteAction) {
			a.HostRewriteSpecifier = &routev3.RouteAction_AutoHostRewrite{AutoHostRewrite: wrapperspb.Bool(true)}
		}), []string{"route.auto_host_rewrite"}},
		{"idle timeout", withAction(func(a *routev3.RouteAction) { a.IdleTimeout = durationpb.New(time.Second) }), []string{"route.idle_timeout"}},
		{"non-forwarding action", withRoute(func(r *routev3.Route) {
			r.Action = &routev3.Route_NonForwardingAction{NonForwardingAction: &routev3.NonForwardingAction{}}
		}), []string{"non_forwarding_action is not supported"}},
		{"retriable headers", withAction(func(a *routev3.RouteAction) {
			a.RetryPolicy = &routev3.RetryPolicy{RetryOn: "retriable-headers", RetriableHeaders: []*routev3.HeaderMatcher{{Name: "x-retry"}}}
		}), []string{"retry_policy.retriable_headers"}},
		{"mirror by header", withAction(func(a *routev3.RouteAction) {
			a.RequestMirrorPolicies = []*routev3.RouteAction_RequestMirrorPolicy{{ClusterHeader: "x-mirror"}}
		}), []string{"route.request_mirror_policies[0].cluster_header"}},
		{"virtual host cors", func() *routev3.RouteConfiguration {
			vh := anyHost(routeTo("r1", prefixMatch("/")))
			vh.Cors = &routev3.CorsPolicy{AllowMethods: "GET"}
			return routeConfig(vh)
		}(), []string{`virtual host "default"`, "cors is not supported"}},
		{"vhds", func() *routev3.RouteConfiguration {
			rc := routeConfig(anyHost(routeTo("r1", prefixMatch("/"))))
			rc.InternalOnlyHeaders = []string{"x-internal"}
			return rc
		}(), []string{"internal_only_headers is not supported"}},
		{"header value command", withRoute(func(r *routev3.Route) {
			r.RequestHeadersToAdd = []*corev3.HeaderValueOption{headerValue("x-client", "%DOWNSTREAM_REMOTE_ADDRESS%", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD)}
		}), []string{`route "r1"`, "request_headers_to_add[0]", "substitution commands"}},
		{"direct response from a file", withRoute(func(r *routev3.Route) {
			r.Action = &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 200,
				Body: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: "/etc/passwd"}}}}
		}), []string{"direct_response.body"}},
		{"redirect path formatter", withRoute(func(r *routev3.Route) {
			r.Action = &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{
				PathRewriteSpecifier: &routev3.RedirectAction_PathRewrite{PathRewrite: "/new/%REQ(x)%"}}}
		}), []string{"redirect.path_rewrite"}},
		{"gRPC fault", faultConfig(&faultv3.HTTPFault{Abort: &faultv3.FaultAbort{
			ErrorType: &faultv3.FaultAbort_GrpcStatus{GrpcStatus: 14}, Percentage: hundred}}),
			[]string{`route "r1"`, "typed_per_filter_config[envoy.filters.http.fault].abort.grpc_status"}},
		{"header-controlled delay", faultConfig(&faultv3.HTTPFault{Delay: &faultcommonv3.FaultDelay{
			FaultDelaySecifier: &faultcommonv3.FaultDelay_HeaderDelay_{HeaderDelay: &faultcommonv3.FaultDelay_HeaderDelay{}}}}),
			[]string{"delay.header_delay"}},
		{"fault restricted by headers", faultConfig(&faultv3.HTTPFault{
			Abort:   &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: 503}},
			Headers: []*routev3.HeaderMatcher{{Name: "x-fault"}}}),
			[]string{"headers is not supported"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.rc.ValidateAll(); err != nil {
				t.Fatalf("test configuration is invalid: %v", err)
			}
			_, err := Compile(tc.rc)
			if err == nil {
				t.Fatal("Compile succeeded")
			}
			t.Log(err)
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("Compile error %q does not mention %q", err, want)
				}
			}
		})
	}
}

// TestCompileRefusesInconsistent feeds configurations that pass ValidateAll
// but that Envoy refuses too.
func TestCompileRefusesInconsistent(t *testing.T) {
	weighted := func(weights ...uint32) *routev3.Route {
		wc := &routev3.WeightedCluster{}
		for i, w := range weights {
			wc.Clusters = append(wc.Clusters, &routev3.WeightedCluster_ClusterWeight{Name: string(rune('a' + i)), Weight: u32(w)})
		}
		return &routev3.Route{Name: "split", Match: prefixMatch("/"), Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: wc}}}}
	}
	withAction := func(edit func(a *routev3.RouteAction)) *routev3.RouteConfiguration {
		r := routeTo("r1", prefixMatch("/"))
		edit(r.GetRoute())
		return routeConfig(anyHost(r))
	}
	bigBody := &routev3.Route{Name: "big", Match: prefixMatch("/"), Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{
		Status: 200, Body: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: strings.Repeat("x", 4097)}}}}}

	for _, tc := range []struct {
		name string
		rc   *routev3.RouteConfiguration
		want []string
	}{
		{"duplicate domain", routeConfig(
			vhost("a", []string{"svc", "*"}, routeTo("r", prefixMatch("/"))),
			vhost("b", []string{"SVC"}, routeTo("r", prefixMatch("/")))),
			[]string{`virtual host "b"`, `domain "svc" is also in virtual host "a"`}},
		{"two catch-all hosts", routeConfig(
			vhost("a", []string{"*"}, routeTo("r", prefixMatch("/"))),
			vhost("b", []string{"*"}, routeTo("r", prefixMatch("/")))),
			[]string{`domain "*"`}},
		{"bad path regex", routeConfig(anyHost(routeTo("r1", regexMatch("a)|(b")))), []string{`route "r1"`, "match.safe_regex"}},
		{"bad header regex", func() *routev3.RouteConfiguration {
			m := prefixMatch("/")
			m.Headers = []*routev3.HeaderMatcher{{Name: "x", HeaderMatchSpecifier: &routev3.HeaderMatcher_SafeRegexMatch{SafeRegexMatch: regex("(")}}}
			return routeConfig(anyHost(routeTo("r1", m)))
		}(), []string{"match.headers[0]", `header "x"`}},
		{"zero weights", routeConfig(anyHost(weighted(0, 0))), []string{`route "split"`, "add up to 0"}},
		{"unnamed weighted cluster", func() *routev3.RouteConfiguration {
			r := weighted(1)
			r.GetRoute().GetWeightedClusters().Clusters[0].Name = ""
			return routeConfig(anyHost(r))
		}(), []string{"clusters[0]: name is empty"}},
		{"rewrite group out of range", withAction(func(a *routev3.RouteAction) {
			a.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{Pattern: regex("^/(a)"), Substitution: `/\2`}
		}), []string{"regex_rewrite", "group 2"}},
		{"prefix and regex rewrite", withAction(func(a *routev3.RouteAction) {
			a.PrefixRewrite = "/"
			a.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{Pattern: regex("a"), Substitution: "b"}
		}), []string{"both set"}},
		{"negative timeout", withAction(func(a *routev3.RouteAction) { a.Timeout = durationpb.New(-time.Second) }), []string{"route.timeout", "negative"}},
		{"back-off max below base", withAction(func(a *routev3.RouteAction) {
			a.RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", RetryBackOff: &routev3.RetryPolicy_RetryBackOff{
				BaseInterval: durationpb.New(time.Second), MaxInterval: durationpb.New(time.Millisecond)}}
		}), []string{"max_interval"}},
		{"set a pseudo header", func() *routev3.RouteConfiguration {
			r := routeTo("r1", prefixMatch("/"))
			r.RequestHeadersToAdd = []*corev3.HeaderValueOption{headerValue(":path", "/x", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)}
			return routeConfig(anyHost(r))
		}(), []string{`header ":path" may not be modified`}},
		{"remove host", func() *routev3.RouteConfiguration {
			vh := anyHost(routeTo("r1", prefixMatch("/")))
			vh.RequestHeadersToRemove = []string{"Host"}
			return routeConfig(vh)
		}(), []string{`virtual host "default"`, "request_headers_to_remove"}},
		{"append and append_action", func() *routev3.RouteConfiguration {
			r := routeTo("r1", prefixMatch("/"))
			opt := headerValue("x-a", "1", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS)
			opt.Append = wrapperspb.Bool(true)
			r.ResponseHeadersToAdd = []*corev3.HeaderValueOption{opt}
			return routeConfig(anyHost(r))
		}(), []string{"response_headers_to_add[0]", "both append and append_action"}},
		{"direct response body too big", routeConfig(anyHost(bigBody)), []string{`route "big"`, "4097 bytes"}},
		{"fault of the wrong type", func() *routev3.RouteConfiguration {
			r := routeTo("r1", prefixMatch("/"))
			r.TypedPerFilterConfig = map[string]*anypb.Any{FaultFilterName: mustAny(t, &routev3.RetryPolicy{})}
			return routeConfig(anyHost(r))
		}(), []string{"envoy.config.route.v3.RetryPolicy"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.rc.ValidateAll(); err != nil {
				t.Fatalf("test configuration is invalid: %v", err)
			}
			_, err := Compile(tc.rc)
			if err == nil {
				t.Fatal("Compile succeeded")
			}
			t.Log(err)
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("Compile error %q does not mention %q", err, want)
				}
			}
		})
	}
}

// TestCompileIgnoresDescriptiveFields checks that fields which only describe
// or tune a route do not stop it from compiling.
func TestCompileIgnoresDescriptiveFields(t *testing.T) {
	r := routeTo("r1", prefixMatch("/"))
	r.Metadata = &corev3.Metadata{}
	r.Decorator = &routev3.Decorator{Operation: "op"}
	r.StatPrefix = "r1"
	a := r.GetRoute()
	a.UpgradeConfigs = []*routev3.RouteAction_UpgradeConfig{{UpgradeType: "websocket"}}
	a.HashPolicy = []*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{
		Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: "x-user"}}}}
	a.RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", HostSelectionRetryMaxAttempts: 5,
		RetryHostPredicate: []*routev3.RetryPolicy_RetryHostPredicate{{Name: "envoy.retry_host_predicates.previous_hosts"}}}
	rc := routeConfig(anyHost(r))
	rc.ValidateClusters = wrapperspb.Bool(false)
	tbl := mustCompile(t, rc)
	if tbl.Name() != "test" {
		t.Errorf("Name() = %q, want %q", tbl.Name(), "test")
	}
	if tbl.Match(request("GET", "/")) == nil {
		t.Error("no route matched")
	}
}

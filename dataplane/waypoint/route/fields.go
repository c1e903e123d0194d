package route

import (
	"fmt"
	"slices"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// fieldSet names the fields of one message type that Compile understands:
// those it implements and those it deliberately ignores. Any other populated
// field makes Compile fail, so nothing is silently dropped.
type fieldSet map[protoreflect.Name]bool

// fields builds a fieldSet; a name the message does not have is a bug in
// this package, caught when it is initialised.
func fields(m proto.Message, names ...protoreflect.Name) fieldSet {
	desc := m.ProtoReflect().Descriptor()
	set := make(fieldSet, len(names))
	for _, n := range names {
		if desc.Fields().ByName(n) == nil {
			panic(fmt.Sprintf("route: %s has no field %q", desc.FullName(), n))
		}
		set[n] = true
	}
	return set
}

var (
	routeConfigurationFields = fields(&routev3.RouteConfiguration{},
		"name", "virtual_hosts", "request_headers_to_add", "request_headers_to_remove",
		"response_headers_to_add", "response_headers_to_remove", "most_specific_header_mutations_wins",
		"max_direct_response_body_size_bytes", "request_mirror_policies", "ignore_port_in_host_matching",
		"typed_per_filter_config",
		// Ignored: clusters are checked by CDS, metadata only describes.
		"validate_clusters", "metadata")

	virtualHostFields = fields(&routev3.VirtualHost{},
		"name", "domains", "routes", "request_headers_to_add", "request_headers_to_remove",
		"response_headers_to_add", "response_headers_to_remove", "typed_per_filter_config",
		"retry_policy", "request_mirror_policies",
		// Ignored: statistics, description and buffer tuning.
		"virtual_clusters", "metadata", "per_request_buffer_limit_bytes", "request_body_buffer_limit")

	routeFields = fields(&routev3.Route{},
		"name", "match", "route", "redirect", "direct_response", "typed_per_filter_config",
		"request_headers_to_add", "request_headers_to_remove",
		"response_headers_to_add", "response_headers_to_remove",
		// Ignored: description, tracing, statistics and buffer tuning.
		"metadata", "decorator", "tracing", "stat_prefix",
		"per_request_buffer_limit_bytes", "request_body_buffer_limit")

	routeMatchFields = fields(&routev3.RouteMatch{},
		"prefix", "path", "safe_regex", "path_separated_prefix", "case_sensitive",
		"headers", "query_parameters", "grpc")

	routeActionFields = fields(&routev3.RouteAction{},
		"cluster", "weighted_clusters", "timeout", "retry_policy", "request_mirror_policies",
		"prefix_rewrite", "regex_rewrite", "host_rewrite_literal", "cluster_not_found_response_code",
		// Ignored: the load balancer's and the upgrade handler's business.
		"priority", "hash_policy", "upgrade_configs")

	weightedClusterFields = fields(&routev3.WeightedCluster{},
		"clusters",
		// Ignored: the sum of the weights is used; there is no runtime.
		"total_weight", "runtime_key_prefix")

	clusterWeightFields = fields(&routev3.WeightedCluster_ClusterWeight{},
		"name", "weight", "request_headers_to_add", "request_headers_to_remove",
		"response_headers_to_add", "response_headers_to_remove", "host_rewrite_literal")

	retryPolicyFields = fields(&routev3.RetryPolicy{},
		"retry_on", "num_retries", "per_try_timeout", "retriable_status_codes", "retry_back_off",
		// Ignored: host selection on retries is the load balancer's business.
		"retry_priority", "retry_host_predicate", "host_selection_retry_max_attempts")

	mirrorPolicyFields = fields(&routev3.RouteAction_RequestMirrorPolicy{},
		"cluster", "runtime_fraction", "disable_shadow_host_suffix_append", "host_rewrite_literal",
		// Ignored: tracing.
		"trace_sampled")

	redirectFields = fields(&routev3.RedirectAction{},
		"https_redirect", "scheme_redirect", "host_redirect", "port_redirect", "path_redirect",
		"prefix_rewrite", "regex_rewrite", "response_code", "strip_query")

	directResponseFields = fields(&routev3.DirectResponseAction{}, "status", "body")

	filterConfigFields = fields(&routev3.FilterConfig{}, "config", "is_optional", "disabled")

	httpFaultFields = fields(&faultv3.HTTPFault{},
		"delay", "abort",
		// Ignored: limits, runtime keys, statistics and metadata.
		"max_active_faults", "delay_percent_runtime", "abort_percent_runtime",
		"delay_duration_runtime", "abort_http_status_runtime", "max_active_faults_runtime",
		"response_rate_limit_percent_runtime", "abort_grpc_status_runtime",
		"disable_downstream_cluster_stats", "filter_metadata")

	faultAbortFields = fields(&faultv3.FaultAbort{}, "http_status", "percentage", "response_body")

	faultDelayFields = fields(&faultcommonv3.FaultDelay{}, "fixed_delay", "percentage")
)

// checkFields fails on the populated fields of m that set does not know,
// naming them under the path where (for example "route.hash_policy").
func checkFields(m proto.Message, where string, set fieldSet) error {
	msg := m.ProtoReflect()
	if !msg.IsValid() {
		return nil
	}
	var unknown []string
	msg.Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		if !set[fd.Name()] {
			name := string(fd.Name())
			if where != "" {
				name = where + "." + name
			}
			unknown = append(unknown, name)
		}
		return true
	})
	if len(unknown) == 0 {
		return nil
	}
	slices.Sort(unknown)
	return fmt.Errorf("%s not supported", strings.Join(unknown, ", ")+isOrAre(len(unknown)))
}

func isOrAre(n int) string {
	if n == 1 {
		return " is"
	}
	return " are"
}

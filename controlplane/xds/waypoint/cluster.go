package waypoint

import (
	"math"
	"net"
	"sort"
	"strconv"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	corev1 "k8s.io/api/core/v1"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controlplane/xds/translate"
)

// EndpointMetadataKey is the filter_metadata key of what the waypoint needs to dial an
// endpoint, {tunnel: "hbone"|"none", identity: "spiffe://..."}, and of how its telemetry
// names the endpoint's workload (see the Metadata* keys).
const EndpointMetadataKey = "ambientmesh.dev/endpoint"

// Telemetry keys of the endpoint metadata, from translate.PodTelemetry and the mesh's
// cluster id: the destination_* labels of the waypoint's metrics. App and version are
// left out when the pod has no such label; the cluster id when none is configured.
const (
	MetadataWorkload          = "workload"
	MetadataCanonicalService  = "canonical_service"
	MetadataCanonicalRevision = "canonical_revision"
	MetadataApp               = "app"
	MetadataVersion           = "version"
	MetadataCluster           = "cluster"
)

// Tunnel values in the endpoint metadata.
const (
	// TunnelHBONE: the endpoint is in the mesh; dial HBONE to <pod IP>:15008 and expect
	// the identity as the peer's SAN.
	TunnelHBONE = "hbone"
	// TunnelNone: the endpoint is outside the mesh; dial it in plaintext.
	TunnelNone = "none"
)

// Cluster defaults. There is no per-Service traffic policy API yet, so every cluster gets
// the same settings: Istio's load balancing, and limits high enough that only overload
// protection, not a default, ever trips them.
const (
	connectTimeout = 10 * time.Second
	// unlimited is the largest circuit-breaker threshold (Envoy's own defaults, 1024,
	// would cap a busy Service's concurrency at the waypoint).
	unlimited = math.MaxUint32
)

// outlierDetection ejects an endpoint after consecutive 5xx or connect failures, for a
// time that grows with each ejection, and never more than half of the endpoints.
func outlierDetection() *clusterv3.OutlierDetection {
	return &clusterv3.OutlierDetection{
		Consecutive_5Xx:    wrapperspb.UInt32(5),
		Interval:           durationpb.New(10 * time.Second),
		BaseEjectionTime:   durationpb.New(30 * time.Second),
		MaxEjectionPercent: wrapperspb.UInt32(50),
	}
}

// backend is one cluster to build: a Service port, or a served pod's port.
type backend struct {
	name     string
	protocol Protocol
	// service and port, for a Service backend.
	service *corev1.Service
	port    corev1.ServicePort
	// pod and podPort, for a workload backend.
	pod     *corev1.Pod
	podPort int32
}

func serviceBackend(mesh Mesh, svc *corev1.Service, sp corev1.ServicePort) backend {
	return backend{
		name:     ClusterName(translate.Hostname(mesh, svc), sp.Port),
		protocol: PortProtocol(sp),
		service:  svc,
		port:     sp,
	}
}

func workloadBackend(pod *corev1.Pod, port int32, protocol Protocol) backend {
	return backend{name: ClusterName(pod.Status.PodIP, port), protocol: protocol, pod: pod, podPort: port}
}

// buildCluster is the EDS cluster of a backend; its endpoints come in the
// ClusterLoadAssignment of the same name.
func buildCluster(b backend) *clusterv3.Cluster {
	c := &clusterv3.Cluster{
		Name:                 b.name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource()},
		ConnectTimeout:       durationpb.New(connectTimeout),
		LbPolicy:             clusterv3.Cluster_LEAST_REQUEST,
		CircuitBreakers: &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
			MaxConnections:     wrapperspb.UInt32(unlimited),
			MaxPendingRequests: wrapperspb.UInt32(unlimited),
			MaxRequests:        wrapperspb.UInt32(unlimited),
			MaxRetries:         wrapperspb.UInt32(unlimited),
		}}},
		OutlierDetection: outlierDetection(),
	}
	if b.protocol == ProtocolHTTP2 {
		// gRPC and h2c backends need HTTP/2 upstream, whatever the client spoke.
		opts := mustAny(&httpv3.HttpProtocolOptions{
			UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
			}},
		})
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": opts}
	}
	return c
}

// adsSource is "the same ADS stream", how every resource here refers to another.
func adsSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		ResourceApiVersion:    corev3.ApiVersion_V3,
	}
}

// buildLoadAssignment lists a backend's endpoints, sorted by address.
func buildLoadAssignment(mesh Mesh, b backend, st *State) *endpointv3.ClusterLoadAssignment {
	var eps []*endpointv3.LbEndpoint
	if b.pod != nil {
		eps = append(eps, lbEndpoint(mesh, b.pod, st.namespace(b.pod.Namespace), uint32(b.podPort)))
	} else {
		for _, pod := range selectedPods(b.service, st.Pods) {
			if pod.Status.PodIP == "" || isFinished(pod) {
				continue
			}
			if port := translate.TargetPort(pod, b.port); port != 0 {
				eps = append(eps, lbEndpoint(mesh, pod, st.namespace(pod.Namespace), port))
			}
		}
	}
	sort.Slice(eps, func(i, j int) bool { return endpointKey(eps[i]) < endpointKey(eps[j]) })
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: b.name}
	if len(eps) > 0 {
		cla.Endpoints = []*endpointv3.LocalityLbEndpoints{{LbEndpoints: eps}}
	}
	return cla
}

func endpointKey(e *endpointv3.LbEndpoint) string {
	a := e.GetEndpoint().GetAddress().GetSocketAddress()
	return net.JoinHostPort(a.GetAddress(), strconv.Itoa(int(a.GetPortValue())))
}

func lbEndpoint(mesh Mesh, pod *corev1.Pod, ns *corev1.Namespace, port uint32) *endpointv3.LbEndpoint {
	tunnel := TunnelNone
	if translate.IsEnrolled(pod, ns) {
		tunnel = TunnelHBONE
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	tel := translate.PodTelemetry(pod)
	md := &structpb.Struct{Fields: map[string]*structpb.Value{
		"tunnel":                  structpb.NewStringValue(tunnel),
		"identity":                structpb.NewStringValue(meshv1.SPIFFEIdentity(mesh.TrustDomain, pod.Namespace, sa)),
		MetadataWorkload:          structpb.NewStringValue(tel.Workload),
		MetadataCanonicalService:  structpb.NewStringValue(tel.CanonicalName),
		MetadataCanonicalRevision: structpb.NewStringValue(tel.CanonicalRevision),
	}}
	for key, value := range map[string]string{MetadataApp: tel.App, MetadataVersion: tel.Version, MetadataCluster: mesh.ClusterID} {
		if value != "" {
			md.Fields[key] = structpb.NewStringValue(value)
		}
	}
	return &endpointv3.LbEndpoint{
		HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: socketAddress(pod.Status.PodIP, port),
		}},
		HealthStatus: healthOf(pod),
		Metadata:     &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{EndpointMetadataKey: md}},
	}
}

// healthOf: a terminating pod drains, a ready one is healthy, any other is not.
func healthOf(pod *corev1.Pod) corev3.HealthStatus {
	if pod.DeletionTimestamp != nil {
		return corev3.HealthStatus_DRAINING
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return corev3.HealthStatus_HEALTHY
		}
	}
	return corev3.HealthStatus_UNHEALTHY
}

func socketAddress(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       ip,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

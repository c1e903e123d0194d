package waypoint

import (
	"strings"

	"github.com/ambientmesh/ambient-operator/dataplane/waypoint/telemetry"
	"github.com/ambientmesh/ambient-operator/dataplane/waypoint/upstream"
)

// labels names both ends of a request for telemetry. The client is known by its verified
// identity (its namespace is in the SPIFFE ID) and nothing more: the waypoint has no
// workload API, so the source's workload, canonical names, app, version and cluster
// stay "unknown". The destination is known by the listener's service hostname, the
// endpoint's expected identity and the telemetry names of its endpoint metadata.
func (w *Waypoint) labels(d *downstream, host *upstream.Host, protocol string) telemetry.Labels {
	l := telemetry.Labels{
		SourcePrincipal:          d.principal,
		SourceWorkloadNamespace:  d.peer.Namespace,
		DestinationService:       serviceHost(d.listener.name),
		RequestProtocol:          protocol,
		ConnectionSecurityPolicy: "mutual_tls",
	}
	if name, ns, ok := strings.Cut(l.DestinationService, "."); ok {
		l.DestinationServiceName = name
		l.DestinationServiceNamespace, _, _ = strings.Cut(ns, ".")
	}
	if host != nil {
		l.DestinationPrincipal = host.Identity
		l.DestinationWorkloadNamespace = host.PeerID.Namespace
		l.DestinationWorkload = host.Workload.Name
		l.DestinationCanonicalService = host.Workload.CanonicalService
		l.DestinationCanonicalRevision = host.Workload.CanonicalRevision
		l.DestinationApp = host.Workload.App
		l.DestinationVersion = host.Workload.Version
		l.DestinationCluster = host.Workload.Cluster
		if host.Tunnel != upstream.TunnelHBONE {
			l.ConnectionSecurityPolicy = "none"
		}
	}
	return l
}

// serviceHost is the hostname of a listener named "<hostname>:<port>" (a workload
// listener, "<ip>:<port>", has no service: "").
func serviceHost(listener string) string {
	i := strings.LastIndexByte(listener, ':')
	if i < 0 {
		return ""
	}
	host := listener[:i]
	if strings.ContainsAny(host, ":") || !strings.ContainsAny(host, "abcdefghijklmnopqrstuvwxyz") {
		return ""
	}
	return host
}

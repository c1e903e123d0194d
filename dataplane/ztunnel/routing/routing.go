// Package routing decides where a captured connection goes. It is pure: lookups come from
// an interface (the state store in ztunnel, maps in tests) and load balancing from an
// injected chooser.
//
// Outbound, for an original destination IP:port:
//   - a Service VIP: to the service's waypoint if it has one (authority = VIP:port), else to a
//     healthy endpoint chosen by Pick, with the port mapped to the endpoint's target port;
//   - a workload address (or the endpoint chosen above): to the workload's waypoint if it
//     has one, else over HBONE to <workload IP>:15008 when it is in the mesh, else plain TCP;
//   - anything else: passthrough as plain TCP to the original destination.
package routing

import (
	"errors"
	"fmt"
	"net/netip"

	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/internal/spiffe"
)

// Lookup is the configuration routing reads.
type Lookup interface {
	WorkloadByAddr(netip.Addr) *pb.Workload
	ServiceByVIP(netip.Addr) *pb.Service
	// Endpoints returns the healthy workloads of a service (by resource name).
	Endpoints(service string) []*pb.Workload
}

// Kind is how the connection is carried.
type Kind int

const (
	// Passthrough: plain TCP to Dial (a destination outside the mesh).
	Passthrough Kind = iota
	// HBONE: a CONNECT stream for Target over mTLS to Dial, whose certificate must carry Peer.
	HBONE
)

func (k Kind) String() string {
	if k == HBONE {
		return "hbone"
	}
	return "passthrough"
}

// Decision is where one outbound connection goes.
type Decision struct {
	Kind Kind
	// Dial is the address to connect to: the HBONE endpoint, or the plain TCP target.
	Dial netip.AddrPort
	// Target is the HBONE :authority (the original or resolved destination).
	Target netip.AddrPort
	// Peer is the identity the HBONE endpoint must prove.
	Peer spiffe.ID
	// Workload is the destination workload when known (nil for a waypoint hop to a VIP or
	// passthrough); Service the destination service when the VIP was dialed.
	Workload *pb.Workload
	Service  *pb.Service
	// ViaWaypoint is true when Dial is a waypoint.
	ViaWaypoint bool
}

// ErrNoEndpoints is returned for a service with no healthy endpoint.
var ErrNoEndpoints = errors.New("no healthy endpoints")

// Router resolves outbound destinations.
type Router struct {
	Lookup Lookup
	// TrustDomain is used for workloads that name none.
	TrustDomain string
	// Pick returns an index in [0, n) to choose among n endpoints (load balancing).
	Pick func(n int) int
}

// Outbound routes a connection from src (the local workload; may be nil) to dst.
func (r *Router) Outbound(src *pb.Workload, dst netip.AddrPort) (Decision, error) {
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	if svc := r.Lookup.ServiceByVIP(dst.Addr()); svc != nil {
		return r.toService(src, svc, dst)
	}
	if w := r.Lookup.WorkloadByAddr(dst.Addr()); w != nil {
		return r.toWorkload(src, w, dst)
	}
	return Decision{Kind: Passthrough, Dial: dst, Target: dst}, nil
}

func (r *Router) toService(src *pb.Workload, svc *pb.Service, dst netip.AddrPort) (Decision, error) {
	name := pb.ServiceResourceName(svc.GetNamespace(), svc.GetHostname())
	if wp := svc.GetWaypoint(); wp != nil && !r.isWaypoint(src, wp) {
		d, err := r.viaWaypoint(wp, dst)
		d.Service = svc
		return d, err
	}
	svcPort := findPort(svc.GetPorts(), uint32(dst.Port()))
	if svcPort == nil {
		return Decision{}, fmt.Errorf("service %s has no port %d", name, dst.Port())
	}
	eps := r.Lookup.Endpoints(name)
	if len(eps) == 0 {
		return Decision{}, fmt.Errorf("service %s: %w", name, ErrNoEndpoints)
	}
	ep := eps[r.Pick(len(eps))]
	port := targetPort(ep, name, svcPort)
	if port == 0 {
		return Decision{}, fmt.Errorf("service %s port %d: endpoint %s/%s has no target port", name, dst.Port(), ep.GetNamespace(), ep.GetName())
	}
	addr, err := firstAddr(ep)
	if err != nil {
		return Decision{}, err
	}
	d, err := r.toWorkload(src, ep, netip.AddrPortFrom(addr, port))
	d.Service = svc
	return d, err
}

// targetPort maps a service port to the endpoint's port: the workload's own mapping
// (named ports) first, then the service's.
func targetPort(ep *pb.Workload, service string, svcPort *pb.Port) uint16 {
	if p := findPort(ep.GetServices()[service].GetPorts(), svcPort.GetServicePort()); p != nil && p.GetTargetPort() != 0 {
		return uint16(p.GetTargetPort())
	}
	return uint16(svcPort.GetTargetPort())
}

func findPort(ports []*pb.Port, servicePort uint32) *pb.Port {
	for _, p := range ports {
		if p.GetServicePort() == servicePort {
			return p
		}
	}
	return nil
}

func firstAddr(w *pb.Workload) (netip.Addr, error) {
	for _, a := range w.GetAddresses() {
		if addr, err := netip.ParseAddr(a); err == nil {
			return addr, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("workload %s/%s has no address", w.GetNamespace(), w.GetName())
}

func (r *Router) toWorkload(src, w *pb.Workload, dst netip.AddrPort) (Decision, error) {
	if wp := w.GetWaypoint(); wp != nil && !r.isWaypoint(src, wp) {
		d, err := r.viaWaypoint(wp, dst)
		d.Workload = w
		return d, err
	}
	if w.GetTunnelProtocol() != pb.TunnelProtocol_TUNNEL_PROTOCOL_HBONE {
		return Decision{Kind: Passthrough, Dial: dst, Target: dst, Workload: w}, nil
	}
	peer, err := w.IdentityID(r.TrustDomain)
	if err != nil {
		return Decision{}, fmt.Errorf("workload %s/%s identity: %w", w.GetNamespace(), w.GetName(), err)
	}
	return Decision{
		Kind:     HBONE,
		Dial:     netip.AddrPortFrom(dst.Addr(), pb.DefaultHBONEPort),
		Target:   dst,
		Peer:     peer,
		Workload: w,
	}, nil
}

// viaWaypoint sends target to a waypoint; a waypoint address that is a service VIP is
// resolved to one of the waypoint service's endpoints.
func (r *Router) viaWaypoint(wp *pb.GatewayAddress, target netip.AddrPort) (Decision, error) {
	peer, err := spiffe.Parse(wp.GetIdentity())
	if err != nil {
		return Decision{}, fmt.Errorf("waypoint identity: %w", err)
	}
	addr, err := netip.ParseAddr(wp.GetAddress())
	if err != nil {
		return Decision{}, fmt.Errorf("waypoint address %q: %w", wp.GetAddress(), err)
	}
	if svc := r.Lookup.ServiceByVIP(addr); svc != nil {
		name := pb.ServiceResourceName(svc.GetNamespace(), svc.GetHostname())
		eps := r.Lookup.Endpoints(name)
		if len(eps) == 0 {
			return Decision{}, fmt.Errorf("waypoint service %s: %w", name, ErrNoEndpoints)
		}
		if addr, err = firstAddr(eps[r.Pick(len(eps))]); err != nil {
			return Decision{}, err
		}
	}
	port := uint16(wp.GetHbonePort())
	if port == 0 {
		port = pb.DefaultHBONEPort
	}
	return Decision{Kind: HBONE, Dial: netip.AddrPortFrom(addr, port), Target: target, Peer: peer, ViaWaypoint: true}, nil
}

// isWaypoint is true when the source is the waypoint itself, so that a waypoint's own
// traffic to the destination does not loop back to it.
func (r *Router) isWaypoint(src *pb.Workload, wp *pb.GatewayAddress) bool {
	return src != nil && src.Identity(r.TrustDomain) == wp.GetIdentity()
}

// CheckInboundTarget verifies that an inbound HBONE authority is an address of the local
// workload (a ztunnel only delivers to the pod whose netns the stream arrived in).
func CheckInboundTarget(local *pb.Workload, target netip.AddrPort) error {
	if target.Port() == 0 {
		return fmt.Errorf("target %s: port 0", target)
	}
	want := target.Addr().Unmap()
	for _, a := range local.GetAddresses() {
		if addr, err := netip.ParseAddr(a); err == nil && addr.Unmap() == want {
			return nil
		}
	}
	return fmt.Errorf("target %s is not an address of workload %s/%s", target, local.GetNamespace(), local.GetName())
}

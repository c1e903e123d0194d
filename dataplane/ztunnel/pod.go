package ztunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/dataplane/hbone"
	"github.com/ambientmesh/ambient-operator/dataplane/ztunnel/authz"
	"github.com/ambientmesh/ambient-operator/dataplane/ztunnel/inpod"
	"github.com/ambientmesh/ambient-operator/dataplane/ztunnel/metrics"
	"github.com/ambientmesh/ambient-operator/dataplane/ztunnel/routing"
	"github.com/ambientmesh/ambient-operator/internal/spiffe"
	"github.com/ambientmesh/ambient-operator/internal/workers"
)

// ServePod starts serving one pod's listeners (inpod.PodHandler). The returned stop, called
// once the listeners are closed, ends every connection of the pod.
func (z *Ztunnel) ServePod(pod *inpod.Pod) (stop func()) {
	log := z.log.WithValues("pod", pod.Namespace+"/"+pod.Name)
	id, err := spiffe.New(z.cfg.TrustDomain, pod.Namespace, pod.ServiceAccount)
	if err != nil {
		log.Error(err, "pod has no valid identity; not serving it")
		return func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &podServer{z: z, pod: pod, id: id, ctx: ctx}
	srv, err := hbone.NewServer(hbone.ServerConfig{Identity: id, Certs: z.Identity, Roots: z.roots, Handler: p, Logger: log.WithName("hbone")})
	if err == nil {
		// One client pool per pod: its connections are dialed from the pod's network
		// namespace, and closing the pool when the pod goes releases the namespace.
		p.pool, err = hbone.NewPool(hbone.PoolConfig{Certs: z.Identity, Roots: z.roots, Dial: pod.Net.Dial})
	}
	if err != nil {
		cancel()
		log.Error(err, "cannot serve HBONE")
		return func() {}
	}
	p.hbone = srv
	z.Identity.Acquire(id)
	z.trackServer(pod.UID, p)
	var wg sync.WaitGroup
	run := func(fn func()) { wg.Add(1); go func() { defer wg.Done(); fn() }() }
	run(func() { _ = srv.Serve(pod.HBONE) })
	run(func() { p.acceptLoop(pod.Outbound, &wg, p.serveOutbound) })
	run(func() { p.acceptLoop(pod.Inbound, &wg, p.serveInboundPlaintext) })
	return func() {
		z.untrackServer(pod.UID)
		cancel() // connections still waiting for configuration give up
		_ = srv.Close()
		z.conns.closePod(pod.UID)
		wg.Wait()
		_ = p.pool.Close()
		z.Identity.Release(id)
	}
}

// podServer handles one pod's connections.
type podServer struct {
	z     *Ztunnel
	pod   *inpod.Pod
	id    spiffe.ID
	ctx   context.Context // ends when the pod is no longer served
	hbone *hbone.Server   // inbound, on the pod's 15008
	pool  *hbone.Pool     // outbound HBONE connections from the pod's namespace
}

func (p *podServer) acceptLoop(l net.Listener, wg *sync.WaitGroup, serve func(net.Conn)) {
	for {
		c, err := l.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				p.z.log.Error(err, "accept failed", "pod", p.pod.Namespace+"/"+p.pod.Name, "listener", l.Addr().String())
			}
			return
		}
		wg.Add(1)
		p.z.conns.handlerStarted()
		workers.Go(func() {
			defer wg.Done()
			defer p.z.conns.handlerDone()
			serve(c)
		})
	}
}

// localWorkload waits (bounded) for the pod's workload configuration: lazy start.
func (p *podServer) localWorkload(ctx context.Context) (*pb.Workload, error) {
	for {
		changed := p.z.Store.Changed()
		if w := p.z.Store.Workload(p.pod.UID); w != nil {
			return w, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, fmt.Errorf("no configuration for workload %s/%s (uid %s) from the control plane after %v",
				p.pod.Namespace, p.pod.Name, p.pod.UID, p.z.cfg.LazyStartTimeout)
		}
	}
}

// reset closes a client connection with RST, so the app sees a refusal rather than an
// orderly close.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

func remoteAddrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// serveOutbound proxies a connection the pod's app opened (captured on 15001).
func (p *podServer) serveOutbound(c net.Conn) {
	z := p.z
	src := remoteAddrPort(c.RemoteAddr())
	dst, ok, err := p.pod.Net.OriginalDst(c)
	if err != nil || !ok {
		z.accessLog(DirOutbound, p.pod, src, dst, "", "", 0, 0, 0, fmt.Errorf("no original destination (not a captured connection): %v", err))
		reset(c)
		return
	}
	ctx, cancel := context.WithTimeout(p.ctx, z.cfg.LazyStartTimeout)
	up, d, local, early, err := p.dialOutbound(ctx, c, dst)
	cancel()
	if err != nil {
		z.accessLog(DirOutbound, p.pod, src, dst, p.id.String(), d.Peer.String(), 0, 0, 0, err)
		reset(c)
		return
	}
	t := &conn{
		direction: DirOutbound, podUID: p.pod.UID, pod: p.pod.Namespace + "/" + p.pod.Name,
		src: src, dst: d.Target, srcID: p.id.String(), dstID: d.Peer.String(),
		labels: outboundLabels(local, p.id, d), sides: []net.Conn{c, up},
	}
	t.stats.AToB.Add(int64(early)) // sent with the CONNECT, before Join
	z.conns.add(t)
	err = hbone.Join(c, up, &t.stats)
	reason := z.conns.remove(t)
	z.accessLog(DirOutbound, p.pod, src, d.Target, t.srcID, t.dstID, t.stats.AToB.Load(), t.stats.BToA.Load(), time.Since(t.started), joinErr(err, reason))
}

// dialOutbound routes dst and connects: over HBONE or plain TCP. What the app sends before
// the server answers travels with the CONNECT and right behind it (early is its length),
// so the first bytes reach the destination without waiting a round trip for the 200. The
// pool sends a stream once more if the server did not process it (GOAWAY, REFUSED_STREAM,
// e.g. while the destination's ztunnel restarts).
func (p *podServer) dialOutbound(ctx context.Context, c net.Conn, dst netip.AddrPort) (up net.Conn, d routing.Decision, local *pb.Workload, early int, err error) {
	local, err = p.localWorkload(ctx)
	if err != nil {
		return nil, routing.Decision{}, nil, 0, err
	}
	d, err = p.z.router.Outbound(local, dst)
	if err != nil {
		return nil, d, local, 0, err
	}
	if d.Kind == routing.Passthrough {
		up, err := p.pod.Net.Dial(ctx, "tcp", d.Dial.String())
		return up, d, local, 0, err
	}
	req := hbone.DialRequest{Source: p.id, Peer: d.Peer, Target: d.Target, Via: d.Dial, EarlyFrom: c}
	if req.EarlyData, err = readReady(c); err != nil {
		return nil, d, local, 0, fmt.Errorf("reading from the app: %w", err)
	}
	hc, err := p.pool.Dial(ctx, req)
	if err != nil {
		return nil, d, local, 0, err
	}
	return hc, d, local, hc.EarlyBytes(), nil
}

func outboundLabels(local *pb.Workload, id spiffe.ID, d routing.Decision) metrics.Labels {
	l := metrics.Labels{
		Reporter:                 metrics.ReporterSource,
		SourcePrincipal:          id.String(),
		ConnectionSecurityPolicy: metrics.SecurityNone,
	}
	l.SetSource(local)
	if d.Kind == routing.HBONE {
		l.ConnectionSecurityPolicy = metrics.SecurityMutualTLS
		l.DestinationPrincipal = d.Peer.String()
	}
	l.SetDestination(d.Workload)
	l.SetDestinationService(d.Service)
	return l
}

// ServeHBONE handles an inbound CONNECT on the pod's 15008 (hbone.Handler).
func (p *podServer) ServeHBONE(ctx context.Context, req *hbone.Request) error {
	z := p.z
	z.conns.handlerStarted()
	defer z.conns.handlerDone()
	src := remoteAddrPort(req.RemoteAddr)
	lctx, cancel := context.WithTimeout(ctx, z.cfg.LazyStartTimeout)
	defer cancel()
	local, err := p.localWorkload(lctx)
	if err != nil {
		z.accessLog(DirInbound, p.pod, src, req.Target, req.Peer.String(), p.id.String(), 0, 0, 0, err)
		return hbone.Reject(http.StatusServiceUnavailable, "%v", err)
	}
	if err := p.checkInboundTarget(local, req.Target); err != nil {
		z.accessLog(DirInbound, p.pod, src, req.Target, req.Peer.String(), p.id.String(), 0, 0, 0, err)
		return hbone.Reject(http.StatusForbidden, "%v", err)
	}
	srcIP, principal := p.client(local, req, src.Addr())
	check := func() (bool, string) {
		return p.authorize(authz.Conn{SrcIP: srcIP, Principal: principal, DstPort: req.Target.Port()}, false)
	}
	if ok, reason := check(); !ok {
		z.accessLog(DirInbound, p.pod, netip.AddrPortFrom(srcIP, src.Port()), req.Target, principal.String(), p.id.String(), 0, 0, 0, errors.New(reason))
		return hbone.Reject(http.StatusForbidden, "%s", reason)
	}
	up, err := p.pod.Net.Dial(lctx, "tcp", req.Target.String())
	if err != nil {
		z.accessLog(DirInbound, p.pod, src, req.Target, req.Peer.String(), p.id.String(), 0, 0, 0, err)
		return hbone.Reject(http.StatusServiceUnavailable, "connecting to %s: %v", req.Target, err)
	}
	st, err := req.Accept()
	if err != nil {
		up.Close()
		return err
	}
	t := &conn{
		direction: DirInbound, podUID: p.pod.UID, pod: p.pod.Namespace + "/" + p.pod.Name,
		src: netip.AddrPortFrom(srcIP, src.Port()), dst: req.Target, srcID: principal.String(), dstID: p.id.String(),
		labels: p.inboundLabels(local, principal, srcIP, metrics.SecurityMutualTLS), sides: []net.Conn{st, up}, recheck: check,
	}
	z.conns.add(t)
	err = hbone.Join(st, up, &t.stats)
	reason := z.conns.remove(t)
	z.accessLog(DirInbound, p.pod, t.src, req.Target, t.srcID, t.dstID, t.stats.AToB.Load(), t.stats.BToA.Load(), time.Since(t.started), joinErr(err, reason))
	return nil
}

// checkInboundTarget refuses what an inbound connection must not reach: an address that is
// not the pod's own, and ztunnel's own ports in the pod. ztunnel connects to the target
// from inside the pod, so relaying to its own listeners would hand the sender the pod's
// address, and on 15001 its identity, for the next hop, and could loop.
func (p *podServer) checkInboundTarget(local *pb.Workload, target netip.AddrPort) error {
	if err := routing.CheckInboundTarget(local, target); err != nil {
		return err
	}
	switch ports := p.z.cfg.Ports; target.Port() {
	case ports.Outbound, ports.Inbound, ports.HBONE:
		return fmt.Errorf("target %s is ztunnel's own port in pod %s/%s: connections to the mesh's ports %d, %d and %d are not relayed",
			target, p.pod.Namespace, p.pod.Name, ports.Outbound, ports.Inbound, ports.HBONE)
	}
	return nil
}

// client is who the connection is from, as policies and telemetry see it: the HBONE
// peer and the connection's source (ztunnels dial from the client pod's own network), or,
// when the peer is a waypoint of this workload (its own, or that of a Service it backs),
// the original client the waypoint relays — the address it reports in Forwarded: for=,
// and the identity of the mesh workload at that address (none for a client outside the
// mesh). So a destination policy on the client's identity or IP applies whether or not a
// waypoint is in the path, and one naming the waypoint does not catch its clients.
func (p *podServer) client(local *pb.Workload, req *hbone.Request, connIP netip.Addr) (netip.Addr, spiffe.ID) {
	if !p.z.Store.IsWaypointOf(local, req.Peer.String()) {
		return connIP, req.Peer
	}
	forwarded, ok := forwardedFor(req.Header.Get("Forwarded"))
	if !ok {
		return connIP, req.Peer
	}
	id, err := p.z.Store.WorkloadByAddr(forwarded).IdentityID(p.z.cfg.TrustDomain)
	if err != nil {
		return forwarded, spiffe.ID{}
	}
	return forwarded, id
}

// forwardedFor reads the address of the first for= in a Forwarded header (RFC 7239).
func forwardedFor(header string) (netip.Addr, bool) {
	for _, part := range strings.Split(header, ";") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(part), "for="); ok {
			v = strings.Trim(v, `"[]`)
			if ap, err := netip.ParseAddrPort(v); err == nil {
				return ap.Addr().Unmap(), true
			}
			if a, err := netip.ParseAddr(v); err == nil {
				return a.Unmap(), true
			}
		}
	}
	return netip.Addr{}, false
}

// authorize decides a connection to this pod under the current configuration.
func (p *podServer) authorize(c authz.Conn, plaintext bool) (bool, string) {
	local := p.z.Store.Workload(p.pod.UID)
	if local == nil {
		return false, "workload " + p.pod.Namespace + "/" + p.pod.Name + " is no longer in the configuration"
	}
	d := p.z.Store.Authorize(local, c, plaintext)
	if len(d.Audited) > 0 {
		p.z.log.Info("audit", "policies", d.Audited, "src", c.SrcIP, "principal", c.Principal.String(), "dst.workload", p.pod.Namespace+"/"+p.pod.Name, "dst.port", c.DstPort, "allowed", d.Allowed)
	}
	return d.Allowed, d.Reason
}

func (p *podServer) inboundLabels(local *pb.Workload, peer spiffe.ID, srcIP netip.Addr, security string) metrics.Labels {
	l := metrics.Labels{
		Reporter:                 metrics.ReporterDestination,
		DestinationPrincipal:     p.id.String(),
		ConnectionSecurityPolicy: security,
	}
	l.SetDestination(local)
	if !peer.IsZero() {
		l.SourcePrincipal = peer.String()
		l.SourceWorkloadNamespace = peer.Namespace
	}
	l.SetSource(p.z.Store.WorkloadByAddr(srcIP))
	return l
}

// serveInboundPlaintext handles plaintext captured on 15006: allowed only in PERMISSIVE.
func (p *podServer) serveInboundPlaintext(c net.Conn) {
	z := p.z
	src := remoteAddrPort(c.RemoteAddr())
	dst, ok, err := p.pod.Net.OriginalDst(c)
	if err != nil || !ok {
		z.accessLog(DirInboundPlaintext, p.pod, src, dst, "", "", 0, 0, 0, fmt.Errorf("no original destination (not a captured connection): %v", err))
		reset(c)
		return
	}
	ctx, cancel := context.WithTimeout(p.ctx, z.cfg.LazyStartTimeout)
	defer cancel()
	local, err := p.localWorkload(ctx)
	if err == nil {
		err = p.checkInboundTarget(local, dst)
	}
	if err != nil {
		z.accessLog(DirInboundPlaintext, p.pod, src, dst, "", p.id.String(), 0, 0, 0, err)
		reset(c)
		return
	}
	check := func() (bool, string) {
		return p.authorize(authz.Conn{SrcIP: src.Addr(), DstPort: dst.Port()}, true)
	}
	if ok, reason := check(); !ok {
		z.accessLog(DirInboundPlaintext, p.pod, src, dst, "", p.id.String(), 0, 0, 0, errors.New(reason))
		reset(c)
		return
	}
	up, err := p.pod.Net.Dial(ctx, "tcp", dst.String())
	if err != nil {
		z.accessLog(DirInboundPlaintext, p.pod, src, dst, "", p.id.String(), 0, 0, 0, err)
		reset(c)
		return
	}
	t := &conn{
		direction: DirInboundPlaintext, podUID: p.pod.UID, pod: p.pod.Namespace + "/" + p.pod.Name,
		src: src, dst: dst, dstID: p.id.String(),
		labels: p.inboundLabels(local, spiffe.ID{}, src.Addr(), metrics.SecurityNone), sides: []net.Conn{c, up}, recheck: check,
	}
	z.conns.add(t)
	err = hbone.Join(c, up, &t.stats)
	reason := z.conns.remove(t)
	z.accessLog(DirInboundPlaintext, p.pod, src, dst, "", t.dstID, t.stats.AToB.Load(), t.stats.BToA.Load(), time.Since(t.started), joinErr(err, reason))
}

func joinErr(err error, closedReason string) error {
	if closedReason != "" {
		return errors.New("closed: " + closedReason)
	}
	return err
}

// accessLog writes one structured line per connection (or refusal).
func (z *Ztunnel) accessLog(direction string, pod *inpod.Pod, src, dst netip.AddrPort, srcID, dstID string, received, sent int64, dur time.Duration, err error) {
	kv := []any{
		"direction", direction, "pod", pod.Namespace + "/" + pod.Name,
		"src.addr", src.String(), "src.identity", srcID,
		"dst.addr", dst.String(), "dst.identity", dstID,
		"bytes_received", received, "bytes_sent", sent, "duration", dur.Round(time.Microsecond).String(),
	}
	if err != nil {
		kv = append(kv, "error", err.Error())
	}
	z.log.WithName("access").Info("connection complete", kv...)
}

// Package hbone implements HBONE, the mesh's tunnel: HTTP/2 CONNECT over
// mutual TLS 1.3 (ALPN h2) between workloads identified by SPIFFE IDs, built
// on golang.org/x/net/http2.
//
// # Identities and certificates
//
// Certificates come from a CertSource, asked at every handshake, so a renewed
// certificate is used by new connections while open ones carry on; the trust
// bundle comes from a RootsSource (Bundle can be swapped at any time).
// CertStore is a ready CertSource whose Certificate waits until Put (lazy
// start). Peers are verified against the bundle of the moment; the leaf must
// carry exactly one SPIFFE URI SAN. A client additionally requires the SAN to
// equal the identity it expects (IdentityMismatchError otherwise); a server
// accepts any identity of the bundle and hands it to its Handler.
//
//	ServerTLSConfig(local spiffe.ID, certs CertSource, roots RootsSource) *tls.Config
//	ClientTLSConfig(local, peer spiffe.ID, certs CertSource, roots RootsSource) *tls.Config
//	VerifyPeer(chain []*x509.Certificate, roots *x509.CertPool, usage x509.ExtKeyUsage, now time.Time) (spiffe.ID, error)
//
// # Server
//
// One Server per local identity (the ztunnel opens 15008 in each pod's netns
// and runs one Server there):
//
//	srv, _ := hbone.NewServer(hbone.ServerConfig{Identity: podID, Certs: store, Roots: bundle, Handler: h})
//	go srv.Serve(listener)        // or srv.ServeConn(c) per accepted conn
//	srv.Shutdown(ctx)             // GOAWAY, wait for streams; srv.Close() resets everything
//
// Only CONNECT is served (else 405); :authority must be a literal IP:port
// (else 400). The Handler sees the verified peer identity, the target and the
// headers (Forwarded, baggage, traceparent) and decides:
//
//	func (z *ztunnel) ServeHBONE(ctx context.Context, req *hbone.Request) error {
//		if !z.allowed(req.Peer, req.Target) {
//			return hbone.Reject(http.StatusForbidden, "denied by policy %s", name)
//		}
//		up, err := z.dialInPodNetns(ctx, req.Target)
//		if err != nil {
//			return hbone.Reject(http.StatusServiceUnavailable, "connect %s: %v", req.Target, err)
//		}
//		st, err := req.Accept() // 200 only now that the upstream is connected
//		if err != nil {
//			up.Close()
//			return err
//		}
//		z.track(st) // st.Close() resets the stream, e.g. when a policy now denies it
//		var stats hbone.JoinStats
//		err = hbone.Join(st, up, &stats) // returns when both directions are done
//		z.log(req, &stats, err)
//		return nil
//	}
//
// Stream (the server end) is a net.Conn. Its CloseWrite ends the response
// stream at once; x/net/http2 then resets the request side, so upload data
// the client sends after the upstream half-closed is discarded (the client
// still reads everything up to EOF). Client-initiated half-close (the client
// calls CloseWrite: the upstream gets CloseWrite and may keep answering) is
// fully supported.
//
// # Client
//
// A Pool dials tunneled streams over shared HTTP/2 connections keyed by
// (source identity, peer identity, HBONE endpoint, source address):
//
//	pool, _ := hbone.NewPool(hbone.PoolConfig{Certs: store, Roots: bundle, Dial: dialFromNetns})
//	c, err := pool.Dial(ctx, hbone.DialRequest{
//		Source: srcID, Peer: dstID,
//		Target: netip.MustParseAddrPort("10.0.1.5:8080"),
//		Via:    netip.MustParseAddrPort("10.0.1.5:15008"), // default Target.Addr():15008
//		Header: http.Header{"Baggage": {...}},
//		Dial:   perDialDialer, SourceAddr: podIP, // optional: dial from another netns
//	})
//
// DialRequest.EarlyData, when the caller already holds the stream's first
// bytes, sends them right after the CONNECT HEADERS instead of a round trip
// later (the server holds them until it accepted; a refused stream drops
// them, a retried dial sends them again).
//
// Dial returns once the server answered 200; a refusal is a *StatusError with
// the server's code and reason, a wrong peer an *IdentityMismatchError, a
// refused client certificate the server's TLS alert. The returned *Conn is a
// net.Conn with CloseWrite (END_STREAM), Close (RST_STREAM), ReadFrom,
// ConnectionState and PeerIdentity; RemoteAddr is the target, LocalAddr the
// local end of the HBONE TCP connection. A connection is reused while the
// server's MaxConcurrentStreams allows, another one is opened when it is
// full; idle connections close after PoolConfig.IdleTimeout; PINGs detect
// dead ones. The first stream on a new connection waits for the server's
// SETTINGS (one round trip) so that its frames are sized right. Pool.Stats
// lists connections and stream counts.
//
// Deadlines on Conn and Stream: reads become deadline-aware from the first
// SetReadDeadline call (a timed-out Read loses no data); a write deadline that
// passes while a Write is blocked resets the stream, as in crypto/tls.
//
// # Joining two connections
//
// Join(a, b net.Conn, stats *JoinStats) error is the bidirectional copy both
// ends of the ztunnel use: EOF on one side becomes CloseWrite on the other,
// an error resets both, JoinStats counts bytes while it runs. Copy buffers
// are pooled and grow from 16 KiB to 256 KiB only while data streams; into a
// *Conn the HTTP/2 writer reads the source directly (Conn.ReadFrom).
//
// # Performance notes
//
// Per byte, a tunnel costs AES-GCM twice, x/net/http2's internal copies and
// one more TCP hop; the package trims what it controls: TLS records of one
// HTTP/2 write leave in one write(2) and streaming reads take many records
// per read(2) (coalesce.go), frames up to 1 MiB with 4 MiB stream windows,
// full-size TLS records from the start, no deadline machinery unless asked
// for. bench_test.go measures throughput and CPU per byte against direct
// loopback TCP, request/response latency and new-stream latency.
package hbone
